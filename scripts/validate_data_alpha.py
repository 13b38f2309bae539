#!/usr/bin/env python
"""Training validation of the data-level alpha* (issue 11; docs/training.md, "Data-level alpha*").

For each configuration (dataset, depth, block, activation): the theory on the training inputs
(:mod:`resscale.data_sensitivity`: the chosen data-level sensitivity S_data = mean over pairs of
dc^L_ab/dc^0_ab, and the nearest-neighbour variant), then Adam training on a grid of alphas
around the prediction, each alpha at its best learning rate of a small grid (selected on the
final *training* loss, so the test set is not used for tuning), several seeds.

Resumable: every finished run is one JSON file under OUT/runs/ (default OUT = .cache/data_alpha,
git-ignored; written atomically with resscale._storage), found again on restart; theory per
configuration under OUT/theory/. ``--report`` only aggregates: RESULTS (default
docs/data_alpha/results.json: every run record and the theory) and the table in docs/training.md
(between markers), both generated from the stored runs, or from RESULTS alone when OUT is absent.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/validate_data_alpha.py --budget-min 40
    python scripts/validate_data_alpha.py --report
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import resscale as rs  # noqa: E402
from resscale import _storage  # noqa: E402
from resscale.data_sensitivity import data_sensitivity, optimal_alpha_data  # noqa: E402
from resscale.inputs import input_kernel  # noqa: E402

MARKER = "<!-- validate_data_alpha table -->"
N_THEORY = 1000          # training inputs used by the theory (seeded subsample)
MAX_PAIRS = 4000         # pairs for the mean over pairs (subsample, SE reported)
N_ALPHA = 8
LRS = (3e-4, 1e-3, 3e-3, 1e-2)            # Adam
LRS_SGD = (3e-3, 1e-2, 3e-2, 1e-1)        # SGD with momentum 0.9 (resscale.training default)
EPOCHS = {"digits": 5, "mnist5k": 3}
WIDTH = 64


def configs(datasets, depths, blocks, activations):
    """Theory configurations (the optimizer does not enter the theory)."""
    for ds in datasets:
        for act in activations:
            for block in blocks:
                for L in depths:
                    yield dict(dataset=ds, depth=L, block=block, activation=act)


def train_config(c, optimizer):
    """The configuration a training run records: Adam runs keep the theory config unchanged (so runs
    stored before the optimizer axis existed are found again), other optimizers add their name."""
    return dict(c) if optimizer == "adam" else dict(c, optimizer=optimizer)


def optimizer_of(c):
    return c.get("optimizer", "adam")


def theory_config(c):
    return {k: v for k, v in c.items() if k != "optimizer"}


def lrs_of(optimizer):
    return LRS if optimizer == "adam" else LRS_SGD


def cfg_name(c):
    opt = optimizer_of(c)
    return f"{c['dataset']}_L{c['depth']}_{c['block']}_{c['activation']}" + ("" if opt == "adam" else f"_{opt}")


def theory(c, out: Path, data):
    """Predictions for one configuration (cached): band of S_data, alpha* of both measures, alpha grid."""
    path = out / "theory" / f"{cfg_name(c)}.json"
    if path.exists():
        return _storage.load_json(path)
    net = rs.ResNet(depth=c["depth"], activation=c["activation"], block=c["block"])
    rng = np.random.default_rng(0)
    X = data.X_train.astype(np.float64)
    X = X[np.sort(rng.choice(X.shape[0], size=min(N_THEORY, X.shape[0]), replace=False))]
    K0 = input_kernel(net, X=X)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rm = optimal_alpha_data(net, K0=K0, max_pairs=MAX_PAIRS, alpha_range=(1e-3, 30.0), n_grid=121)
        rn = optimal_alpha_data(net, K0=K0, pairs="nearest", alpha_range=(1e-3, 30.0), n_grid=121)
    a90 = rm.data["band90"][1]
    hi = a90 * 8.0
    if math.isfinite(rn.alpha):
        hi = max(hi, 2.0 * rn.alpha)
    alphas = np.geomspace(a90 / 8.0, hi, N_ALPHA)
    alphas = [float(f"{a:.4g}") for a in alphas]
    dm = data_sensitivity(net, K0=K0, alphas=alphas, max_pairs=MAX_PAIRS)
    dn = data_sensitivity(net, K0=K0, alphas=alphas, pairs="nearest")
    th = dict(config=c, alphas=alphas,
              mean=dict(alpha_star=None if not rm.interior else rm.alpha, band=rm.data["band90"],
                        alpha_analytic=rm.alpha_analytic if math.isfinite(rm.alpha_analytic) else None,
                        message=rm.message, S=dm.value.tolist(), S_se=dm.stderr.tolist(),
                        n_pairs=dm.n_pairs, n_pairs_total=dm.n_pairs_total),
              nearest=dict(alpha_star=None if not rn.interior else rn.alpha, band=rn.data["band90"],
                           alpha_analytic=rn.alpha_analytic if math.isfinite(rn.alpha_analytic) else None,
                           message=rn.message, S=dn.value.tolist(), n_pairs=dn.n_pairs),
              c0_quantiles=rm.data["c0_quantiles"], n_theory_inputs=int(X.shape[0]),
              time_s=time.perf_counter() - t0)
    _storage.save_json_atomic(path, th)
    return th


def run_key(c, alpha, lr, seed):
    blob = json.dumps([c, alpha, lr, seed, EPOCHS[c["dataset"]], WIDTH, 64], sort_keys=True).encode()
    return f"{cfg_name(c)}_a{alpha:.4g}_lr{lr:g}_s{seed}_{hashlib.sha1(blob).hexdigest()[:8]}"


def train_one(c, alpha, lr, seed, out: Path):
    path = out / "runs" / f"{run_key(c, alpha, lr, seed)}.json"
    if path.exists():
        try:
            return _storage.load_json(path), True
        except (OSError, ValueError):
            pass
    from resscale.training import TrainConfig, train_run
    cfg = TrainConfig(dataset=c["dataset"], width=WIDTH, epochs=EPOCHS[c["dataset"]], lr=lr, batch_size=64,
                      optimizer=optimizer_of(c), activation=c["activation"], block=c["block"])
    rec = train_run(cfg, c["depth"], alpha, seed)
    rec.update(config=c, lr=lr)
    rec.pop("loss_curve", None)
    _storage.save_json_atomic(path, rec)
    return rec, False


# ------------------------------------------------------------------ analysis
def _spearman(x, y):
    from scipy.stats import spearmanr
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return None
    return float(spearmanr(x[ok], y[ok]).statistic)


def analyse(c, th, runs):
    """Per alpha: best lr (lowest mean train loss over seeds), accuracy there; best alpha etc."""
    per_alpha = []
    for a in th["alphas"]:
        best = None
        for lr in sorted(set(r["lr"] for r in runs)):
            rr = [r for r in runs if abs(r["alpha"] - a) < 1e-12 * max(1, a) and r["lr"] == lr]
            if not rr:
                continue
            loss = np.mean([r["train_loss"] if r["train_loss"] is not None else np.inf for r in rr])
            acc = [r["test_accuracy"] for r in rr]
            cand = dict(alpha=a, lr=lr, train_loss=float(loss), acc=acc, seeds=[r["seed"] for r in rr])
            if best is None or loss < best["train_loss"] or (loss == best["train_loss"] and np.mean(acc) > np.mean(best["acc"])):
                best = cand
        per_alpha.append(best)
    done = [p for p in per_alpha if p is not None]
    if len(done) < 3:
        return None
    n_seeds = min(len(p["acc"]) for p in done)
    mean_acc = np.array([np.mean(p["acc"]) if p else np.nan for p in per_alpha])
    alphas = np.array(th["alphas"])
    ib = int(np.nanargmax(mean_acc))
    accs_b = per_alpha[ib]["acc"]
    se_b = float(np.std(accs_b, ddof=1) / math.sqrt(len(accs_b))) if len(accs_b) > 1 else 0.0
    tied = [float(a) for a, m_ in zip(th["alphas"], mean_acc) if np.isfinite(m_) and m_ >= mean_acc[ib] - max(se_b, 1e-9)]
    lr_max = max(r["lr"] for r in runs)
    n_lr_edge = sum(1 for p in done if p["lr"] == lr_max)
    seeds = sorted(set(s for p in done for s in p["seeds"]))
    per_seed_best = []
    for s in seeds:
        accs = np.array([p["acc"][p["seeds"].index(s)] if p and s in p["seeds"] else np.nan for p in per_alpha])
        if np.all(np.isnan(accs)):
            continue
        per_seed_best.append(float(alphas[int(np.nanargmax(accs))]))
    lb = np.log(per_seed_best)
    spread = float(np.exp(np.std(lb, ddof=1))) if len(lb) > 1 else None
    best_alpha = float(alphas[ib])
    m = th["mean"]
    band = m["band"]
    in_band = band[0] * (1 - 1e-9) <= best_alpha <= band[1] * (1 + 1e-9)
    an = th["nearest"]
    ratio_nn = best_alpha / an["alpha_star"] if an["alpha_star"] else None
    ratio_m = best_alpha / m["alpha_star"] if m["alpha_star"] else None
    return dict(config=c, best_alpha=best_alpha, best_acc=float(mean_acc[ib]),
                best_acc_std=float(np.std(per_alpha[ib]["acc"], ddof=1)) if len(per_alpha[ib]["acc"]) > 1 else None,
                best_lr=per_alpha[ib]["lr"], per_seed_best=per_seed_best, tied=tied,
                lrs_tried=sorted(set(r["lr"] for r in runs)), n_lr_at_top=n_lr_edge, seed_spread_factor=spread,
                n_seeds=n_seeds, n_alphas_done=len(done),
                alpha_star_mean=m["alpha_star"], band_mean=band, ratio_mean=ratio_m,
                best_over_a90=best_alpha / band[1], in_band_mean=bool(in_band),
                alpha_star_nn=an["alpha_star"], ratio_nn=ratio_nn, band_nn=an["band"],
                in_band_nn=bool(an["band"][0] * (1 - 1e-9) <= best_alpha <= an["band"][1] * (1 + 1e-9)),
                spearman_mean=_spearman(m["S"], mean_acc), spearman_nn=_spearman(an["S"], mean_acc),
                per_alpha=[None if p is None else dict(alpha=p["alpha"], lr=p["lr"], acc_mean=float(np.mean(p["acc"])),
                                                       acc=p["acc"]) for p in per_alpha],
                S_mean=m["S"], S_nn=an["S"], alphas=th["alphas"])


def fmt(x, nd=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "none"
    return f"{x:.{nd}g}"


def table(results):
    rows = results["summary"]
    lines = [
        f"Generated by `scripts/validate_data_alpha.py --report` from `{results['out_rel']}` "
        f"({results['n_runs']} runs; Adam (and SGD with momentum 0.9 where the opt column says sgd), "
        f"width {results['width']}, batch 64, epochs "
        f"{', '.join(f'{k} {v}' for k, v in results['epochs'].items() if any(r['config']['dataset'] == k for r in rows))}"
        f", lr per alpha from the grid in the last column, chosen by the lowest mean final training loss "
        f"(the test set is not used for tuning); seeds per dataset: {results['seeds_per_dataset']}). "
        "S_data = mean over pairs of dc^L_ab/dc^0_ab (the chosen definition, Sec. 8 of theory.md); "
        "a90 = upper edge of its band S_data >= 0.9 max; nn = nearest-neighbour pairs variant.",
        "",
        "| dataset | L | block | phi | opt | best alpha (acc) | best alpha per seed | alpha* (S_data) | band S_data | "
        "best in band? | best/a90 | alpha* nn | best/alpha* nn | in nn band? | Spearman(S_data, acc) | "
        "Spearman(S_nn, acc) | alphas tied with best (1 SE) | lr grid (cells at its top) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["config"]
        band = r["band_mean"]
        lines.append(
            f"| {c['dataset']} | {c['depth']} | {c['block']} | {c['activation']} | {optimizer_of(c)} | {fmt(r['best_alpha'])} "
            f"({r['best_acc']:.3f}) | {', '.join(fmt(a) for a in r['per_seed_best'])} | "
            f"{fmt(r['alpha_star_mean'])} | ({'0' if band[0] <= 1.001e-3 else fmt(band[0])}, {fmt(band[1])}] | "
            f"{'yes' if r['in_band_mean'] else 'no'} | {r['best_over_a90']:.2f} | {fmt(r['alpha_star_nn'])} | "
            f"{fmt(r['ratio_nn'], 2)} | {'yes' if r['in_band_nn'] else 'no'} | {fmt(r['spearman_mean'], 2)} | "
            f"{fmt(r['spearman_nn'], 2)} | {', '.join(fmt(a) for a in r['tied'])} | "
            f"{'/'.join(f'{x:g}' for x in r['lrs_tried'])} ({r['n_lr_at_top']}/{r['n_alphas_done']}) |")
    lines += ["", "Counts over the configurations above (generated):", ""]
    groups = {}
    for r in rows:
        c = r["config"]
        groups.setdefault(f"{c['activation']}, {c['block']}, {optimizer_of(c)}", []).append(r)
    for g, rr in groups.items():
        sp = [r["spearman_mean"] for r in rr if r["spearman_mean"] is not None]
        ratio = [r["best_over_a90"] for r in rr]
        nn = [r["ratio_nn"] for r in rr if r["ratio_nn"] is not None]
        lines.append(f"- {g}: best alpha in the S_data band in {sum(r['in_band_mean'] for r in rr)}/{len(rr)}; "
                     f"best/a90 from {min(ratio):.2f} to {max(ratio):.2f}; Spearman(S_data, acc) from "
                     f"{min(sp):.2f} to {max(sp):.2f}" + (f"; best/alpha*_nn from {min(nn):.2f} to {max(nn):.2f}"
                                                         if nn else "; no nearest-neighbour alpha*"))
    lines.append(f"- all: in band {sum(r['in_band_mean'] for r in rows)}/{len(rows)}; Spearman > 0 in "
                 f"{sum(1 for r in rows if (r['spearman_mean'] or 0) > 0)}/{len(rows)}")
    lines += ["", "Accuracy (seed mean at the selected lr) per alpha, and S_data(alpha):", ""]
    for r in rows:
        c = r["config"]
        cells = []
        for p, s in zip(r["per_alpha"], r["S_mean"]):
            if p is None:
                continue
            cells.append(f"{p['alpha']:.3g}: {p['acc_mean']:.3f} (lr {p['lr']:g}, S {s:.2f})")
        lines.append(f"- {cfg_name(c)}: " + "; ".join(cells))
    return "\n".join(lines)


def report(out: Path, doc: Path, results_path: Path):
    runs_all, theories = [], []
    if (out / "runs").is_dir():
        for p in sorted((out / "runs").glob("*.json")):
            try:
                runs_all.append(_storage.load_json(p))
            except (OSError, ValueError):
                pass
        theories = [_storage.load_json(p) for p in sorted((out / "theory").glob("*.json"))]
    elif results_path.is_file():   # regenerate from the committed results.json alone
        old = _storage.load_json(results_path)
        runs_all, theories = old["runs"], old["theory"]
    summary = []
    by_theory = {json.dumps(th["config"], sort_keys=True): th for th in theories}
    train_cfgs = {json.dumps(r["config"], sort_keys=True): r["config"] for r in runs_all}
    for key, c in sorted(train_cfgs.items()):
        th = by_theory.get(json.dumps(theory_config(c), sort_keys=True))
        if th is None:
            continue
        runs = [r for r in runs_all if r["config"] == c]
        a = analyse(c, th, runs)
        if a is not None:
            summary.append(a)
    order = {"digits": 0, "mnist5k": 1}
    blocks = {"full": 0, "reduced": 1, "two_layer": 2}
    summary.sort(key=lambda r: (order.get(r["config"]["dataset"], 9), optimizer_of(r["config"]),
                                r["config"]["activation"], blocks.get(r["config"]["block"], 9), r["config"]["depth"]))
    seeds = sorted(set(r["seed"] for r in runs_all))
    try:
        out_rel = str(results_path.resolve().relative_to(ROOT))
    except ValueError:
        out_rel = str(results_path)
    spd = {}
    for r in runs_all:
        spd.setdefault(r["config"]["dataset"], set()).add(r["seed"])
    seeds_per_dataset = ", ".join(f"{k} {len(v)}" for k, v in sorted(spd.items()))
    results = dict(summary=summary, seeds_per_dataset=seeds_per_dataset, theory=theories, n_runs=len(runs_all), seeds=seeds, lrs=list(LRS),
                   lrs_sgd=list(LRS_SGD), epochs=EPOCHS, width=WIDTH, out_rel=out_rel, runs=runs_all)
    _storage.save_json_atomic(results_path, results)
    text = table(results)
    if doc is not None:
        _storage.write_marked_section(doc, text, MARKER)
    print(text)
    return results


def candidates(out_path: Path):
    """The comparison of data-level sensitivity candidates of docs/theory.md Sec. 8.3 (theory only, ~3 min)."""
    from resscale.datasets import load_dataset
    grid = np.geomspace(1e-3, 30, 121)
    res = {}
    for name in ("digits", "mnist5k"):
        ds = load_dataset(name)
        X, y = ds.X_train.astype(float), ds.y_train
        idx = np.sort(np.random.default_rng(0).choice(len(X), N_THEORY, replace=False))
        X, y = X[idx], y[idx]
        K0 = input_kernel(rs.ResNet(), X=X)
        for act in ("erf", "relu"):
            for L in (20, 50):
                net = rs.ResNet(depth=L, activation=act)
                row = {}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for key, kw in [(m, dict(measure=m)) for m in ("mean", "rms", "geomean", "corr2")] + \
                                   [(p_, dict(pairs=p_, labels=y)) for p_ in ("within", "between", "nearest")]:
                        r = optimal_alpha_data(net, K0=K0, max_pairs=MAX_PAIRS, alpha_range=(1e-3, 30.0), n_grid=121,
                                               analytic=False, **kw)
                        row[key] = dict(alpha_star=r.alpha if r.interior else None, band=r.data["band90"],
                                        S_max=r.sensitivity)
                d = data_sensitivity(net, K0=K0, alphas=grid, max_pairs=MAX_PAIRS)
                mx = d.S.max(axis=1)
                i = int(np.argmax(mx))
                row["max"] = dict(alpha_star=float(grid[i]) if 0 < i < grid.size - 1 else None, S_max=float(mx[i]))
                j = np.argmax(d.S, axis=0)
                row["frac_pairs_with_interior_max"] = float(np.mean((j > 0) & (j < grid.size - 1)))
                res[f"{name}_{act}_L{L}"] = row
                print(name, act, L, json.dumps(row), flush=True)
    _storage.save_json_atomic(out_path, res)


def main(argv=None):
    global WIDTH, N_ALPHA, LRS, LRS_SGD, N_THEORY
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / ".cache" / "data_alpha"), help="run cache (resumable)")
    ap.add_argument("--results", default=None, help="results.json (default docs/data_alpha/results.json, "
                    "or OUT/results.json when --out is given)")
    ap.add_argument("--datasets", default="digits,mnist5k")
    ap.add_argument("--depths", default="20,50")
    ap.add_argument("--blocks", default="full,reduced")
    ap.add_argument("--activations", default="erf,relu")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget-min", type=float, default=40.0, help="stop starting runs after this wall time")
    ap.add_argument("--report", action="store_true", help="only aggregate the stored runs")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "training.md"))
    ap.add_argument("--theory-only", action="store_true")
    ap.add_argument("--candidates", action="store_true",
                    help="only the comparison of data-level candidates (theory.md Sec. 8.3) -> docs/data_alpha/candidates.json")
    ap.add_argument("--epochs", type=int, default=None, help="override the epochs of every dataset (tests)")
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--n-alpha", type=int, default=N_ALPHA)
    ap.add_argument("--lrs", default=",".join(f"{x:g}" for x in LRS), help="Adam learning-rate grid")
    ap.add_argument("--lrs-sgd", default=None, help="SGD learning-rate grid (default "
                    + ",".join(f"{x:g}" for x in LRS_SGD) + ")")
    ap.add_argument("--optimizers", default="adam", help="comma list of adam, sgd")
    ap.add_argument("--n-theory", type=int, default=N_THEORY, help="training inputs used by the theory")
    args = ap.parse_args(argv)
    WIDTH, N_ALPHA, N_THEORY = args.width, args.n_alpha, args.n_theory
    LRS = tuple(float(x) for x in args.lrs.split(","))
    if args.lrs_sgd:
        LRS_SGD = tuple(float(x) for x in args.lrs_sgd.split(","))
    optimizers = args.optimizers.split(",")
    for o in optimizers:
        if o not in ("adam", "sgd"):
            ap.error(f"--optimizers: unknown optimizer {o!r} (adam, sgd)")
    if args.epochs is not None:
        for k in EPOCHS:
            EPOCHS[k] = args.epochs
    out = Path(args.out)
    doc = Path(args.doc) if args.doc else None
    if args.results:
        results_path = Path(args.results)
    elif args.out == ap.get_default("out"):
        results_path = ROOT / "docs" / "data_alpha" / "results.json"
    else:
        results_path = out / "results.json"
    if args.candidates:
        candidates(ROOT / "docs" / "data_alpha" / "candidates.json")
        return 0
    if args.report:
        report(out, doc, results_path)
        return 0
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    from resscale.datasets import load_dataset
    t0 = time.perf_counter()
    cfgs = list(configs(args.datasets.split(","), [int(x) for x in args.depths.split(",")],
                        args.blocks.split(","), args.activations.split(",")))
    ths = {}
    for c in cfgs:
        data = load_dataset(c["dataset"])
        ths[cfg_name(c)] = theory(c, out, data)
        th = ths[cfg_name(c)]
        print(f"[theory] {cfg_name(c)}: band (0, {th['mean']['band'][1]:.3g}], alpha*_mean "
              f"{fmt(th['mean']['alpha_star'])}, alpha*_nn {fmt(th['nearest']['alpha_star'])}, "
              f"alphas {th['alphas']}", flush=True)
    if args.theory_only:
        return 0
    jobs = [(train_config(c, o), a, lr, s) for s in range(args.seeds) for o in optimizers for c in cfgs
            for a in ths[cfg_name(c)]["alphas"] for lr in lrs_of(o)]
    n_done = n_new = 0
    for i, (c, a, lr, s) in enumerate(jobs):
        if time.perf_counter() - t0 > 60 * args.budget_min:
            print(f"[budget] {args.budget_min} min reached after {i} of {len(jobs)} jobs; rerun to resume", flush=True)
            break
        rec, cached = train_one(c, a, lr, s, out)
        n_done += 1
        n_new += not cached
        if not cached:
            print(f"[{i + 1}/{len(jobs)} {time.perf_counter() - t0:.0f}s] {cfg_name(c)} alpha {a:.4g} lr {lr:g} "
                  f"seed {s}: acc {rec['test_accuracy']:.3f} loss {fmt(rec['train_loss'])} ({rec['time_s']:.1f}s)",
                  flush=True)
    print(f"{n_done} runs ({n_new} new) in {time.perf_counter() - t0:.0f} s", flush=True)
    report(out, doc, results_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
