"""``resscale report``: the optimal-scaling study (figures, tables, report.md, verdicts)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (figures, CSV tables, report.md/json, cache/)."),
        quick: bool = typer.Option(False, "--quick", help="Small sweeps (a few minutes on 2 cores)."),
        tiny: bool = typer.Option(False, "--tiny", help="Smallest sweeps (seconds; for tests and smoke runs)."),
        workers: Optional[int] = typer.Option(None, "--workers", "-j",
                                              help="Local worker processes (default: all cores; 1 = in-process)."),
        scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                                help="Dask scheduler address (tcp://host:port); overrides --workers."),
        figures: Optional[str] = typer.Option(None, "--figures",
                                              help="Comma-separated subset, e.g. fig3,fig4 (default: all)."),
        no_pdf: bool = typer.Option(False, "--no-pdf", help="Write PNG only."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
        training: Optional[Path] = typer.Option(None, "--training",
                                                help="Output folder of `resscale train` to include in the report."),
    ):
        """Run the study: 8 figures testing the paper's 4 claims; resumable (rerun to continue)."""
        from dataclasses import replace

        from ..report import get_config, run_report

        if quick and tiny:
            typer.echo("Error: --quick and --tiny are exclusive", err=True)
            raise typer.Exit(code=2)
        if workers is not None and workers < 1:
            typer.echo(f"Error: --workers must be >= 1, got {workers}", err=True)
            raise typer.Exit(code=2)
        mode = "tiny" if tiny else "quick" if quick else "full"
        cfg = get_config(mode)
        if no_pdf:
            cfg = replace(cfg, pdf=False)
        figs = None
        if figures:
            figs = [f.strip() for f in figures.split(",") if f.strip()]
            from ..report.runner import FIGURE_NAMES

            bad = [f for f in figs if f not in FIGURE_NAMES]
            if bad:
                typer.echo(f"Error: unknown figure(s) {bad}; use {', '.join(FIGURE_NAMES)}", err=True)
                raise typer.Exit(code=2)
        try:
            rep = run_report(out, config=cfg, workers=workers, scheduler=scheduler, progress=not no_progress,
                             figures=figs, training=training)
        except FileNotFoundError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=2)
        except KeyboardInterrupt:
            typer.echo(f"\nInterrupted: finished points are cached in {out}/cache; rerun the same command "
                       "to continue.", err=True)
            raise typer.Exit(code=130)
        m = rep["meta"]
        typer.echo(f"report written to {out}/report.md ({m['elapsed_s']:.0f} s; {m['tasks_computed']} points "
                   f"computed, {m['tasks_cached']} from cache)")
        for k in sorted(rep["verdict"]):
            typer.echo(f"- {rep['verdict'][k]}")
