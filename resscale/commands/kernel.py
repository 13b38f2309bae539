"""``resscale kernel FILE``: mean-field kernel for inputs read from a .npy or .csv file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from . import _options as o
from ._files import read_array


def load_array(path: Path) -> np.ndarray:
    """Read a .npy, .csv (comma-separated, no header) or .txt (whitespace or commas) array."""
    try:
        return read_array(path, "input file", (".npy", ".csv", ".txt"))
    except ValueError as exc:
        o.fail(str(exc))


def register(app: typer.Typer) -> None:
    @app.command()
    def kernel(
        input_file: Path = typer.Argument(..., help="Data X (P, d) as .npy/.csv, or K0 (P, P) with --k0."),
        is_k0: bool = typer.Option(False, "--k0", help="The file holds the layer-0 kernel K0, not data X."),
        depth: int = o.Depth, alpha: float = o.Alpha, sigma_w2: float = o.SigmaW2,
        sigma_b2: float = o.SigmaB2, sigma_in2: float = o.SigmaIn2, sigma_bin2: float = o.SigmaBin2,
        activation: str = o.ActivationOpt, block: str = o.Block,
        all_layers: bool = typer.Option(False, "--all-layers", help="Print K^l for every layer."),
        out: Path = typer.Option(None, "--out", help="Also save the kernel(s) to this .npy file."),
        json_out: bool = o.Json,
    ):
        """Print the infinite-width kernel K^L of the inputs."""
        from ..kernel_recursion import mean_field_kernel

        net = o.make_net(depth, alpha, sigma_w2, sigma_b2, sigma_in2, sigma_bin2, activation, block)
        arr = load_array(input_file)
        try:
            K = mean_field_kernel(net, **({"K0": arr} if is_k0 else {"X": arr}), all_layers=all_layers)
        except (ValueError, OverflowError) as exc:
            o.fail(str(exc))
        if out is not None:
            np.save(out, K)
        if json_out:
            o.print_json({"network": net.to_dict(), "kernel": K.tolist()})
            return
        np.set_printoptions(precision=6, suppress=False, linewidth=120)
        if all_layers:
            for layer, Kl in enumerate(K):
                typer.echo(f"K^{layer} =\n{Kl}")
        else:
            typer.echo(f"K^{depth} =\n{K}")
