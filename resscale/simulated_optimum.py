"""Simulated finite-width optimum alpha*(N) with common random numbers (docs/theory.md Sec. 4.6.1).

``simulate_optimum(net, width, c0)`` measures the shift of the optimal residual scaling,
alpha*(N) - alpha*_inf, by Monte Carlo, and compares it with the 1/N theory
(:func:`resscale.sensitivity_finite_width`, Eq. 4.29a). Ingredients:

* **Common random numbers (CRN).** Every network s is simulated at all alphas of a dense grid
  around the mean-field optimum with the *same* Gaussian seeds: the input draw Z and the layer
  draws G^l of the exact gram sampler of :mod:`resscale.simulation` (the particle coupling
  xi^l_i = C^{1/2} e^l_i of theory Sec. 4.2). They are taken from the same per-network
  streams in the same order as ``rs.simulate(net.replace(alpha=a), ..., seed=seed,
  sensitivity=True)``, so network s at alpha a *is* network s of that call (tested to 1e-12).
  Each network's sensitivity curve Y_s(alpha) = d c_hat^L / d c^0 (the forward-mode pathwise
  derivative of simulation.py) is then a smooth function of alpha.
* **Slope and curvature per network.** A least-squares polynomial (degree ``degree``) in
  x = alpha - alpha*_inf over the grid gives linear functionals l1, l2 of the grid values
  (first and second derivative at alpha*_inf); b_s = l1 . Y_s, c_s = l2 . Y_s.
* **Exact mean-field part.** S_inf is known exactly, so D = dS_N/dalpha(alpha*_inf) is
  estimated as mean(b) - l1 . S_inf(grid) + S_inf'(alpha*_inf) (the polynomial truncation then
  acts on delta(alpha)/N only), and the curvature as mean(c) - l2 . S_inf(grid) + S_inf''.
* **Control variates with exact mean zero.** Per layer, the martingale differences of the
  Gaussian layer (conditionally on the past, E[.] = 0 exactly): F1 = H^T Y / N (H = [h, dh]
  the residual stream at block entry, Y = W M + b the layer's Gaussian output) and
  F2 = Y^T Y / N - (sigma_w2/N M^T M + sigma_b2 e e^T); aggregated over layers with Legendre
  weights P_k((l + 1/2)/L), k < ``n_poly``; plus the input-layer deviation
  [h^0, dh^0]^T [h^0, dh^0] / N - its exact mean (the linearised "mean-field value at the
  network's own input kernel"). Their coefficients are fitted by least squares with 2-fold
  cross-fitting, so the adjusted estimators stay exactly unbiased.
* **Shift.** Delta = -D / S_N''(alpha*_inf) (one Newton step from alpha*_inf; the next term is
  O(Delta^2 S'''/S'') ~ 1e-7 here); SE by the delta method from the network-level covariance
  of the adjusted (b, c).

Everything is float64 and reproducible for a fixed ``seed`` (chunking changes nothing).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .inputs import check_int, check_real, two_input_kernel
from .network import ResNet
from .simulation_samplers import _NumpyOps, _Tape, _gram_factor, _layer_block, kernel_factor

__all__ = ["crn_chunk", "simulate_optimum", "OptimumResult", "predicted_shift", "fig6_data",
           "poly_functionals", "cv_estimate", "shift_estimate", "default_grid", "networks_to_resolve"]


# ============================================================== CRN sampler
def _input_maps(c0, q0):
    """B (2, 3) with [h^0, dh^0] = Z B, Z (N, 2) i.i.d. N(0, 1); dh^0 = d h^0_b / d c0."""
    F = kernel_factor(two_input_kernel(c0, q0))
    dF = math.sqrt(q0) * np.array([[1.0], [-c0 / math.sqrt(1.0 - c0 * c0)]])
    return np.concatenate([F.T, dF], axis=1)


def _upper(a):
    """Upper triangle (incl. diagonal) of (..., 3, 3) as (..., 6)."""
    i, j = np.triu_indices(a.shape[-1])
    return a[..., i, j]


def _legendre(k, x):
    return np.polynomial.legendre.legval(2.0 * x - 1.0, [0.0] * k + [1.0])


FEATURE_SETS = ("kernel", "rich")


def _weights(fn, d1, H, rich):
    """Per-neuron F_{l-1}-measurable weights multiplying the layer output in F1 = weights^T Y / N."""
    if not rich:
        return H
    ha, hb, dh = H[..., 0:1], H[..., 1:2], H[..., 2:3]
    pa, pb, qa, qb = fn(ha), fn(hb), d1(ha), d1(hb)
    return np.concatenate([H, pa, pb, qa * pa, qb * pb, qa * pb, pa * qb, qb * dh], axis=-1)


def n_features(net, n_poly=3, feature_set="kernel") -> int:
    """Number of control-variate features per alpha: input layer 6, per draw (3 k + 6) x n_poly
    with k = 3 weights ([h, dh], "kernel") or 10 ("rich": also phi, phi' phi, ... of the stream)."""
    k = 3 if feature_set == "kernel" else 10
    return 6 + net.block_type.draws_per_layer * (3 * k + 6) * n_poly


def crn_chunk(net: ResNet, width: int, c0: float, q0: float, alphas, seed: int, start: int, stop: int,
              features: bool = True, n_poly: int = 3, feature_set: str = "kernel") -> dict:
    """Networks start..stop-1 at every alpha with common random numbers.

    Returns ``Y`` (S, A): per-network pathwise d c_hat^L / d c^0 at each alpha (exactly the
    ``sens_c`` of ``rs.simulate(net.replace(alpha=a), width, K0=two_input_kernel(c0, q0),
    seed=seed, sensitivity=True)`` for network start + s), and with ``features`` ``X``
    (S, A, p): the exact-mean-zero control-variate features (module docstring).
    """
    alphas = np.asarray(alphas, dtype=float)
    A, N, P, K = alphas.size, int(width), 2, 3
    if not N > K:
        raise ValueError(f"simulate_optimum needs width > 3 (the gram sampler), got {N}")
    if not abs(c0) < 1.0:
        raise ValueError("simulate_optimum needs |c0| < 1")
    ops = _NumpyOps("float64")
    streams = ops.streams(seed, start, stop)
    S = stop - start
    block = net.block_type
    fn, d1 = net.phi.fn, net.phi.d1
    B = _input_maps(c0, q0)
    Z = ops.normal(streams, (N, P))
    H0 = Z @ B  # (S, N, 3): h_a, h_b, dh_b
    bias = net.sigma_b2 > 0
    draws = net.depth * block.draws_per_layer
    tape = _Tape(ops, streams, N * (K + (1 if bias else 0)), draws, _layer_block(N, K, draws, bias))
    scale = math.sqrt(net.sigma_w2 / N)
    sb = math.sqrt(net.sigma_b2)
    dpl = block.draws_per_layer
    rich = feature_set == "rich"
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {FEATURE_SETS}, got {feature_set!r}")
    nf = (30 if rich else 9) + 6
    acc = np.zeros((S, A, dpl, n_poly, nf)) if features else None
    e = np.array([1.0, 1.0, 0.0])
    state = {"d": 0, "H": None}

    def layer(M):
        R = _gram_factor(ops, M.reshape(S * A, N, K)).reshape(S, A, K, K)
        draw = tape.layer()
        G = draw[:, : N * K].reshape(S, 1, N, K)
        Y = np.matmul(G, R) * scale
        b = 0.0 if sb == 0.0 else draw[:, N * K:].reshape(S, 1, N, 1) * sb
        if features:
            d = state["d"]
            Yt = Y + (b * e if sb else 0.0)
            H = state["H"]
            f1 = (np.swapaxes(H, -1, -2) @ Yt / N).reshape(S, A, nf - 6)
            f2 = np.swapaxes(Yt, -1, -2) @ Yt / N - (net.sigma_w2 / N) * (np.swapaxes(M, -1, -2) @ M) \
                - net.sigma_b2 * np.outer(e, e)
            f = np.concatenate([f1 * math.sqrt(N), _upper(f2) * N], axis=-1)
            x = (d // dpl + 0.5) / net.depth
            for k in range(n_poly):
                acc[:, :, d % dpl, k] += _legendre(k, x) * f
            state["d"] = d + 1
        return Y, b

    h = np.repeat(H0[:, None, :, :P], A, axis=1)
    dh = np.repeat(H0[:, None, :, P:], A, axis=1)
    al = alphas[None, :, None, None]
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(net.depth):
            if features:
                state["H"] = _weights(fn, d1, np.concatenate([h, dh], axis=-1), rich)
            h, dh = block.simulate_layer(layer, fn, d1, h, dh, al, P)
    ha, hb, d = h[..., 0], h[..., 1], dh[..., 0]
    kaa, kbb, kab = (ha * ha).sum(-1) / N, (hb * hb).sum(-1) / N, (ha * hb).sum(-1) / N
    dab, dbb = (ha * d).sum(-1) / N, 2.0 * (hb * d).sum(-1) / N
    cL = kab / np.sqrt(kaa * kbb)
    out = {"Y": dab / np.sqrt(kaa * kbb) - 0.5 * cL * dbb / kbb}
    if not np.all(np.isfinite(out["Y"])):
        raise OverflowError(f"simulate_optimum: non-finite sensitivity (alpha up to {alphas.max():g}, "
                            f"depth {net.depth}); reduce alpha or depth")
    if features:
        K0t = np.swapaxes(H0, -1, -2) @ H0 / N - B.T @ B
        f0 = _upper(K0t) * math.sqrt(N)
        out["X"] = np.concatenate([np.repeat(f0[:, None], A, axis=1), acc.reshape(S, A, -1)], axis=-1)
    return out


# ============================================================== estimator pieces
def poly_functionals(x, degree):
    """(l1, l2): rows with l1 . y = p'(0), l2 . y = p''(0) of the LS polynomial p of ``degree``
    through (x_j, y_j)."""
    x = np.asarray(x, float)
    s = max(np.max(np.abs(x)), 1e-300)
    V = np.vander(x / s, degree + 1, increasing=True)
    pinv = np.linalg.pinv(V)
    return pinv[1] / s, 2.0 * pinv[2] / s ** 2


class _Moments:
    """Per-fold uncentered moment matrices of Z = [1, targets, features] (exact sufficient statistics)."""

    def __init__(self, nt, nx, folds=2):
        self.nt, self.nx, self.folds = nt, nx, folds
        self.M = np.zeros((folds, 1 + nt + nx, 1 + nt + nx))

    def add(self, T, X, index):
        Zm = np.concatenate([np.ones((T.shape[0], 1)), T, X], axis=1)
        for f in range(self.folds):
            z = Zm[index % self.folds == f]
            self.M[f] += z.T @ z


def cv_estimate(mom: _Moments, use_cv: bool = True, ridge: float = 1e-10):
    """(means (nt,), covariance of the means (nt, nt), R^2 per target) with 2-fold cross-fitted
    control variates (the coefficients of fold f are fitted on the other fold, so every adjusted
    value has exactly the mean of its target)."""
    nt, nx = mom.nt, mom.nx
    sums, n_f, betas = [], [], []
    for f in range(mom.folds):
        M = mom.M[f]
        n = M[0, 0]
        mean = M[0] / n
        C = M[1:, 1:] / n - np.outer(mean[1:], mean[1:])
        n_f.append(n)
        sums.append((n, mean, C))
    tot = sum(n_f)
    est = np.zeros(nt)
    cov_between = np.zeros((nt, nt))
    var_raw = np.zeros(nt)
    r2 = np.zeros(nt)
    for f in range(mom.folds):
        n, mean, C = sums[f]
        Ctt, Ctx, Cxx = C[:nt, :nt], C[:nt, nt:], C[nt:, nt:]
        mt, mx = mean[1:1 + nt], mean[1 + nt:]
        if use_cv and nx:
            o = [g for g in range(mom.folds) if g != f]
            Co = sum(sums[g][0] * sums[g][2] for g in o) / sum(sums[g][0] for g in o)
            Cxx_o, Cxt_o = Co[nt:, nt:], Co[nt:, :nt]
            sd = np.sqrt(np.maximum(np.diag(Cxx_o), 1e-300))
            Cs = Cxx_o / np.outer(sd, sd) + ridge * np.eye(nx)
            beta = np.linalg.solve(Cs, Cxt_o / sd[:, None]) / sd[:, None]  # (nx, nt)
        else:
            beta = np.zeros((nx, nt))
        adj_mean = mt - beta.T @ mx
        adj_cov = Ctt - beta.T @ Ctx.T - Ctx @ beta + beta.T @ Cxx @ beta
        est += n * adj_mean / tot
        cov_between += n * adj_cov / tot  # within-fold covariance of the adjusted values
        var_raw += n * np.diag(Ctt) / tot
        betas.append(beta)
    # covariance of the overall mean (folds pooled; fold means differ by O(SE) only)
    cov_mean = cov_between / tot
    r2 = 1.0 - np.diag(cov_between) / np.maximum(var_raw, 1e-300)
    return est, cov_mean, r2


def shift_estimate(mom: _Moments, A: int, corr_b: float = 0.0, corr_c: float = 0.0, use_cv: bool = True):
    """The shift from accumulated moments of T = [Y_1..Y_A, b, c] (and features).

    ``corr_b``, ``corr_c``: exact corrections added to mean(b), mean(c) (S_inf' - l1 . S_inf,
    S_inf'' - l2 . S_inf). Returns (means, cov of means, R^2, D, C, Var D, Var C, shift = -D/C,
    its delta-method SE, its O(1/n) ratio bias -D Var C / C^3 + Cov(D, C) / C^2).
    """
    est, cov, r2 = cv_estimate(mom, use_cv=use_cv)
    b, c = est[A] + corr_b, est[A + 1] + corr_c
    vb, vc, vbc = cov[A, A], cov[A + 1, A + 1], cov[A, A + 1]
    shift = -b / c
    g = np.array([-1.0 / c, b / c ** 2])
    Cbc = np.array([[vb, vbc], [vbc, vc]])
    se = float(math.sqrt(max(g @ Cbc @ g, 0.0)))
    bias = float(-b * vc / c ** 3 + vbc / c ** 2)
    return est, cov, r2, b, c, vb, vc, shift, se, bias


# ============================================================== theory
def _mean_field_curve(net, c0, q0, alphas, a_inf):
    from .sensitivity import sensitivity

    S = np.asarray(sensitivity(net, c0, q0, alphas=np.asarray(alphas, float)), float)
    h = 2e-3 * a_inf
    s3 = np.asarray(sensitivity(net, c0, q0, alphas=np.array([a_inf - h, a_inf, a_inf + h])), float)
    return S, (s3[2] - s3[0]) / (2 * h), (s3[2] - 2 * s3[1] + s3[0]) / h ** 2


def predicted_shift(net, c0, q0, widths, alphas, a_inf, degree=4, S_inf=None, d2S=None, **kw):
    """1/N theory on the grid: delta(alpha_j) (Eq. 4.29a, exact per alpha) and, per width N, the
    shift -(l1 . delta / N) / (S_inf'' + l2 . delta / N) (the same local estimator as the
    simulation, applied to the theory) and the argmax of S_inf + delta/N on a fine grid
    (polynomial interpolation of delta). Also the library's ``optimal_alpha(width=N)``."""
    from .finite_width.sensitivity import sensitivity_correction
    from .optimal_alpha import optimal_alpha
    from .sensitivity import sensitivity

    alphas = np.asarray(alphas, float)
    delta = np.atleast_1d(np.asarray(sensitivity_correction(net, c0, q0, alphas=alphas, **kw), float))
    x = alphas - a_inf
    l1, l2 = poly_functionals(x, degree)
    if S_inf is None or d2S is None:
        S_inf, _, d2S = _mean_field_curve(net, c0, q0, alphas, a_inf)
    coef = np.polyfit(x, delta, min(degree, alphas.size - 1))
    fine = np.linspace(alphas[0], alphas[-1], 4001)
    S_fine = np.asarray(sensitivity(net, c0, q0, alphas=fine), float)
    out = {"delta": delta, "widths": {}}
    for N in widths:
        d1, dd2 = float(l1 @ delta) / N, float(l2 @ delta) / N
        SN = S_fine + np.polyval(coef, fine - a_inf) / N
        k = int(np.argmax(SN))
        try:
            lib = float(optimal_alpha(net, c0=c0, q0=q0, width=int(N)).alpha) - a_inf
        except Exception:  # pragma: no cover - theory unavailable
            lib = math.nan
        if 0 < k < fine.size - 1:  # parabolic refinement of the fine-grid argmax
            y0, y1, y2 = SN[k - 1:k + 2]
            a_arg = fine[k] + 0.5 * (fine[1] - fine[0]) * (y0 - y2) / (y0 - 2 * y1 + y2)
        else:
            a_arg = math.nan
        out["widths"][int(N)] = {"shift": -d1 / (d2S + dd2), "shift_argmax": a_arg - a_inf,
                                 "shift_library": lib, "dS_dalpha": d1, "d2S": d2S + dd2,
                                 "S_N": S_inf + delta / N}
    return out


# ============================================================== the result
def networks_to_resolve(n_networks, shift_se, target, z=1.0) -> float:
    """Networks that would bring the SE of a shift measured with ``shift_se`` from ``n_networks``
    down to |target| / z (SE ~ n^-1/2); inf for a zero target."""
    return float(n_networks) * (z * shift_se / abs(target)) ** 2 if target else math.inf


@dataclass
class OptimumResult:
    """Simulated S_N(alpha) on a CRN grid and the finite-width shift of alpha* (Sec. 4.6.1).

    alphas (A,), S (A,), S_se (A,) : CV-adjusted S_N(alpha_j) and SEs (S_raw, S_raw_se without CV)
    S_cov (A, A) : covariance of the S estimates (CRN: strongly correlated)
    S_inf (A,), alpha_inf : exact mean field
    slope, slope_se : dS_N/dalpha at alpha*_inf;  curv, curv_se : S_N'' there
    shift, shift_se : alpha*(N) - alpha*_inf = -slope/curv (delta method SE), ratio_bias its
      leading O(1/n) bias; shift_mf, shift_mf_se with the exact S_inf'' as denominator
    shift_raw, shift_raw_se, shift_raw_mf, shift_raw_mf_se : the same without control variates
    r2 : fraction of variance removed by the control variates (per target: grid, slope, curv)
    kurtosis : excess kurtosis of the raw per-network Y(alpha*_inf), slope b_s and curvature c_s
    n_networks, cpu_s, samples : raw per-network targets (n, A + 2) when kept
    """

    net: ResNet
    width: int
    c0: float
    q0: float
    alphas: np.ndarray
    alpha_inf: float
    S: np.ndarray
    S_se: np.ndarray
    S_cov: np.ndarray
    S_raw: np.ndarray
    S_raw_se: np.ndarray
    S_inf: np.ndarray
    slope: float
    slope_se: float
    curv: float
    curv_se: float
    shift: float
    shift_se: float
    ratio_bias: float
    shift_mf: float
    shift_mf_se: float
    shift_raw: float
    shift_raw_se: float
    shift_raw_mf: float
    shift_raw_mf_se: float
    r2: np.ndarray
    kurtosis: dict
    n_networks: int
    cpu_s: float
    seed: int
    degree: int
    samples: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

    @property
    def alpha_star(self) -> float:
        return self.alpha_inf + self.shift

    def networks_to_resolve(self, target, z=1.0) -> float:
        """Networks for SE(shift_mf) = |target| / z (the reported estimator; SE ~ n^-1/2)."""
        return networks_to_resolve(self.n_networks, self.shift_mf_se, target, z)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("width", "c0", "q0", "alpha_inf", "slope", "slope_se", "curv",
                                           "curv_se", "shift", "shift_se", "ratio_bias", "shift_mf",
                                           "shift_mf_se", "shift_raw", "shift_raw_se", "shift_raw_mf",
                                           "shift_raw_mf_se", "n_networks",
                                           "cpu_s", "seed", "degree")}
        for k in ("alphas", "S", "S_se", "S_raw", "S_raw_se", "S_inf", "r2"):
            d[k] = np.asarray(getattr(self, k)).tolist()
        d["kurtosis"] = dict(self.kurtosis)
        d["alpha_star"] = self.alpha_star
        d["net"] = self.net.to_dict()
        d.update(self.meta)
        return d


def _kurt(x):
    x = np.asarray(x, float)
    d = x - x.mean()
    v = np.mean(d * d)
    return float(np.mean(d ** 4) / v ** 2 - 3.0) if v > 0 else math.nan


def default_grid(a_inf, n_alpha=9, rel=0.1):
    """Equally spaced alphas in [1 - rel, 1 + rel] alpha*_inf (odd ``n_alpha`` includes alpha*_inf)."""
    return a_inf * (1.0 + np.linspace(-rel, rel, n_alpha))


def simulate_optimum(net: ResNet, width: int, c0: float, q0: float = 1.0, alphas=None, n_networks: int = 4096,
                     seed: int = 0, chunk: Optional[int] = None, degree: int = 4, n_alpha: int = 9,
                     rel: float = 0.1, control_variates: bool = True, n_poly: int = 3,
                     feature_set: str = "kernel", keep_samples: bool = True, progress: Optional[Callable] = None) -> OptimumResult:
    """Measure S_N(alpha) on a CRN grid and the finite-width shift alpha*(N) - alpha*_inf.

    Parameters
    ----------
    net : ResNet (its alpha is ignored)
    width : N > 3; c0 in (-1, 1); q0 > 0
    alphas : grid (default: ``n_alpha`` equally spaced in [1 - rel, 1 + rel] alpha*_inf, which
      must contain alpha*_inf for the shift to be a local expansion)
    n_networks, seed : network s draws from SeedSequence(seed, spawn_key=(s,)), as rs.simulate
    chunk : networks per batch (default: ~8 MB of hidden states)
    degree : degree of the local polynomial giving slope and curvature at alpha*_inf
    control_variates : use the exact-mean-zero martingale features (cross-fitted)
    n_poly, feature_set : Legendre weights per feature over the layers; "kernel" (F1 with the
      weights [h, dh]) or "rich" (also phi(h), phi'(h) phi(h), ...: ~1.3x less residual variance
      at N = 32-128, L = 30, at ~1.5x the cost)
    progress : optional callable(done, total)
    """
    from .optimal_alpha import optimal_alpha

    if not isinstance(net, ResNet):
        raise TypeError("net must be a resscale.ResNet")
    width = check_int("width", width, lo=4)
    n_networks = check_int("n_networks", n_networks, lo=4)
    seed = check_int("seed", seed, lo=0)
    c0 = check_real("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_real("q0", q0, lo=0.0, strict_lo=True)
    if not abs(c0) < 1.0:
        raise ValueError("simulate_optimum needs |c0| < 1 (the pathwise d c_hat/d c0 of simulation.py)")
    a_inf = float(optimal_alpha(net, c0=c0, q0=q0).alpha)
    if not math.isfinite(a_inf):
        raise ValueError("the mean-field sensitivity has no interior maximum: no alpha* to shift")
    alphas = default_grid(a_inf, n_alpha, rel) if alphas is None else np.asarray(alphas, float)
    A = alphas.size
    if A < degree + 1:
        raise ValueError(f"need at least degree + 1 = {degree + 1} alphas, got {A}")
    x = alphas - a_inf
    l1, l2 = poly_functionals(x, degree)
    if chunk is None:
        chunk = int(max(8, min(1024, 2 ** 20 // (A * width * 3))))
    chunk = check_int("chunk", chunk, lo=1)
    nx = 3 * n_features(net, n_poly, feature_set) if control_variates else 0
    mom = _Moments(A + 2, nx)
    samples = np.empty((n_networks, A + 2)) if keep_samples else None
    raw_stats = []
    cpu0, wall0 = time.process_time(), time.time()
    j0 = int(np.argmin(np.abs(x)))
    for start in range(0, n_networks, chunk):
        stop = min(start + chunk, n_networks)
        out = crn_chunk(net, width, c0, q0, alphas, seed, start, stop, features=control_variates,
                        n_poly=n_poly, feature_set=feature_set)
        Y = out["Y"]
        T = np.concatenate([Y, (Y @ l1)[:, None], (Y @ l2)[:, None]], axis=1)
        if control_variates:
            Xa = out["X"]
            X = np.concatenate([Xa[:, j0], np.einsum("j,sjp->sp", l1, Xa), np.einsum("j,sjp->sp", l2, Xa)],
                               axis=1)
        else:
            X = np.zeros((T.shape[0], 0))
        mom.add(T, X, np.arange(start, stop))
        if samples is not None:
            samples[start:stop] = T
        else:
            raw_stats.append(T[:, [j0, A, A + 1]])
        if progress is not None:
            progress(stop, n_networks)
    cpu = time.process_time() - cpu0
    S_inf, dS, d2S = _mean_field_curve(net, c0, q0, alphas, a_inf)
    corr_b = -float(l1 @ S_inf) + dS        # exact mean-field correction of the polynomial slope
    corr_c = -float(l2 @ S_inf) + d2S

    est, cov, r2, b, c, vb, vc, shift, se, bias = shift_estimate(mom, A, corr_b, corr_c, control_variates)
    est0, cov0, _, b0, c0_, _, _, shift0, se0, _ = shift_estimate(mom, A, corr_b, corr_c, False)
    kt = samples[:, [j0, A, A + 1]] if samples is not None else np.concatenate(raw_stats)
    kurt = {"Y_at_alpha_inf": _kurt(kt[:, 0]), "slope": _kurt(kt[:, 1]), "curv": _kurt(kt[:, 2])}
    return OptimumResult(
        net=net, width=width, c0=c0, q0=q0, alphas=alphas, alpha_inf=a_inf,
        S=est[:A], S_se=np.sqrt(np.diag(cov)[:A]), S_cov=cov[:A, :A], S_raw=est0[:A],
        S_raw_se=np.sqrt(np.diag(cov0)[:A]), S_inf=S_inf, slope=float(b), slope_se=float(math.sqrt(vb)),
        curv=float(c), curv_se=float(math.sqrt(vc)), shift=float(shift), shift_se=se, ratio_bias=bias,
        shift_mf=float(-b / d2S), shift_mf_se=float(math.sqrt(vb) / abs(d2S)),
        shift_raw=float(shift0), shift_raw_se=float(se0), shift_raw_mf=float(-b0 / d2S),
        shift_raw_mf_se=float(math.sqrt(cov0[A, A]) / abs(d2S)), r2=r2, kurtosis=kurt, n_networks=n_networks,
        cpu_s=float(cpu), seed=seed, degree=degree, samples=samples,
        meta={"wall_s": time.time() - wall0, "control_variates": bool(control_variates), "n_poly": n_poly,
              "feature_set": feature_set,
              "d2S_inf": float(d2S), "dS_inf": float(dS)})


# ============================================================== figure 6
def fig6_data(depth=30, widths=(32, 128), n_networks=None, c0=0.9, q0=1.0, sigma_w2=1.0, activation="erf",
              block="full", seed=6, n_alpha=9, rel=0.1, degree=4, theory=True, progress=None) -> dict:
    """What Figure 6 needs: per N the CRN grid, simulated S_N +- SE, the 1/N theory on the grid,
    simulated and predicted alpha*(N) and shift (with SEs). ``n_networks``: int or dict N -> int
    (default 2**14 per width)."""
    net = ResNet(depth=depth, alpha=0.1, sigma_w2=sigma_w2, activation=activation, block=block)
    if n_networks is None:
        n_networks = {N: 2 ** 14 for N in widths}
    elif not isinstance(n_networks, dict):
        n_networks = {N: int(n_networks) for N in widths}
    out = {"depth": depth, "c0": c0, "q0": q0, "sigma_w2": sigma_w2, "activation": activation, "block": block,
           "widths": {}}
    pred = None
    for i, N in enumerate(widths):
        r = simulate_optimum(net, N, c0, q0, n_networks=n_networks[N], seed=seed + 1000 * i, n_alpha=n_alpha,
                             rel=rel, degree=degree, keep_samples=False,
                             progress=None if progress is None else (lambda d, t, N=N: progress(N, d, t)))
        if theory and pred is None:
            pred = predicted_shift(net, c0, q0, widths, r.alphas, r.alpha_inf, degree=degree, S_inf=r.S_inf,
                                   d2S=r.meta["d2S_inf"])
        w = {"alphas": r.alphas.tolist(), "S": r.S.tolist(), "S_se": r.S_se.tolist(), "S_raw": r.S_raw.tolist(),
             "S_raw_se": r.S_raw_se.tolist(), "S_inf": r.S_inf.tolist(),
             "alpha_star_sim": r.alpha_inf + r.shift_mf,       # the reported estimator -D/S_inf'' (Sec. 4.6.1)
             "shift_sim": r.shift_mf, "shift_sim_se": r.shift_mf_se, "n_networks": r.n_networks, "cpu_s": r.cpu_s,
             "result": r.to_dict()}
        if pred is not None:
            p = pred["widths"][int(N)]
            w.update(S_theory=p["S_N"].tolist(), shift_pred=p["shift"], shift_pred_argmax=p["shift_argmax"],
                     shift_pred_library=p["shift_library"], alpha_star_pred=r.alpha_inf + p["shift"],
                     networks_to_resolve=r.networks_to_resolve(p["shift"]))
        out["alpha_inf"] = r.alpha_inf
        out["widths"][int(N)] = w
    if pred is not None:
        out["delta"] = pred["delta"].tolist()
    return out
