"""The training sweep over depths x alphas x seeds and its outputs (docs/training.md).

:func:`run_sweep` -- Rich progress, resumable (one JSON per finished run under ``out/runs/``,
written atomically), parallel across processes; writes ``results.json`` (runs, theory,
:func:`summarize`), ``summary.md`` (:func:`format_summary_markdown`) and ``accuracy_vs_alpha.png``
(:func:`plot_results`). :func:`parse_alphas` / :func:`parse_ints` read the grids.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .datasets import load_dataset
from .training_run import TrainConfig, _finite_or_none, _torch, resolve_device, train_run
from .training_theory import BAND_LEVEL, C0_PAIRS, data_kernel_stats, theory_for_depth


# ------------------------------------------------------------------ grids
def parse_alphas(spec) -> tuple:
    """``"0.03,0.3,3"``, ``"logspace:LO:HI:N"`` (N log-spaced values), or a sequence of numbers.

    Every alpha must be finite and > 0 (the sweep and its plot use a log axis).
    """
    if isinstance(spec, str):
        s = spec.strip()
        if s.lower().startswith("logspace:"):
            parts = s.split(":")
            if len(parts) != 4:
                raise ValueError(f"alpha grid must be 'logspace:LO:HI:N', got {spec!r}")
            try:
                lo, hi, n = float(parts[1]), float(parts[2]), int(parts[3])
            except ValueError:
                raise ValueError(f"alpha grid must be 'logspace:LO:HI:N' with numbers, got {spec!r}") from None
            if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"logspace bounds must be finite and > 0 (alpha must be > 0), got {spec!r}")
            if n < 1:
                raise ValueError(f"logspace needs N >= 1 points, got {spec!r}")
            values = np.geomspace(lo, hi, n) if n > 1 else np.array([lo])
        else:
            try:
                values = [float(v) for v in s.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"alphas must be comma-separated numbers or 'logspace:LO:HI:N', got {spec!r}") from None
    else:
        try:
            values = [float(v) for v in np.atleast_1d(spec)]
        except (TypeError, ValueError):
            raise ValueError(f"alphas must be numbers, got {spec!r}") from None
    values = [float(f"{v:.6g}") for v in values]
    if not values:
        raise ValueError("alphas must not be empty")
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"every alpha must be finite and > 0, got {v!r}")
    return tuple(sorted(set(values)))


def parse_ints(spec, name: str, min_value: int = 1) -> tuple:
    """``"20,50,100"`` or a sequence of ints, each >= min_value."""
    items = spec.split(",") if isinstance(spec, str) else list(np.atleast_1d(spec))
    out = []
    for v in items:
        if isinstance(v, str) and not v.strip():
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be integers, got {spec!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ValueError(f"{name} must be integers, got {v!r}")
        if int(f) < min_value:
            raise ValueError(f"{name} must be >= {min_value}, got {int(f)}")
        out.append(int(f))
    if not out:
        raise ValueError(f"{name} must not be empty")
    return tuple(sorted(set(out)))


def _atomic_write_json(path: Path, obj) -> None:
    """JSON (no NaN) written atomically: unique tmp file in the same directory + fsync + os.replace."""
    from ._storage import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=1, allow_nan=False).encode())



# ------------------------------------------------------------------ sweep
def _job_path(runs_dir: Path, key: str, depth: int, alpha: float, seed: int) -> Path:
    return runs_dir / f"{key}_L{depth}_a{alpha:.6g}_s{seed}.json"


def _worker_init(threads: int, parent_pid: Optional[int] = None) -> None:
    """Process-pool initializer: die with the parent (any signal, also SIGKILL), then limit threads.

    Uses :func:`resscale.parallel._init_worker` (Linux PR_SET_PDEATHSIG plus a
    parent-pid poll every 0.5 s, and a BLAS thread limit), then sets torch's threads.
    """
    if parent_pid is not None:
        from .parallel import _init_worker

        _init_worker(max(1, int(threads)), int(parent_pid))
    torch = _torch()
    torch.set_num_threads(max(1, int(threads)))


def _run_job(job: dict) -> dict:
    """Train one (depth, alpha, seed) and cache it atomically; used in-process or by a worker."""
    config = TrainConfig(**job["config"])
    rec = train_run(config, job["depth"], job["alpha"], job["seed"], device=job["device"])
    rec["config_key"] = config.key()
    _atomic_write_json(Path(job["path"]), rec)
    return rec


def summarize(runs: Sequence[dict], theory: dict, depths: Sequence[int], alphas: Sequence[float]) -> dict:
    """Per depth: mean/std of test accuracy per alpha, best alpha, per-seed best, band verdict.

    ``tied_alphas``: alphas whose mean accuracy is within one standard error
    (over seeds, of the difference) of the best one -- the resolution of the sweep.
    """
    out = {}
    for depth in depths:
        per_alpha = []
        for a in alphas:
            accs = [r["test_accuracy"] for r in runs if r["depth"] == depth and r["alpha"] == a]
            if not accs:
                continue
            accs_a = np.asarray(accs)
            per_alpha.append(dict(alpha=a, mean=float(accs_a.mean()),
                                  std=float(accs_a.std(ddof=1)) if len(accs) > 1 else 0.0,
                                  min=float(accs_a.min()), max=float(accs_a.max()), n=len(accs),
                                  n_diverged=sum(1 for r in runs if r["depth"] == depth
                                                 and r["alpha"] == a and r["diverged"])))
        if not per_alpha:
            continue
        best = max(per_alpha, key=lambda p: p["mean"])
        se_best = best["std"] / math.sqrt(best["n"])
        tied = [p["alpha"] for p in per_alpha
                if best["mean"] - p["mean"] <= math.hypot(se_best, p["std"] / math.sqrt(p["n"]))]
        seeds = sorted({r["seed"] for r in runs if r["depth"] == depth})
        best_per_seed = []
        for s in seeds:
            rs_ = [r for r in runs if r["depth"] == depth and r["seed"] == s]
            if rs_:
                best_per_seed.append(max(rs_, key=lambda r: r["test_accuracy"])["alpha"])
        th = theory.get(str(depth), {})
        entry = dict(best_alpha=best["alpha"], best_mean=best["mean"], best_std=best["std"], best_n=best["n"],
                     best_alpha_per_seed=best_per_seed, tied_alphas=tied, per_alpha=per_alpha)
        if th.get("available"):
            lo, hi = th["band"]
            entry.update(alpha_star=th["alpha_star"], interior=th["interior"], band=th["band"],
                         best_in_band=bool(lo <= best["alpha"] <= hi),
                         tied_in_band=[a for a in tied if lo <= a <= hi],
                         S_at_best_over_max=_interp_S(th, best["alpha"]))
        out[str(depth)] = entry
    return out


def _interp_S(th: dict, alpha: float):
    a = np.log(np.asarray(th["curve"]["alpha"]))
    S = np.asarray([np.nan if s is None else s for s in th["curve"]["S"]])
    if not th.get("S_max"):
        return None
    return _finite_or_none(np.interp(math.log(alpha), a, S) / th["S_max"])


def format_mean_spread(mean: float, std: float, n: Optional[int]) -> str:
    """``mean ± std`` over seeds; with a single seed there is no spread: ``mean (n/a, 1 seed)``."""
    if n is not None and int(n) < 2:
        return f"{mean:.4f} ± n/a (1 seed)"
    return f"{mean:.4f} ± {std:.4f}"


def _best_n(s: dict):
    """Seeds behind the best alpha's mean (older results.json lack ``best_n``: read it from per_alpha)."""
    if "best_n" in s:
        return s["best_n"]
    return next((p.get("n") for p in s.get("per_alpha", []) if p["alpha"] == s["best_alpha"]), None)


def format_summary_markdown(results: dict) -> str:
    """The result table of docs/training.md (one row per depth), generated from results.json."""
    cfg = results["config"]
    lines = [f"dataset `{cfg['dataset']}`, width {cfg['width']}, {cfg['epochs']} epochs, "
             f"{cfg['optimizer']} lr {cfg['lr']}, batch {cfg['batch_size']}, {cfg['block']} block, "
             f"{cfg['activation']}, sigma_w2 {cfg['sigma_w2']}, seeds {len(results['seeds'])}; "
             f"c0 = {results['c0']:.4f} ({results['c0_pairs']} pairs), q0 = {results['q0']:.4f}; "
             f"band: S >= {BAND_LEVEL:.0%} of max S",
             "",
             "| depth | best alpha | test acc (mean ± std) | best alpha per seed | alphas tied with best (1 SE) "
             "| theory alpha* | band S>=90% max | best in band? | S(best)/S_max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for depth, s in results["summary"].items():
        if "band" in s:
            star = f"{s['alpha_star']:.3g}" if s["alpha_star"] is not None else "none (S max at alpha -> 0)"
            band = (f"(0, {s['band'][1]:.3g}]" if s["band"][0] == 0
                    else f"[{s['band'][0]:.3g}, {s['band'][1]:.3g}]")
            inb = "yes" if s["best_in_band"] else "**no**"
            ratio = "n/a" if s["S_at_best_over_max"] is None else f"{s['S_at_best_over_max']:.2f}"
        else:
            star = band = inb = ratio = "n/a (theory unavailable)"
        lines.append(f"| {depth} | {s['best_alpha']:.3g} | {format_mean_spread(s['best_mean'], s['best_std'], _best_n(s))} | "
                     f"{', '.join(f'{a:.3g}' for a in s['best_alpha_per_seed'])} | "
                     f"{', '.join(f'{a:.3g}' for a in s['tied_alphas'])} | {star} | {band} | {inb} | {ratio} |")
    lines += ["", "Mean test accuracy per alpha (± std over seeds):", "",
              "| alpha | " + " | ".join(f"L={d}" for d in results["summary"]) + " |",
              "|---|" + "---|" * len(results["summary"])]
    for a in results["alphas"]:
        row = [f"{a:.3g}"]
        for s in results["summary"].values():
            p = next((p for p in s["per_alpha"] if p["alpha"] == a), None)
            row.append("" if p is None else format_mean_spread(p['mean'], p['std'], p.get('n'))
                       + (f" ({p['n_diverged']} div.)" if p["n_diverged"] else ""))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_results(results: dict, path) -> None:
    """Test accuracy vs alpha (log x, mean ± std over seeds, seeds as dots) with S(alpha) on a twin axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = [int(d) for d in results["summary"]]
    fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 4.0), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        s = results["summary"][str(depth)]
        a = np.array([p["alpha"] for p in s["per_alpha"]])
        m = np.array([p["mean"] for p in s["per_alpha"]])
        sd = np.array([p["std"] for p in s["per_alpha"]])
        runs = [r for r in results["runs"] if r["depth"] == depth]
        ax.scatter([r["alpha"] for r in runs], [r["test_accuracy"] for r in runs], s=10,
                   color="C0", alpha=0.35, label="seeds")
        ax.errorbar(a, m, yerr=sd, color="C0", marker="o", capsize=3, label="test accuracy (mean ± std)")
        ax.set_xscale("log")
        ax.set_xlabel(r"residual scaling $\alpha$")
        ax.set_ylabel("test accuracy", color="C0")
        ax.set_title(f"{results['config']['dataset']}, L = {depth}, N = {results['config']['width']}, "
                     f"c0 = {results['c0']:.3g} ({results['c0_pairs']})", fontsize=9)
        th = results["theory"].get(str(depth), {})
        handles, labels = ax.get_legend_handles_labels()
        if th.get("available"):
            ax2 = ax.twinx()
            ga = np.asarray(th["curve"]["alpha"])
            gS = np.asarray([np.nan if v is None else v for v in th["curve"]["S"]])
            keep = (ga >= a.min() / 3) & (ga <= a.max() * 3)
            (l1,) = ax2.plot(ga[keep], gS[keep], color="C3", lw=1.5, label=r"theory $S(\alpha)=dc^L/dc^0$")
            ax2.set_ylabel(r"sensitivity $S(\alpha)$", color="C3")
            xlo = ga[keep].min()
            band = (max(th["band"][0], xlo), th["band"][1])
            l3 = ax2.axvspan(*band, color="C3", alpha=0.08,
                             label=rf"band S $\geq$ {th['band_level']:.0%} max S")
            handles += [l1, l3]
            labels += [l1.get_label(), l3.get_label()]
            if th.get("alpha_star") is not None:
                l2 = ax2.axvline(th["alpha_star"], color="C3", ls="--",
                                 label=rf"$\alpha^*$ = {th['alpha_star']:.3g}")
                handles.append(l2)
                labels.append(l2.get_label())
            else:
                ax2.text(0.98, 0.97, r"no interior max of $S$: $\alpha^*$ undefined", transform=ax2.transAxes,
                         ha="right", va="top", fontsize=7, color="C3")
        ax.legend(handles, labels, fontsize=7, loc="lower left")
    fig.tight_layout()
    from .plotting import save_figure

    save_figure(fig, path, dpi=120, bbox_inches=None)  # unique tmp file + os.replace


def run_sweep(config: TrainConfig, depths: Sequence[int], alphas, seeds: int, out,
              device: str = "cpu", workers: int = 1, c0_pairs: str = "between",
              c0: Optional[float] = None, threads: int = 1, progress: bool = True, console=None,
              plot: bool = True) -> dict:
    """Train every (depth, alpha, seed); cache each run; write results.json, summary.md, the plot.

    Finished runs found under ``out/runs/`` (same config hash) are not trained
    again. ``seeds`` is the number of seeds (0..seeds-1). The theory uses
    c0 = the data statistic ``c0_pairs`` (see :func:`data_kernel_stats`) unless
    ``c0`` is given, and q0 from the data. With ``workers > 1``
    the runs go to a process pool (spawn). Each worker (or the main process
    when ``workers == 1``) uses ``threads`` torch threads (default 1: these
    small matmuls gain nothing from intra-op threads, and oversubscribed
    threads slowed a depth-20 run ten-fold on a 2-core machine).
    """
    t_start = time.perf_counter()
    depths = parse_ints(depths, "depth")
    alphas = parse_alphas(alphas)
    if isinstance(seeds, bool) or int(seeds) != seeds or seeds < 1:
        raise ValueError(f"seeds (number of seeds) must be an integer >= 1, got {seeds!r}")
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if c0_pairs not in C0_PAIRS:
        raise ValueError(f"c0_pairs must be one of {C0_PAIRS}, got {c0_pairs!r}")
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if c0 is not None and not (math.isfinite(float(c0)) and -1.0 <= float(c0) <= 1.0):
        raise ValueError(f"c0 must be in [-1, 1], got {c0!r}")
    dev = resolve_device(device)
    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    key = config.key()
    data = load_dataset(config.dataset, config.test_fraction, config.split_seed)

    jobs, runs, n_cached = [], [], 0
    for depth in depths:
        for alpha in alphas:
            for seed in range(int(seeds)):
                path = _job_path(runs_dir, key, depth, alpha, seed)
                if path.exists():
                    try:
                        rec = json.loads(path.read_text())
                        if rec.get("config_key") == key:
                            runs.append(rec)
                            n_cached += 1
                            continue
                    except (OSError, ValueError):
                        pass  # a corrupt cache file is retrained
                jobs.append(dict(config=config.to_dict(), depth=depth, alpha=alpha, seed=seed,
                                 device=dev, path=str(path)))

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    cols = [TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=console, disable=not progress) as prog:
        task = prog.add_task(f"{len(jobs)} runs ({n_cached} cached)", total=len(jobs))
        if workers == 1 or len(jobs) <= 1:
            torch = _torch()
            old_threads = torch.get_num_threads()
            torch.set_num_threads(int(threads))
            try:
                for job in jobs:
                    runs.append(_run_job(job))
                    prog.advance(task)
            finally:
                torch.set_num_threads(old_threads)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads, os.getpid())) as pool:
                futs = [pool.submit(_run_job, job) for job in jobs]
                for fut in as_completed(futs):
                    runs.append(fut.result())
                    prog.advance(task)
    runs.sort(key=lambda r: (r["depth"], r["alpha"], r["seed"]))

    stats = data_kernel_stats(config.network(depths[0], 0.1), data.X_train, data.y_train)
    if c0 is None:
        c0_used, c0_source = stats[f"c0_{c0_pairs}"], c0_pairs
    else:
        c0_used, c0_source = float(c0), "given"
    q0 = stats["q0"]
    lo, hi = min(alphas), max(alphas)
    arange = (min(1e-3, lo / 10), max(10.0, hi * 10))
    theory = {str(d): theory_for_depth(config, d, c0_used, q0, alpha_range=arange) for d in depths}
    # the same theory for every c0 candidate (no curve), to show how much the choice of c0 matters
    theory_by_c0 = {}
    for mode in C0_PAIRS:
        if stats.get(f"c0_{mode}") is None:
            continue
        theory_by_c0[mode] = {"c0": stats[f"c0_{mode}"]}
        for d in depths:
            th = theory_for_depth(config, d, stats[f"c0_{mode}"], q0, alpha_range=arange)
            th.pop("curve", None)
            theory_by_c0[mode][str(d)] = th
    star = {str(d): theory[str(d)].get("alpha_star") for d in depths}
    results = dict(
        config=config.to_dict(), config_key=key, dataset=data.describe(),
        depth=depths[0] if len(depths) == 1 else None, depths=list(depths), width=config.width,
        alphas=list(alphas), seeds=list(range(int(seeds))),
        c0=c0_used, q0=q0, c0_pairs=c0_source, data_kernel=stats, theory_by_c0=theory_by_c0,
        alpha_star=star[str(depths[0])] if len(depths) == 1 else star,
        theory=theory, runs=runs, summary=summarize(runs, theory, depths, alphas),
        timing=dict(total_s=time.perf_counter() - t_start, n_runs=len(runs), n_cached=n_cached,
                    n_trained=len(jobs), train_s_sum=float(sum(r["time_s"] for r in runs)),
                    workers=int(workers), device=dev),
        versions=_versions(),
    )
    _atomic_write_json(out / "results.json", results)
    from ._storage import atomic_write_bytes

    atomic_write_bytes(out / "summary.md", format_summary_markdown(results).encode())
    if plot:
        plot_results(results, out / "accuracy_vs_alpha.png")
    return results


def _versions() -> dict:
    from . import __version__

    v = dict(resscale=__version__, numpy=np.__version__)
    try:
        import torch
        v["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return v
