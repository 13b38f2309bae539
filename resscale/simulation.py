"""Monte-Carlo simulation of finite-width scaled ResNets (docs/simulation.md).

``simulate(net, width=N, n_networks=S, K0=... | X=...)`` draws S independent
networks of width N from the family of SPEC / :mod:`resscale.network`, pushes
the P inputs through each of them and returns a :class:`SimulationResult`
holding the empirical kernels

    Khat^l_ab = (1/N) sum_i h^l_ia h^l_ib       (uncentered, one per network)

at the output (``kernels``, shape (S, P, P)) and, on request, at every layer
(``layer_kernels``, shape (S, L+1, P, P)), plus, for two inputs, the
finite-width sensitivity d E[c^L] / d c^0 (``sensitivity=True``).

The two exact samplers (``method``: ``"gram"``, ``"weights"``) and the per-network random
streams that make results independent of chunking, workers and resuming are described in
:mod:`resscale.simulation_samplers`; this module holds :class:`SimulationResult` (estimators
and their standard errors) and the driver :func:`simulate` (validation, chunking, the resumable
store, workers).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np

from .inputs import (ParameterTypeError, as_finite_array, check_bool, check_choice, check_int,
                     check_memory, check_work, input_kernel)
from .network import ResNet
from .simulation_samplers import (  # noqa: F401  (re-exported: resscale.simulation.<name> still works)
    _check_finite_chunk, _gram_factor, _layer, _layer_block, _NumpyOps, _ops, _Plan, _sensitivity_samples,
    _simulate_chunk, _simulate_chunk_impl, _Tape, _TorchOps, _TorchStream, _two_input_params, kernel_factor)

BACKENDS = ("numpy", "torch")
METHODS = ("auto", "gram", "weights")
DTYPES = ("float64", "float32")
MEMORY_BUDGET = 256 * 2 ** 20  # bytes per chunk used to choose the default chunk_size
_FORMAT = "resscale.simulate/1"


# ============================================================== validation
def _check_int(name, value, lo=1):
    return check_int(name, value, lo=lo)


# ============================================================== the result
def _sem(x):
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    if n < 2:
        return np.full(x.shape[1:], np.nan)
    return x.std(axis=0, ddof=1) / math.sqrt(n)


@dataclass
class SimulationResult:
    """Kernels of S simulated networks, with estimators and their standard errors.

    Attributes
    ----------
    net, width, K0, seed, backend, dtype, method : the simulated setup
    kernels : (S, P, P) output kernels Khat^L, one per network
    layer_kernels : (S, L+1, P, P) or None   Khat^0..Khat^L (``all_layers=True``)
    sens_c : (S,) or None   per-network pathwise derivative d c^L/d c^0 (``sensitivity=True``)
    sens_K : (S, 2, 2) or None   per-network pathwise derivative d Khat^L/d c^0 (|c0| < 1)
    """

    net: ResNet
    width: int
    K0: np.ndarray
    kernels: np.ndarray
    layer_kernels: Optional[np.ndarray] = None
    sens_c: Optional[np.ndarray] = None
    sens_K: Optional[np.ndarray] = None
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float64"
    method: str = "gram"
    meta: dict = field(default_factory=dict)

    # ---- basic
    @property
    def n_networks(self) -> int:
        return int(self.kernels.shape[0])

    def _samples(self, layer):
        if layer is None:
            return self.kernels
        if self.layer_kernels is None:
            raise ValueError("layer kernels were not kept; simulate with all_layers=True")
        return self.layer_kernels[:, layer]

    def mean(self, layer=None) -> np.ndarray:
        """Estimate of E[Khat^l] (P, P) (output layer by default; ``layer=slice(None)`` for all)."""
        return self._samples(layer).mean(axis=0)

    def sem(self, layer=None) -> np.ndarray:
        """Standard error of :meth:`mean`: sample std (ddof=1) / sqrt(S)."""
        return _sem(self._samples(layer))

    def cov(self, layer=None, scaled=True) -> np.ndarray:
        """Sample covariance Cov(Khat_ab, Khat_cd), shape (..., P, P, P, P), ddof=1.

        ``scaled=True`` (default) multiplies by the width N, i.e. estimates
        N Cov = V + O(1/N) of SPEC (finite as N -> infinity).
        """
        x = self._samples(layer)
        dx = x - x.mean(axis=0)
        c = np.einsum("s...ab,s...cd->...abcd", dx, dx) / max(self.n_networks - 1, 1)
        return c * self.width if scaled else c

    def cov_sem(self, layer=None, scaled=True) -> np.ndarray:
        """Standard error of :meth:`cov` (delta method: std of the products (x-xbar)(y-ybar) / sqrt(S))."""
        x = self._samples(layer)
        dx = x - x.mean(axis=0)
        prod = np.einsum("s...ab,s...cd->s...abcd", dx, dx)
        se = _sem(prod)
        return se * self.width if scaled else se

    def correlations(self, layer=None) -> np.ndarray:
        """Per-network correlation matrices c_ab = Khat_ab / sqrt(Khat_aa Khat_bb)."""
        x = self._samples(layer)
        d = np.sqrt(np.diagonal(x, axis1=-2, axis2=-1))
        return x / (d[..., :, None] * d[..., None, :])

    # ---- sensitivity
    def sensitivity(self):
        """(estimate, standard error) of S_N = d E[c^L] / d c^0 (docs/simulation.md, Sec. 3)."""
        if self.sens_c is None:
            raise ValueError("no sensitivity samples; simulate two inputs with sensitivity=True")
        return float(self.sens_c.mean()), float(_sem(self.sens_c))

    def response(self):
        """(estimate, standard error) of d E[Khat^L] / d c^0, each (2, 2); needs |c0| < 1."""
        if self.sens_K is None:
            raise ValueError("no response samples; simulate two inputs with |c0| < 1 and sensitivity=True")
        return self.sens_K.mean(axis=0), _sem(self.sens_K)

    # ---- I/O
    def to_arrays(self) -> dict:
        return {k: getattr(self, k) for k in ("kernels", "layer_kernels", "sens_c", "sens_K")
                if getattr(self, k) is not None}

    def save(self, path) -> Path:
        from ._storage import save_npz_atomic

        meta = dict(self.meta, net=self.net.to_dict(), width=self.width, seed=self.seed,
                    backend=self.backend, dtype=self.dtype, method=self.method)
        arrays = dict(self.to_arrays(), K0=self.K0, meta=np.array(json.dumps(meta)))
        return save_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path) -> "SimulationResult":
        from ._storage import load_npz

        z = load_npz(path)
        meta = json.loads(str(z.pop("meta")))
        net = ResNet(**meta.pop("net"))
        return cls(net=net, width=meta.pop("width"), K0=z.pop("K0"), seed=meta.pop("seed"),
                   backend=meta.pop("backend"), dtype=meta.pop("dtype"), method=meta.pop("method"),
                   meta=meta, **z)

    def summary(self) -> str:
        m, e = self.mean(), self.sem()
        lines = [f"{self.n_networks} networks, width {self.width}, {self.net!r}",
                 "E[Khat^L] (+- SE):"]
        for a in range(m.shape[0]):
            lines.append("  " + "  ".join(f"{m[a, b]:.6g} +- {e[a, b]:.2g}" for b in range(m.shape[1])))
        if self.sens_c is not None:
            s, se = self.sensitivity()
            lines.append(f"d E[c^L]/d c^0 = {s:.6g} +- {se:.2g}")
        return "\n".join(lines)


# ============================================================== public entry
def default_chunk_size(net, width, P, method, all_layers=False, dtype="float64",
                       memory=MEMORY_BUDGET) -> int:
    """Networks per chunk so that one chunk's working memory stays below ``memory`` bytes."""
    item = np.dtype(dtype).itemsize
    K = P + 1
    if method == "weights":
        per = (width * width + 12 * width * K) * item
    else:
        per = (_layer_block(width, K, net.depth, True) * width * (K + 1) + 16 * width * K) * item
    if all_layers:
        per += (net.depth + 1) * P * P * 8
    return int(max(1, min(4096, memory // max(per, 1))))


def _resolve(net, width, n_networks, X, K0, seed, backend, dtype, method, all_layers,
             sensitivity, chunk_size, device):
    if not isinstance(net, ResNet):
        raise ParameterTypeError(f"net must be a resscale.ResNet, got {type(net).__name__}")
    width = _check_int("width", width)
    n_networks = _check_int("n_networks", n_networks)
    if isinstance(seed, (float, np.floating)) or seed is None:
        raise ParameterTypeError(f"seed must be a non-negative integer, got {seed!r}")
    seed = check_int("seed", seed, lo=0)
    check_choice("backend", backend, BACKENDS)
    dtype = np.dtype(dtype).name if isinstance(dtype, (type, np.dtype)) else dtype
    check_choice("dtype", dtype, DTYPES)
    check_choice("method", method, METHODS)
    all_layers = check_bool("all_layers", all_layers)
    sensitivity = check_bool("sensitivity", sensitivity)
    if device is not None and not isinstance(device, str):
        raise ParameterTypeError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    K0 = input_kernel(net, X=X, K0=K0)
    Xa = None if X is None else as_finite_array("X", X, ndim=2)
    P = K0.shape[0]
    if sensitivity:
        if X is not None or _two_input_params(K0) is None:
            raise ValueError("sensitivity=True needs K0 for two inputs of equal norm "
                             "(K0 = q0 [[1, c0], [c0, 1]], e.g. inputs.two_input_kernel(c0, q0))")
    if method == "auto":
        method = "gram" if P + 1 < width else "weights"
    if chunk_size is None:
        chunk_size = default_chunk_size(net, width, P, method, all_layers, dtype)
    chunk_size = _check_int("chunk_size", chunk_size)
    item = np.dtype(dtype).itemsize
    per_net = (width * width + 12 * width * (P + 1)) * item if method == "weights" else \
        (_layer_block(width, P + 1, net.depth, True) * width * (P + 2) + 16 * width * (P + 1)) * item
    # a lower bound of the work (each layer touches width (P + 1) numbers ~10 times): refuse runs of days
    check_work("n_networks (or width, depth)", 10 * n_networks * net.depth * width * (P + 1),
               f"simulate of {n_networks} networks of width {width} and depth {net.depth}")
    check_memory("chunk_size or width", min(chunk_size, n_networks) * per_net,
                 f"simulate: one chunk of {min(chunk_size, n_networks)} networks of width {width} ({method})")
    if all_layers:
        check_memory("n_networks or depth (or all_layers=False)", n_networks * (net.depth + 1) * P * P * 8.0,
                     f"simulate: all-layer kernels of {n_networks} networks, depth {net.depth}")
    if device is not None and backend != "torch":
        raise ValueError("device is only meaningful with backend='torch'")
    plan = _Plan(net=net, width=width, K0=K0, X=Xa,
                 seed=int(seed), backend=backend, dtype=dtype, method=method,
                 all_layers=bool(all_layers), sensitivity=bool(sensitivity),
                 device=None if device is None else str(device))
    return plan, n_networks, chunk_size


def _chunk_bounds(n, chunk):
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def _plan_meta(plan, chunk_size):
    return {"format": _FORMAT, "net": plan.net.to_dict(), "width": plan.width,
            "K0": plan.K0.tolist(), "X": None if plan.X is None else plan.X.tolist(),
            "seed": plan.seed, "backend": plan.backend, "dtype": plan.dtype,
            "method": plan.method, "all_layers": plan.all_layers,
            "sensitivity": plan.sensitivity, "device": plan.device, "chunk_size": chunk_size}


def _open_store(out, plan, chunk_size, chunk_given):
    """Create or reopen the run directory; refuse one that holds a different simulation."""
    from ._storage import ChunkStore, load_json, save_json_atomic

    out = Path(out)
    meta = _plan_meta(plan, chunk_size)
    mpath = out / "meta.json"
    if mpath.is_file():
        old = load_json(mpath)
        if not chunk_given:
            meta["chunk_size"] = chunk_size = old.get("chunk_size", chunk_size)
        diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        if diff:
            raise ValueError(f"out={str(out)!r} holds a different simulation (differs in: "
                             f"{', '.join(diff)}); use another directory")
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_json_atomic(mpath, meta)
    return ChunkStore(out / "chunks"), chunk_size


def simulate(net: ResNet, width: int, n_networks: int, X=None, K0=None, seed: int = 0,
             backend: str = "numpy", *, all_layers: bool = False, sensitivity: bool = False,
             dtype: str = "float64", method: str = "auto", chunk_size: Optional[int] = None,
             device: Optional[str] = None, workers: Optional[int] = 1, scheduler=None,
             out=None, progress: bool = False, _on_chunk=None) -> SimulationResult:
    """Simulate ``n_networks`` independent networks of width ``width``.

    Parameters
    ----------
    net : ResNet
    width : int >= 1              N
    n_networks : int >= 1         S (a run whose work estimate exceeds RESSCALE_MAX_WORK, default
                                  1e16 flop, is refused up front: inputs.WorkLimitError)
    X : (P, d) data through the random input layer, or
    K0 : (P, P) PSD input kernel: h^0_i ~ N(0, K0) i.i.d. over neurons (exactly one of X, K0)
    seed : int >= 0               network s uses SeedSequence(seed, spawn_key=(s,))
    backend : "numpy" | "torch"   torch uses CUDA when available (or ``device=``)
    all_layers : keep Khat^l for l = 0..L (``layer_kernels``)
    sensitivity : two inputs only: per-network d c^L/d c^0 (forward-mode tangent)
    dtype : "float64" (default) | "float32"
    method : "auto" | "gram" | "weights"   exact samplers, see :mod:`resscale.simulation_samplers`
    chunk_size : networks per batch (and per stored chunk); default from a 256 MiB budget
    workers : 1 (default, in-process) | None (all cores) | n processes
    scheduler : Dask scheduler address or Client (overrides ``workers``)
    out : directory: store chunks atomically and resume from them (see docs/simulation.md)
    progress : Rich progress bar on stderr
    """
    progress = check_bool("progress", progress)
    if workers is not None:
        workers = check_int("workers", workers, lo=1)
    plan, n_networks, chunk = _resolve(net, width, n_networks, X, K0, seed, backend, dtype,
                                       method, all_layers, sensitivity, chunk_size, device)
    store = None
    if out is not None:
        store, chunk = _open_store(out, plan, chunk, chunk_size is not None)
    bounds = _chunk_bounds(n_networks, chunk)
    from .parallel import run_tasks

    keys = [f"chunk_{a:010d}_{b:010d}" for a, b in bounds]
    chunks = run_tasks(partial(_simulate_chunk, plan), bounds, keys=keys, store=store,
                       workers=workers, scheduler=scheduler, progress=progress,
                       description="simulate", weights=[b - a for a, b in bounds],
                       on_result=_on_chunk)
    arrays = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    res = SimulationResult(net=net, width=plan.width, K0=plan.K0, seed=plan.seed,
                           backend=plan.backend, dtype=plan.dtype, method=plan.method,
                           meta={"chunk_size": chunk, "n_chunks": len(bounds)}, **arrays)
    if out is not None:
        res.save(Path(out) / "result.npz")
    return res
