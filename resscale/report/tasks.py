"""The cached, resumable task runner: one picklable task per point (``_run_task``), keyed by ``task_key``.

Every number the figures need (simulation, mean-field optimum, finite-width theory; docs/theory.md
Secs. 3-6) is computed as a task here and stored as ``DIR/cache/<key>.pkl``, written atomically:
a killed run resumes where it stopped. The keys hash the task specs only, so caches stay valid.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .._storage import ChunkStore
from ..inputs import two_input_kernel
from ..network import ResNet
from ..parallel import run_tasks

CACHE_VERSION = 1
_FW_DIR = Path(__file__).resolve().parent.parent / "finite_width"   # resscale/finite_width


def _net(p: dict) -> ResNet:
    return ResNet(**p)


def _netp(depth, alpha=0.1, sigma_w2=1.0, sigma_b2=0.0, activation="erf", block="full") -> dict:
    return dict(depth=int(depth), alpha=float(alpha), sigma_w2=float(sigma_w2), sigma_b2=float(sigma_b2),
                activation=str(activation), block=str(block))


def _fw_source_hash() -> str:
    """Version tag of the finite-width theory code (in flux): cached theory results follow it."""
    try:
        h = hashlib.sha1()
        for p in sorted(_FW_DIR.glob("*.py")):
            h.update(p.read_bytes())
        return h.hexdigest()[:12]
    except OSError:  # pragma: no cover
        return "none"


def finite_width_available() -> bool:
    """Whether :mod:`resscale.finite_width` provides both ``finite_width`` and ``sensitivity_finite_width``."""
    try:
        from ..finite_width import finite_width, sensitivity_finite_width  # noqa: F401
    except Exception:
        return False
    return True


def _argmax_scan(net, c0, q0, lo, hi, n):
    """alpha* from :func:`resscale.optimal_alpha` on [lo, hi] without its analytic part (slow for quadrature phi)."""
    from ..optimal_alpha import optimal_alpha

    res = optimal_alpha(net, c0, q0, alpha_range=(lo, hi), n_grid=int(n), analytic=False)
    return dict(alpha=float(res.alpha), S=float(res.sensitivity), interior=bool(res.interior),
                message=res.message, alphas=res.alphas, S_grid=res.sensitivities)


def _run_task(spec: dict):
    """Compute one cached point of the report (dispatch on ``spec['kind']``)."""
    kind = spec["kind"]
    warnings.simplefilter("ignore")
    if kind in ("sim_layers", "sim_sens", "sim_kernel"):
        from ..simulation import simulate

        net = _net(spec["net"])
        sim = simulate(net, spec["width"], spec["networks"], K0=two_input_kernel(spec["c0"], spec["q0"]),
                       seed=spec["seed"], all_layers=kind != "sim_sens",
                       sensitivity=kind == "sim_sens", workers=1, progress=False)
        if kind == "sim_sens":
            s, se = sim.sensitivity()
            return {"S": s, "se": se}
        lk = sim.layer_kernels  # (S, L+1, 2, 2)
        if kind == "sim_kernel":  # raw per-network entries of Khat^0 and Khat^L (aa, bb, ab)
            ent = lambda K: np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 1]], axis=1)  # noqa: E731
            return {"K0": ent(lk[:, 0]), "KL": ent(lk[:, -1])}
        q = 0.5 * (lk[:, :, 0, 0] + lk[:, :, 1, 1])
        c = lk[:, :, 0, 1] / np.sqrt(lk[:, :, 0, 0] * lk[:, :, 1, 1])
        n = q.shape[0]
        return {"q": q.mean(0), "q_se": q.std(0, ddof=1) / math.sqrt(n),
                "c": c.mean(0), "c_se": c.std(0, ddof=1) / math.sqrt(n)}
    if kind == "optimal":
        from ..optimal_alpha import optimal_alpha

        r = optimal_alpha(_net(spec["net"]), spec["c0"], spec["q0"])
        return {"alpha": r.alpha, "S": r.sensitivity, "alpha_analytic": r.alpha_analytic,
                "T_star": r.T_star, "interior": r.interior, "message": r.message,
                "analytic_note": r.analytic_note}
    if kind == "umap":
        from ..universality import compute_point

        return compute_point(spec["point"], n_grid=spec["n"])
    if kind == "scan":
        r = _argmax_scan(_net(spec["net"]), spec["c0"], spec["q0"], spec["lo"], spec["hi"], spec["n"])
        r.update(alpha_analytic=math.nan, T_star=math.nan,
                 analytic_note=spec.get("analytic_note", "not computed"))
        return r
    if kind == "analytic":
        from ..optimal_alpha import analytic_alpha

        a, T, note = analytic_alpha(_net(spec["net"]), spec["c0"], spec["q0"])
        return {"alpha_analytic": a, "T_star": T, "note": note}
    if kind == "fw_kernel":
        from ..finite_width import finite_width

        r = finite_width(_net(spec["net"]), K0=two_input_kernel(spec["c0"], spec["q0"]))
        return {"K": np.asarray(r.kernel), "M": np.asarray(r.mean_shift), "V": np.asarray(r.covariance),
                "V_ind": np.asarray(r.covariance_independent)}
    if kind == "fw_sens":
        from ..finite_width import sensitivity_finite_width

        S = sensitivity_finite_width(_net(spec["net"]), spec["c0"], spec["q0"], spec["width"],
                                     np.asarray(spec["alphas"], dtype=float))
        return {"S": np.asarray(S, dtype=float)}
    if kind == "fw_optimal":
        from ..optimal_alpha import optimal_alpha

        r = optimal_alpha(_net(spec["net"]), spec["c0"], spec["q0"], width=spec["width"],
                          alpha_range=tuple(spec["range"]), n_grid=spec["n"])
        return {"alpha": r.alpha, "S": r.sensitivity, "interior": r.interior, "message": r.message}
    if kind == "sim_optimum":   # the CRN shift estimator of docs/theory.md Sec. 4.6.1
        from ..simulated_optimum import simulate_optimum

        r = simulate_optimum(_net(spec["net"]), spec["width"], spec["c0"], spec["q0"], n_networks=spec["networks"],
                             seed=spec["seed"], n_alpha=spec["n_alpha"], rel=spec["rel"], keep_samples=False)
        return r.to_dict()
    if kind == "fw_shift":      # the 1/N theory's shift of alpha*, on the same grid (Sec. 4.6.1)
        from ..simulated_optimum import predicted_shift

        p = predicted_shift(_net(spec["net"]), spec["c0"], spec["q0"], spec["widths"],
                            np.asarray(spec["alphas"], float), spec["alpha_inf"])
        return {"delta": np.asarray(p["delta"], float),
                "widths": {int(N): {k: (np.asarray(v, float) if k == "S_N" else float(v)) for k, v in w.items()}
                           for N, w in p["widths"].items()}}
    raise ValueError(f"unknown task kind {kind!r}")


def task_key(spec: dict) -> str:
    blob = json.dumps({"v": CACHE_VERSION, **spec}, sort_keys=True, default=float)
    return f"{spec['kind']}-{hashlib.sha1(blob.encode()).hexdigest()[:20]}"


class TaskRunner:
    """Runs lists of task specs through :func:`resscale.parallel.run_tasks` with a cache.

    ``computed`` / ``cached`` count the tasks run now and the ones loaded from ``DIR/cache``.
    """

    def __init__(self, cache_dir, workers: Optional[int] = None, scheduler=None, progress: bool = True):
        self.store = ChunkStore(cache_dir, format="pickle")
        self.workers, self.scheduler, self.progress = workers, scheduler, progress
        self.computed = 0
        self.cached = 0

    def run(self, specs: Sequence[dict], description: str = "tasks", weights=None) -> list:
        specs = list(specs)
        if not specs:
            return []
        keys = [task_key(s) for s in specs]
        # the same point requested twice (e.g. shared between figures): compute once
        uniq, idx = {}, []
        for k, s in zip(keys, specs):
            idx.append(uniq.setdefault(k, (len(uniq), s))[0])
        ukeys = list(uniq)
        uspecs = [uniq[k][1] for k in ukeys]
        uw = None
        if weights is not None:
            wmap = {}
            for k, w in zip(keys, weights):
                wmap[k] = w
            uw = [wmap[k] for k in ukeys]
        have = sum(k in self.store for k in ukeys)
        res = run_tasks(_run_task, uspecs, keys=ukeys, store=self.store, workers=self.workers,
                        scheduler=self.scheduler, progress=self.progress, description=description,
                        weights=uw)
        self.cached += have
        self.computed += len(ukeys) - have
        return [res[i] for i in idx]


def _sim_seed(cfg, *parts) -> int:
    h = hashlib.sha1(json.dumps([cfg.seed, *parts], default=str).encode()).hexdigest()
    return int(h[:8], 16)
