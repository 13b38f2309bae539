"""``resscale simulate``: Monte-Carlo ensemble of finite-width networks, resumable.

Writes DIR/meta.json (the run's parameters), DIR/chunks/chunk_<start>_<stop>.npz
(one atomically written file per finished chunk) and, at the end,
DIR/result.npz (load with ``resscale.SimulationResult.load``). Re-running the
same command after an interruption (Ctrl-C, kill) reuses every stored chunk and
gives a result identical to an uninterrupted run. See docs/simulation.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._files import read_array

SCHEDULER_TIMEOUT_S = 5.0


def check_scheduler_reachable(address: str, timeout: float = SCHEDULER_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to a Dask scheduler ``[tcp://|tls://]host[:port]``.

    Raises a one-line ``ValueError`` naming ``--scheduler`` when the address is
    malformed or nothing answers within ``timeout`` seconds (instead of Dask's
    traceback after its own 30 s). Other schemes (``inproc://``, ``ws://`` ...) are
    left to Dask.
    """
    import socket
    from urllib.parse import urlsplit

    text = str(address).strip()
    if not text:
        raise ValueError("--scheduler: empty address (expected tcp://host:port)")
    if "://" not in text:
        text = "tcp://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parts.hostname, parts.port or 8786
    except ValueError as exc:  # a port that is not a number or out of range
        raise ValueError(f"--scheduler: malformed address {address!r} ({exc}); expected tcp://host:port") from None
    if not host:
        raise ValueError(f"--scheduler: malformed address {address!r}; expected tcp://host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc) or type(exc).__name__)
        raise ValueError(f"--scheduler: cannot reach the Dask scheduler at {host}:{port} "
                         f"within {timeout:g} s ({reason})") from None


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        out: Path = typer.Option(..., "--out", help="Run directory (meta.json, chunks/, result.npz); reused to resume."),
        width: int = typer.Option(..., "--width", help="Width N."),
        networks: int = typer.Option(..., "--networks", help="Number of independent networks S."),
        depth: int = typer.Option(20, help="Number of residual blocks L."),
        alpha: float = typer.Option(0.5, help="Residual-branch scaling alpha."),
        sigma_w2: float = typer.Option(1.0, "--sigma-w2", help="Block weight variance (W ~ N(0, sigma_w2/N))."),
        sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Block bias variance."),
        sigma_in2: float = typer.Option(1.0, "--sigma-in2", help="Input-layer weight variance (with --x-file)."),
        sigma_bin2: float = typer.Option(0.0, "--sigma-bin2", help="Input-layer bias variance (with --x-file)."),
        activation: str = typer.Option("erf", help="erf, tanh, relu, linear or gelu."),
        block: str = typer.Option("full", help="full, reduced, two_layer or feedforward."),
        c0: Optional[float] = typer.Option(None, "--c0", help="Two inputs with correlation c0 (default 0.5 if no file)."),
        q0: float = typer.Option(1.0, "--q0", help="Norm (K0 diagonal) of the two inputs."),
        k0_file: Optional[Path] = typer.Option(None, "--k0-file", help="Input kernel K0 (P, P): .npy, .csv or text."),
        x_file: Optional[Path] = typer.Option(None, "--x-file", help="Data X (P, d) for the random input layer."),
        seed: int = typer.Option(0, help="Seed (network s uses SeedSequence(seed, spawn_key=(s,)))."),
        backend: str = typer.Option("numpy", help="numpy or torch."),
        device: Optional[str] = typer.Option(None, help="torch device (default: cuda if available)."),
        dtype: str = typer.Option("float64", help="float64 or float32."),
        method: str = typer.Option("auto", help="auto, gram or weights (both exact samplers)."),
        chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="Networks per stored chunk."),
        workers: int = typer.Option(0, help="Worker processes (0: all cores, 1: in-process)."),
        scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address (tcp://host:port)."),
        all_layers: bool = typer.Option(False, "--all-layers", help="Keep Khat^l for every layer."),
        sensitivity: bool = typer.Option(False, "--sensitivity", help="Estimate d c^L/d c^0 (two inputs)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ):
        """Simulate S finite-width networks; print E[Khat^L] (+- SE) and the sensitivity."""
        from rich.console import Console

        from ..inputs import two_input_kernel
        from ..network import ResNet
        from ..simulation import simulate

        console = Console(stderr=True)
        if workers < 0:
            typer.echo(f"Error: --workers must be >= 0 (0: all cores, 1: in-process), got {workers}", err=True)
            raise typer.Exit(code=2)
        try:
            if sum(v is not None for v in (c0, k0_file, x_file)) > 1:
                raise ValueError("give at most one of --c0, --k0-file, --x-file")
            X = K0 = None
            if x_file is not None:
                X = read_array(x_file, "--x-file", suffixes=None)
            elif k0_file is not None:
                K0 = read_array(k0_file, "--k0-file", suffixes=None)
            else:
                K0 = two_input_kernel(0.5 if c0 is None else c0, q0)
            net = ResNet(depth=depth, alpha=alpha, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                         sigma_in2=sigma_in2, sigma_bin2=sigma_bin2, activation=activation, block=block)
            if scheduler is not None:
                check_scheduler_reachable(scheduler)
            res = simulate(net, width=width, n_networks=networks, X=X, K0=K0, seed=seed, backend=backend,
                           all_layers=all_layers, sensitivity=sensitivity, dtype=dtype, method=method,
                           chunk_size=chunk_size, device=device, workers=None if workers == 0 else workers,
                           scheduler=scheduler, out=out, progress=not no_progress)
        except (ValueError, ImportError, OverflowError, RuntimeError) as exc:
            typer.echo(f"Error: {' '.join(str(exc).split())}", err=True)
            raise typer.Exit(code=2)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted; finished chunks are kept in {out}/chunks; "
                          "re-run the same command to resume[/yellow]")
            raise typer.Exit(code=130)
        typer.echo(res.summary())
        typer.echo(f"saved {out / 'result.npz'}")
