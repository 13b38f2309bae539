"""``resscale optimal``: optimal residual scaling alpha* on built-in defaults."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..blocks import get_block
from ..inputs import as_finite_array
from . import _options as o
from ._files import read_array


def _check_scan(block, alpha_min, alpha_max):
    """The block has a residual scaling, and 0 < --alpha-min < --alpha-max, both finite."""
    if not get_block(block).residual:
        o.fail(f"--block {block} has no residual scaling alpha to optimise; use full, reduced or two_layer")
    if not (0 < alpha_min < alpha_max < float("inf")):  # NaN and inf fail too
        o.fail(f"need 0 < --alpha-min < --alpha-max, both finite, got --alpha-min {alpha_min:g} --alpha-max {alpha_max:g}")


def _print_result(table, res, png) -> None:
    """The human-readable output of ``resscale optimal`` (both paths): the table, the result's
    message, the note on the analytic value, and the plot file."""
    from rich.console import Console

    con = Console()
    con.print(table)
    con.print(res.message)
    con.print(f"analytic: {res.analytic_note}")
    if png:
        con.print(f"plot written to {png}")


def register(app: typer.Typer) -> None:
    @app.command()
    def optimal(
        ctx: typer.Context,
        depth: int = o.Depth, sigma_w2: float = o.SigmaW2, sigma_b2: float = o.SigmaB2,
        activation: str = o.ActivationOpt,
        block: str = o.Block, c0: float = o.C0, q0: float = o.Q0,
        width: Optional[int] = typer.Option(None, "--width", "-N",
                                            help="Finite width N: maximise the 1/N-corrected S_N."),
        alpha_min: float = typer.Option(1e-4, help="Lower end of the alpha scan."),
        alpha_max: float = typer.Option(1e2, help="Upper end of the alpha scan."),
        n_grid: int = typer.Option(200, help="Log-spaced scan points before refinement."),
        plot: Path = typer.Option(Path("resscale_optimal.png"), help="PNG of S(alpha) with alpha* marked."),
        no_plot: bool = typer.Option(False, "--no-plot", help="Do not write the PNG."),
        json_out: bool = o.Json,
        data: Optional[Path] = typer.Option(None, "--data", help="Data set (.npy or .csv, P rows x d features): "
                                            "maximise the data-level sensitivity instead of S(c0, q0)."),
        max_pairs: int = typer.Option(2000, "--max-pairs", help="With --data: pairs used (subsampled above)."),
        sigma_in2: float = o.SigmaIn2, sigma_bin2: float = o.SigmaBin2,
        order: int = typer.Option(1, "--order", help="With --width: 1 = S + delta/N; 2 = S_N to O(1/N^2) "
                                                     "(two_layer / reduced / feedforward, Sec. 4.12.1; full by quasi-Monte-Carlo with an "
                                                     "integration SE, Sec. 4.12.7 of docs/theory.md)."),
    ):
        """Find alpha* = argmax S(alpha), S = dc^L/dc^0 (two inputs of norm q0, correlation c0, or --data)."""
        from ..optimal_alpha import NoInteriorMaximumWarning, optimal_alpha

        if data is not None:  # data-level alpha* (resscale/data_sensitivity.py, docs/theory.md Sec. 8)
            return _optimal_data(ctx, data, depth, sigma_w2, sigma_b2, sigma_in2, sigma_bin2, activation, block,
                                    alpha_min, alpha_max, n_grid, max_pairs, plot, no_plot, json_out)

        _check_scan(block, alpha_min, alpha_max)
        net = o.make_net(depth, 0.0, sigma_w2, sigma_b2, 1.0, 0.0, activation, block)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NoInteriorMaximumWarning)
                res = optimal_alpha(net, c0, q0, width=width, alpha_range=(alpha_min, alpha_max),
                                    n_grid=n_grid, **({"order": order} if order != 1 else {}))
        except (ValueError, OverflowError, NotImplementedError) as exc:
            o.fail(str(exc))
        png = None
        if not no_plot:
            from ..plotting import plot_sensitivity
            try:
                png = plot_sensitivity(res, net, c0, q0, plot)
            except OSError as exc:
                o.fail(f"--plot: cannot write {str(plot)!r}: {exc.strerror or exc}")
        if json_out:
            out = {"network": {k: v for k, v in net.to_dict().items() if k != "alpha"},
                   "c0": c0, "q0": q0, **res.to_dict(), "plot": png}
            o.print_json(out)
            return
        from rich.table import Table

        t = Table(title=f"Optimal residual scaling: {block} block, {net.phi.name}, L = {depth}, "
                        f"sigma_w2 = {sigma_w2:g}, c0 = {c0:g}, q0 = {q0:g}"
                        + (f", N = {width}" if width else ""))
        t.add_column("quantity")
        t.add_column("value", justify="right")
        fmt = lambda x: "n/a" if not math.isfinite(x) else f"{x:.6g}"  # noqa: E731
        t.add_row("alpha* (numerical argmax)", fmt(res.alpha))
        t.add_row("alpha* (analytic, sqrt(T*/L))", fmt(res.alpha_analytic))
        t.add_row("sensitivity S(alpha*)", fmt(res.sensitivity))
        t.add_row("T* = alpha*^2 L (continuum)", fmt(res.T_star))
        _print_result(t, res, png)


def _load_data_file(path) -> np.ndarray:
    """A (P, d) float array from a .npy file or a comma-separated .csv (one optional header line)."""
    arr = read_array(path, "--data", (".npy", ".csv"), csv_header=True)
    try:
        return as_finite_array("X (the --data file)", arr, ndim=2)
    except ValueError as exc:
        raise ValueError(f"--data {str(path)!r}: {exc}") from None


def _optimal_data(ctx, data, depth, sigma_w2, sigma_b2, sigma_in2, sigma_bin2, activation, block,
                     alpha_min, alpha_max, n_grid, max_pairs, plot, no_plot, json_out):
    """Body of ``resscale optimal --data FILE``."""
    from ..data_sensitivity import optimal_alpha_data
    from ..optimal_alpha import NoInteriorMaximumWarning

    given = []
    if ctx is not None:  # typer vendors its own click: compare the parameter source by name
        for n in ("c0", "q0", "width"):
            try:
                src = ctx.get_parameter_source(n)
            except Exception:  # pragma: no cover
                src = None
            if getattr(src, "name", str(src)).endswith("COMMANDLINE"):
                given.append(f"--{n.replace('_', '-')}")
        if given:
            o.fail(f"--data and {', '.join(given)} are exclusive: with --data the correlations and norms come "
                   "from the data set")
    _check_scan(block, alpha_min, alpha_max)
    net = o.make_net(depth, 0.0, sigma_w2, sigma_b2, sigma_in2, sigma_bin2, activation, block)
    try:
        X = _load_data_file(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoInteriorMaximumWarning)
            res = optimal_alpha_data(net, X=X, alpha_range=(alpha_min, alpha_max), n_grid=n_grid,
                                     max_pairs=max_pairs)
    except (ValueError, OverflowError) as exc:
        o.fail(str(exc))
    png = None
    if not no_plot:
        from ..plotting import plot_sensitivity
        try:
            png = plot_sensitivity(res, net, res.data["c0_mean"], res.data["q0_mean"], plot)
        except OSError as exc:
            o.fail(f"--plot: cannot write {str(plot)!r}: {exc.strerror or exc}")
    if json_out:
        out = {"network": {k: v for k, v in net.to_dict().items() if k != "alpha"},
               "data": str(data), "P": int(X.shape[0]), "d": int(X.shape[1]), **res.to_dict(),
               "data_sensitivity": res.data, "plot": png}
        o.print_json(out)
        return
    from rich.table import Table

    t = Table(title=f"Data-level optimal residual scaling: {block} block, {net.phi.name}, L = {depth}, "
                    f"sigma_w2 = {sigma_w2:g}, data {data} (P = {X.shape[0]}, d = {X.shape[1]})")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    fmt = lambda x: "n/a" if x is None or not math.isfinite(x) else f"{x:.6g}"  # noqa: E731
    t.add_row("alpha* (numerical argmax)", fmt(res.alpha))
    t.add_row("alpha* (continuum, sqrt(T*/L))", fmt(res.alpha_analytic))
    t.add_row("data-level sensitivity at alpha*", fmt(res.sensitivity))
    t.add_row("band S >= 0.9 max", f"[{res.data['band90'][0]:.4g}, {res.data['band90'][1]:.4g}]")
    t.add_row("pairs used / total", f"{res.data['n_pairs']} / {res.data['n_pairs_total']}")
    t.add_row("mean input correlation c0", fmt(res.data["c0_mean"]))
    _print_result(t, res, png)
