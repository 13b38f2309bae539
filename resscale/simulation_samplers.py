"""The exact samplers of the Monte-Carlo simulator (:mod:`resscale.simulation`, docs/simulation.md).

One chunk of networks [start, stop) is simulated by :func:`_simulate_chunk` from a picklable
:class:`_Plan`; the NumPy and torch backends (``_NumpyOps``, ``_TorchOps``) give each network its
own random stream; :func:`kernel_factor` factors the input kernel K0 for the input layer.

Two exact samplers (``method``)
-------------------------------
* ``"weights"``: the literal network. Every W^l (N, N) is drawn, and
  h^l is computed by batched matmuls over the networks of a chunk.
* ``"gram"`` (the default for P + 1 < N): the same joint law of all hidden
  states, without ever forming W^l. W^l is used exactly once, on a matrix M
  (N, K) that is independent of it (M = phi(h^{l-1}) for the full and
  feed-forward blocks, M = h^{l-1} for the reduced block, plus the tangent
  column when the sensitivity is requested). Conditional on M, the rows of
  W^l M are i.i.d. N(0, sigma_w2/N M^T M). With R (K, K) any factor of the
  Gram matrix, R^T R = M^T M (modified Gram-Schmidt, robust to
  rank-deficient M such as coincident inputs), W^l M has exactly the law of
  G R with G (N, K) i.i.d. N(0, sigma_w2/N). The cost per layer falls from
  O(N^2) random numbers and O(N^2 K) flops to O(N K) and O(N K^2). This is
  not an approximation: the two methods sample the same distribution
  (tests/test_simulation.py checks means and N-scaled covariances against
  each other at small N).

Reproducibility
---------------
Network s (0-based) draws all of its randomness from its own stream,
``numpy.random.SeedSequence(seed, spawn_key=(s,))`` (the s-th child of
``SeedSequence(seed).spawn``), in a fixed order (input layer, then layer 1, 2,
...). Chunking, the number of workers and resuming therefore change nothing:
with the NumPy backend results are bit-identical for any ``chunk_size``. The
torch backend uses one ``torch.Generator`` per network seeded from the same
SeedSequence; it is reproducible for a fixed seed and device and agrees with
NumPy in distribution (not bit for bit).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from .network import ResNet


# ============================================================== input layer
def _two_input_params(K0):
    """(q0, c0) if K0 is a 2x2 kernel with equal positive diagonal, else None."""
    if K0.shape != (2, 2):
        return None
    q0 = float(K0[0, 0])
    if not q0 > 0 or not math.isclose(q0, float(K0[1, 1]), rel_tol=1e-12, abs_tol=0.0):
        return None
    return q0, float(np.clip(K0[0, 1] / q0, -1.0, 1.0))


def kernel_factor(K0) -> np.ndarray:
    """F (P, P) with F F^T = K0, for PSD (also singular) K0, so h^0 = Z F^T, Z i.i.d. N(0, 1).

    2x2 kernels with equal diagonal q0 and correlation c0 use the closed form
    sqrt(q0) [[1, 0], [c0, sqrt(1 - c0^2)]], continuous up to c0 = +-1 (the
    parametrisation the sensitivity estimator differentiates). Otherwise the
    Cholesky factor, or, for singular K0, a semi-definite Cholesky that zeroes
    the columns of vanishing pivots.
    """
    K0 = np.asarray(K0, dtype=float)
    two = _two_input_params(K0)
    if two is not None:
        q0, c0 = two
        return math.sqrt(q0) * np.array([[1.0, 0.0], [c0, math.sqrt(max(0.0, 1.0 - c0 * c0))]])
    try:
        return np.linalg.cholesky(K0)
    except np.linalg.LinAlgError:
        pass
    P = K0.shape[0]
    F = np.zeros_like(K0)
    tol = 1e-12 * max(float(np.max(np.abs(np.diag(K0)))), 1e-300)
    for j in range(P):
        d = K0[j, j] - F[j, :j] @ F[j, :j]
        if d > tol:
            F[j, j] = math.sqrt(d)
            F[j + 1:, j] = (K0[j + 1:, j] - F[j + 1:, :j] @ F[j, :j]) / F[j, j]
    return F


# ============================================================== backends
class _NumpyOps:
    name = "numpy"

    def __init__(self, dtype, device=None):
        self.dtype = np.dtype(dtype)
        self.eps = float(np.finfo(self.dtype).eps)

    def streams(self, seed, start, stop):
        """One Generator per network s: SeedSequence(seed, spawn_key=(s,))."""
        return [np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(int(i),))))
                for i in range(start, stop)]

    def normal(self, streams, shape):
        """(S, *shape) standard normals, network s's block from its own stream."""
        out = np.empty((len(streams),) + tuple(shape), dtype=self.dtype)
        for s, g in enumerate(streams):
            g.standard_normal(out=out[s], dtype=self.dtype)
        return out

    def asarray(self, a):
        return np.asarray(a, dtype=self.dtype)

    @staticmethod
    def numpy(a):
        return np.asarray(a, dtype=np.float64)

    matmul = staticmethod(np.matmul)
    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def concat(arrs):
        return np.concatenate(arrs, axis=-1)

    @staticmethod
    def stack(arrs, axis):
        return np.stack(arrs, axis=axis)

    @staticmethod
    def T(a):
        return np.swapaxes(a, -1, -2)

    @staticmethod
    def where(c, a, b):
        return np.where(c, a, b)

    @staticmethod
    def activation(phi):
        return phi.fn, phi.d1


class _TorchStream:
    """One torch.Generator per chunk, seeded from SeedSequence(seed, spawn_key=(start, stop))."""

    def __init__(self, gen, n):
        self.gen, self.n = gen, n

    def __len__(self):
        return self.n


class _TorchOps:
    name = "torch"

    def __init__(self, dtype, device=None):
        try:
            import torch
        except ImportError as exc:
            raise ImportError('backend="torch" needs PyTorch: pip install torch') from exc
        self.torch = torch
        threads = os.environ.get("RESSCALE_WORKER_THREADS")  # set in resscale.parallel workers
        if threads and torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[np.dtype(dtype).name]
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.eps = float(torch.finfo(self.dtype).eps)

    def streams(self, seed, start, stop):
        st = np.random.SeedSequence(seed, spawn_key=(int(start), int(stop))).generate_state(2, np.uint64)
        g = self.torch.Generator(device=self.device)
        g.manual_seed(int(st[0]) & 0x7FFF_FFFF_FFFF_FFFF)
        return _TorchStream(g, stop - start)

    def normal(self, streams, shape):
        return self.torch.randn((len(streams),) + tuple(shape), generator=streams.gen,
                                dtype=self.dtype, device=self.device)

    def asarray(self, a):
        return self.torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def numpy(self, a):
        return a.detach().to("cpu", self.torch.float64).numpy()

    def matmul(self, a, b):
        return self.torch.matmul(a, b)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def concat(self, arrs):
        return self.torch.cat(arrs, dim=-1)

    def stack(self, arrs, axis):
        return self.torch.stack(arrs, dim=axis)

    @staticmethod
    def T(a):
        return a.transpose(-1, -2)

    def where(self, c, a, b):
        return self.torch.where(c, a, b)

    def activation(self, phi):
        from .activations import BUILTIN

        t = self.torch
        c = 2.0 / math.sqrt(math.pi)
        table = {
            "erf": (t.special.erf, lambda u: c * t.exp(-u * u)),
            "tanh": (t.tanh, lambda u: 1.0 - t.tanh(u) ** 2),
            "relu": (t.relu, lambda u: (u > 0).to(u.dtype)),
            "linear": (lambda u: u, t.ones_like),
            "gelu": (lambda u: u * t.special.ndtr(u),
                     lambda u: t.special.ndtr(u) + u * t.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)),
        }
        if phi.name in BUILTIN and phi.fn is BUILTIN[phi.name]().fn:  # a built-in activation
            return table[phi.name]

        def wrap(f):  # a user callable: evaluated with NumPy on the host
            return lambda u: t.as_tensor(np.asarray(f(u.detach().cpu().numpy()), dtype=float),
                                         dtype=u.dtype, device=u.device)
        return wrap(phi.fn), wrap(phi.d1)


def _ops(backend, dtype, device=None):
    return (_NumpyOps if backend == "numpy" else _TorchOps)(dtype, device)


# ============================================================== the engine
@dataclass(frozen=True)
class _Plan:
    """Everything needed to simulate networks [start, stop) (picklable, sent to workers)."""

    net: ResNet
    width: int
    K0: np.ndarray
    X: Optional[np.ndarray]
    seed: int
    backend: str
    dtype: str
    method: str          # resolved: "gram" or "weights"
    all_layers: bool
    sensitivity: bool
    device: Optional[str] = None


def _gram_factor(ops, M):
    """R (S, K, K) upper triangular with R^T R = M^T M, by modified Gram-Schmidt over the batch.

    Columns that are (numerically) in the span of the previous ones get a zero
    pivot, so rank-deficient M (coincident inputs, dead relu units) is exact.
    """
    K = M.shape[-1]
    A = [M[..., k] for k in range(K)]  # (S, N) columns
    rows = []
    tol = 64 * K * ops.eps
    for j in range(K):
        norm0 = ops.sqrt((M[..., j] * M[..., j]).sum(-1))
        rjj = ops.sqrt((A[j] * A[j]).sum(-1))
        ok = rjj > tol * norm0
        zero = 0.0 * rjj
        rjj = ops.where(ok, rjj, zero)
        q = A[j] * ops.where(ok, 1.0 / ops.where(ok, rjj, zero + 1.0), zero)[:, None]
        row = [zero] * j + [rjj]
        for k in range(j + 1, K):
            rjk = (q * A[k]).sum(-1)
            A[k] = A[k] - rjk[:, None] * q
            row.append(rjk)
        rows.append(ops.stack(row, -1))
    return ops.stack(rows, -2)


class _Tape:
    """Gaussian draws of the gram method, pre-drawn ``block`` layers at a time.

    Each network's stream yields, in order, the input draw Z (N, P) and then
    per layer G^l (N, K) followed by b^l (N,) (if sigma_b2 > 0). NumPy streams
    give the same numbers however the draws are split, so the block size never
    changes a result; it depends on the plan only, which fixes torch's draws too.
    """

    def __init__(self, ops, streams, per_layer, depth, block):
        self.ops, self.streams, self.per, self.block = ops, streams, per_layer, block
        self.buf, self.pos, self.left = None, 0, depth

    def layer(self):
        if self.buf is None or self.pos >= self.buf.shape[1]:
            nb = min(self.block, self.left)
            self.buf = self.ops.normal(self.streams, (nb, self.per))
            self.pos, self.left = 0, self.left - nb
        self.pos += 1
        return self.buf[:, self.pos - 1]


def _layer_block(width, K, depth, bias):
    """Layers drawn per call in gram mode (a function of the plan only)."""
    per = width * (K + (1 if bias else 0))
    return int(max(1, min(depth, (1 << 20) // max(per, 1))))


def _layer(ops, plan, streams, M, tape):
    """(W^l M, b^l) for a fresh layer: Y (S, N, K), exact in law (see module docstring)."""
    N, K = plan.width, M.shape[-1]
    scale = math.sqrt(plan.net.sigma_w2 / N)
    sb = math.sqrt(plan.net.sigma_b2)
    if plan.method == "weights":
        W = ops.normal(streams, (N, N))
        b = 0.0 if sb == 0.0 else ops.normal(streams, (N, 1)) * sb
        return ops.matmul(W, M) * scale, b
    R = _gram_factor(ops, M)
    draw = tape.layer()
    S = draw.shape[0]
    G = draw[:, : N * K].reshape(S, N, K)
    b = 0.0 if sb == 0.0 else draw[:, N * K:].reshape(S, N, 1) * sb
    return ops.matmul(G, R) * scale, b


def _simulate_chunk(plan: _Plan, bounds) -> dict:
    """Simulate networks start..stop-1; returns a dict of float64 arrays (a chunk).

    Raises OverflowError (naming alpha and depth) if a kernel is not finite.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _simulate_chunk_impl(plan, bounds)


def _simulate_chunk_impl(plan: _Plan, bounds) -> dict:
    start, stop = bounds
    ops = _ops(plan.backend, plan.dtype, plan.device)
    net, N = plan.net, plan.width
    streams = ops.streams(plan.seed, start, stop)
    P = plan.K0.shape[0]
    fn, d1 = ops.activation(net.phi)

    # ---- input layer
    dh = None
    if plan.X is not None and plan.method == "weights":
        d = plan.X.shape[1]
        W0 = ops.normal(streams, (N, d)) * math.sqrt(net.sigma_in2 / d)
        h = ops.matmul(W0, ops.asarray(plan.X.T))
        if net.sigma_bin2 > 0:
            h = h + ops.normal(streams, (N, 1)) * math.sqrt(net.sigma_bin2)
    else:  # h^0_i ~ N(0, K0) i.i.d.: the law of W^0 x + b^0 for data X
        Z = ops.normal(streams, (N, P))
        h = ops.matmul(Z, ops.asarray(kernel_factor(plan.K0).T))
        if plan.sensitivity:
            q0, c0 = _two_input_params(plan.K0)
            if abs(c0) < 1.0:  # d h^0_b / d c0 of h^0_b = sqrt(q0)(c0 z1 + sqrt(1-c0^2) z2)
                dF = math.sqrt(q0) * np.array([[1.0], [-c0 / math.sqrt(1.0 - c0 * c0)]])
            else:             # |c0| = 1: direction d h^0_b / d theta with c0 = cos(theta)
                dF = math.sqrt(q0) * np.array([[0.0], [1.0]])
            dh = ops.matmul(Z, ops.asarray(dF))  # (S, N, 1)

    K = P + (0 if dh is None else 1)
    tape = None
    if plan.method == "gram":
        bias = net.sigma_b2 > 0
        draws = net.depth * net.block_type.draws_per_layer
        tape = _Tape(ops, streams, N * (K + (1 if bias else 0)), draws, _layer_block(N, K, draws, bias))

    def kern(hh):
        return ops.numpy(ops.matmul(ops.T(hh), hh)) / N

    layers = [kern(h)] if plan.all_layers else None
    block = net.block_type
    layer = partial(_layer, ops, plan, streams, tape=tape)
    for _ in range(net.depth):  # the block's own layer (resscale.blocks), one or two Gaussian draws
        h, dh = block.simulate_layer(layer, fn, d1, h, dh, net.alpha, P)
        if layers is not None:
            layers.append(kern(h))

    out = {"kernels": kern(h)}
    _check_finite_chunk(plan, out["kernels"], start, stop)
    if layers is not None:
        out["layer_kernels"] = np.stack(layers, axis=1)
    if dh is not None:
        out.update(_sensitivity_samples(plan, ops.numpy(h), ops.numpy(dh)[..., 0]))
    return out


def _check_finite_chunk(plan, kernels, start, stop):
    """Raise OverflowError naming alpha/depth when a simulated kernel left the float range."""
    if np.all(np.isfinite(kernels)):
        return
    net = plan.net
    bad = int(np.argmax(~np.all(np.isfinite(kernels.reshape(kernels.shape[0], -1)), axis=1))) + start
    raise OverflowError(f"simulate: the hidden states of network {bad} overflow {plan.dtype} (the kernel "
                        f"is not finite) at alpha = {net.alpha:g}, depth = {net.depth}, sigma_w2 = "
                        f"{net.sigma_w2:g}, activation {net.phi.name}; reduce alpha or depth, or the input scale")


def _sensitivity_samples(plan, h, d):
    """Per-network d c^L/d c^0 and d Khat^L/d c^0 from the forward tangent (docs/simulation.md)."""
    ha, hb = h[..., 0], h[..., 1]
    N = plan.width
    kaa, kbb, kab = (ha * ha).sum(-1) / N, (hb * hb).sum(-1) / N, (ha * hb).sum(-1) / N
    _, c0 = _two_input_params(plan.K0)
    if abs(c0) < 1.0:
        dab, dbb = (ha * d).sum(-1) / N, 2.0 * (hb * d).sum(-1) / N
        cL = kab / np.sqrt(kaa * kbb)
        dc = dab / np.sqrt(kaa * kbb) - 0.5 * cL * dbb / kbb
        dK = np.zeros(kaa.shape + (2, 2))
        dK[:, 0, 1] = dK[:, 1, 0] = dab
        dK[:, 1, 1] = dbb
        return {"sens_c": dc, "sens_K": dK}
    # c0 = +-1: second-order limit, d c^L/d c^0 = |P_perp(h_b) delta|^2 / |h_b|^2
    nb = (hb * hb).sum(-1)
    perp = (d * d).sum(-1) - (hb * d).sum(-1) ** 2 / nb
    return {"sens_c": perp / nb}
