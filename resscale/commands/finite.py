"""``resscale finite``: the 1/N finite-width theory (K^L, M^L, V^L) for one network.

Prints the mean-field kernel K, the mean shift M (E Khat = K + M/N) and the
covariance V (N Cov(Khat_ab, Khat_cd) = V_abcd), plus the independent-noise
closure of V for comparison; ``--json`` prints one JSON object instead.
See docs/theory.md Sec. 4.
"""
from __future__ import annotations

import json
from typing import Optional

import typer

from ._options import _json_safe


def register(app: typer.Typer) -> None:
    @app.command("finite")
    def finite(
        depth: int = typer.Option(20, help="Number of residual blocks L."),
        alpha: float = typer.Option(0.5, help="Residual scaling alpha."),
        c0: float = typer.Option(0.5, "--c0", help="Input correlation (two inputs of norm q0)."),
        q0: float = typer.Option(1.0, "--q0", help="Input norm K^0_aa."),
        width: Optional[int] = typer.Option(None, help="Width N (adds K + M/N and V/N to the output)."),
        activation: str = typer.Option("erf", help="erf, tanh, relu, linear or gelu."),
        block: str = typer.Option("full", help="full, reduced, two_layer or feedforward."),
        sigma_w2: float = typer.Option(1.0, "--sigma-w2", help="Block weight variance (W ~ N(0, sigma_w2/N))."),
        sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Block bias variance."),
        no_mean: bool = typer.Option(False, "--no-mean", help="Skip M (faster)."),
        method: str = typer.Option("auto", help="auto, exact or interpolated (full block: node layers, "
                                                "docs/theory.md Sec. 4.9; auto = interpolated for L > 64)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        order: str = typer.Option("1", "--order", help="1: leading 1/N theory; 2: also the next order V1, M2 "
                                                     "(all blocks; full block: built-in activations, "
                                                     "integrated by quasi-Monte-Carlo, docs/theory.md Sec. 4.12.5; "
                                                     "relu with its kink terms, Sec. 4.12.6); "
                                                     "resummed: order 2 plus the cumulant-closure prediction "
                                                     "(two_layer, reduced; Sec. 4.12.3)."),
    ):
        """Finite-width kernel statistics: mean-field K, mean shift M, covariance V."""
        import numpy as np

        from ..finite_width import finite_width
        from ..finite_width.next_order import NEXT_ORDER_BLOCKS, validity_warning
        from ..inputs import two_input_kernel
        from ..network import ResNet

        if order not in ("1", "2", "resummed"):
            typer.echo(f"Error: --order must be 1, 2 or resummed, got {order!r}", err=True)
            raise typer.Exit(2)
        order = order if order == "resummed" else int(order)
        try:
            net = ResNet(depth=depth, alpha=alpha, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                         activation=activation, block=block)
            fw = finite_width(net, width=width, K0=two_input_kernel(c0, q0), mean_shift=not no_mean,
                              method=method, order=order)
        except (ValueError, NotImplementedError, OverflowError) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(2)
        validity_note = None
        if width is not None and (net.block in NEXT_ORDER_BLOCKS or order != 1):
            validity_note = validity_warning(fw)
            if validity_note and not as_json:
                typer.echo(validity_note, err=True)
        if as_json:
            d = fw.to_dict()
            if validity_note is not None:
                d["warning"] = validity_note
            if width is not None and order != 1:
                d["predicted_covariance"] = fw.predicted_covariance.tolist()
                d["expansion_parameter"] = fw.expansion_parameter
            if "next_order_se" in fw.extras:
                d["covariance_correction_se"] = fw.extras["next_order_se"]["V1"].tolist()
                d["mean_shift2_se"] = fw.extras["next_order_se"]["M2"].tolist()
            if fw.resummed_covariance is not None:
                d["resummed_covariance"] = fw.resummed_covariance.tolist()
            d["method"] = fw.extras.get("method")
            d["interp_error"] = fw.extras.get("interp_error")
            if width is not None and not no_mean:
                d["expected_kernel"] = fw.expected_kernel.tolist()
            typer.echo(json.dumps(_json_safe(d), allow_nan=False))
            return
        np.set_printoptions(precision=5, suppress=True)
        typer.echo(f"{net}")
        err = fw.extras.get("interp_error")
        typer.echo(f"path: {fw.extras.get('method')}" + (
            f" (estimated interpolation error: V {err['V']:.1e}, M {err.get('M', float('nan')):.1e} relative)"
            if err else ""))
        typer.echo(f"K^L (mean field):\n{fw.kernel}")
        if not no_mean:
            typer.echo(f"M^L (E Khat = K + M/N):\n{fw.mean_shift}")
        iu = [(0, 0), (0, 1), (1, 1)]
        typer.echo("V^L (N Cov(Khat_ab, Khat_cd)), rows/cols ab = 11, 12, 22:")
        typer.echo(str(np.array([[fw.covariance[a + c] for c in iu] for a in iu])))
        typer.echo("independent-noise closure of V (for comparison):")
        typer.echo(str(np.array([[fw.covariance_independent[a + c] for c in iu] for a in iu])))
        if width is not None and not no_mean:
            typer.echo(f"E[Khat^L] at N={width}:\n{fw.expected_kernel}")
        if order != 1:
            typer.echo(f"M2^L (E Khat = K + M/N + M2/N^2):\n{fw.mean_shift2}")
            typer.echo("V1^L (N Cov = V + V1/N), rows/cols ab = 11, 12, 22:")
            typer.echo(str(np.array([[fw.covariance_correction[a + c] for c in iu] for a in iu])))
            se = fw.extras.get("next_order_se")
            if se is not None:
                typer.echo(f"integration standard errors (quasi-Monte-Carlo, {se['n_pairs']} seed pairs; "
                           f"docs/theory.md Sec. 4.12.5{'-4.12.6' if net.phi.name == 'relu' else ''}): V1 above +-")
                typer.echo(str(np.array([[se["V1"][a + c] for c in iu] for a in iu])))
                typer.echo(f"M2 +-\n{se['M2']}")
            if fw.resummed_covariance is not None and width is not None:
                typer.echo(f"resummed N Cov at N={width} (cumulant closure, Sec. 4.12.3):")
                typer.echo(str(np.array([[fw.resummed_covariance[a + c] for c in iu] for a in iu])))
            if width is not None:
                typer.echo(f"predicted N Cov at N={width} (V + V1/N):")
                typer.echo(str(np.array([[fw.predicted_covariance[a + c] for c in iu] for a in iu])))
                if not no_mean:
                    typer.echo(f"predicted E[Khat^L] at N={width} (K + M/N + M2/N^2):\n{fw.predicted_mean}")
                typer.echo(f"expansion parameter (estimated relative size of the first neglected term): "
                           f"{fw.expansion_parameter:.3g}")
