"""Data-level sensitivity and alpha* for a data set (docs/theory.md, Sec. 8).

A data set X (P, d) enters through the random input layer as the kernel
K0_ab = sigma_in2 x_a.x_b / d + sigma_bin2 (:func:`resscale.inputs.input_kernel`).
At infinite width the kernel map acts *pairwise*: K^L_ab depends only on
(K^0_aa, K^0_bb, K^0_ab) (and the reduced block's means, which depend only on
the diagonal). So the Jacobian of the output correlations c^L_ab with respect
to the input correlations c^0_cd, diagonals held fixed, is diagonal in the
pairs (Eq. 8.1), with entries

    S_ab = dc^L_ab / dc^0_ab = sqrt(q0_a q0_b / (qL_a qL_b)) prod_l f^l_ab              (8.2)

    f^l_ab = 1 + alpha^2 sigma_w2 A(K_aa, K_bb, K_ab)              full
             1 + alpha^2 sigma_w2 A(Z_aa, Z_bb, Z_ab)              reduced, Z = sigma_w2 K + sigma_b2
             1 + alpha^2 sigma_w2^2 A(Z_aa, Z_bb, Z_ab)            two_layer
             sigma_w2 A(K_aa, K_bb, K_ab)                          feedforward

the two-input sensitivity of Sec. 5 generalised to unequal norms q_a != q_b.
Every norm of that diagonal Jacobian is a statistic of the distribution of S_ab
over the data's pairs; the data-level sensitivity (Eq. 8.3) is its normalised
trace, the mean of S_ab over pairs a < b (``measure="mean"``, the default;
``"rms"`` = normalised Frobenius norm, ``"geomean"``, ``"corr2"`` = the c0_ab^2
weighted mean, see Sec. 8.3 for the comparison and the choice).

Cost: the diagonal recursion for the inputs involved plus one pair recursion per
pair, vectorised over (alphas, pairs). Data sets with more than ``max_pairs``
pairs are subsampled (simple random sample of pairs without replacement, seeded);
the standard error of the mean over pairs is then reported (with the
finite-population correction), exact when all pairs are used.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .inputs import ParameterTypeError, as_finite_array, check_choice, check_int, check_kernel, check_real

MEASURES = ("mean", "rms", "geomean", "corr2")
PAIR_SETS = ("all", "within", "between", "nearest")
DEFAULT_MAX_PAIRS = 2000
_TINY = 1e-300
_CHUNK = 400_000          # alphas x pairs per vectorised block


# ------------------------------------------------------------------ inputs
def _check_net(net):
    from .network import ResNet

    if not isinstance(net, ResNet):
        raise ParameterTypeError(f"net must be a resscale.ResNet, got {type(net).__name__}")
    return net


def data_kernel_entries(net, X=None, K0=None):
    """(q0 (P,), Kfun) with q0 the input-layer variances and Kfun(I, J) the K0 entries of pairs.

    X (P, d) data through the input layer (never forms the P x P kernel), or a (P, P) K0.
    Raises ValueError naming X (or K0) for non-2-D, non-finite, fewer than 2 rows, or
    a row with zero input-layer variance.
    """
    if (X is None) == (K0 is None):
        raise ValueError("exactly one of X (data, shape (P, d)) and K0 (kernel, shape (P, P)) is required")
    if K0 is not None:
        K = check_kernel("K0", K0)
        if K.shape[0] < 2:
            raise ValueError(f"K0 must hold at least 2 inputs (one pair), got shape {K.shape}")
        return np.diag(K).copy(), (lambda I, J: K[I, J])
    X = as_finite_array("X", X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (P inputs, d features), got shape {X.shape}")
    if X.shape[0] < 2:
        raise ValueError(f"X must hold at least 2 inputs (rows) to form a pair, got shape {X.shape}")
    d = X.shape[1]
    s_in, s_bin = float(net.sigma_in2), float(net.sigma_bin2)
    with np.errstate(over="ignore", invalid="ignore"):
        q0 = s_in * np.einsum("ij,ij->i", X, X) / d + s_bin
    if not np.all(np.isfinite(q0)) or float(np.max(q0)) > 1e300:
        raise ValueError("X is too large: a squared row norm overflows float64; rescale X")
    if np.any(q0 <= 0.0):
        i = int(np.argmin(q0))
        raise ValueError(f"X row {i} gives a zero input-layer variance (K0[{i}, {i}] = {q0[i]!r}: a zero row "
                         "with sigma_bin2 = 0); its correlations are undefined, drop it or set sigma_bin2 > 0")

    def Kfun(I, J):
        return s_in * np.einsum("ij,ij->i", X[I], X[J]) / d + s_bin
    return q0, Kfun


def _n_pairs_total(P):
    return P * (P - 1) // 2


def _pair_from_index(t, P):
    """Row-major upper-triangle index t -> (i, j), i < j (vectorised)."""
    t = np.asarray(t, dtype=np.int64)
    # row i starts at s_i = i P - i (i + 1) / 2
    i = (P - 0.5 - np.sqrt((P - 0.5) ** 2 - 2.0 * t)).astype(np.int64)
    i = np.clip(i, 0, P - 2)
    start = i * P - i * (i + 1) // 2
    # fix off-by-one from rounding
    for _ in range(2):
        low = t < start
        i = np.where(low, i - 1, i)
        start = i * P - i * (i + 1) // 2
        nxt = (i + 1) * P - (i + 1) * (i + 2) // 2
        high = t >= nxt
        i = np.where(high, i + 1, i)
        start = i * P - i * (i + 1) // 2
    j = t - start + i + 1
    return i, j


def sample_pairs(P, max_pairs=DEFAULT_MAX_PAIRS, seed=0, labels=None, pairs="all"):
    """Pairs (I, J), I < J, of a data set of P inputs: all of them, or a seeded simple random sample.

    ``pairs="within"``/``"between"`` (needs ``labels``) restricts to same-/different-class pairs.
    Returns (I, J, n_total) with n_total the number of pairs in the population.
    """
    P = check_int("P (number of inputs)", P, lo=2)
    max_pairs = check_int("max_pairs", max_pairs, lo=2)
    check_choice("pairs", pairs, PAIR_SETS)
    rng = np.random.default_rng(seed)
    if pairs == "all":
        n_tot = _n_pairs_total(P)
        if n_tot <= max_pairs:
            I, J = np.triu_indices(P, 1)
            return I.astype(np.int64), J.astype(np.int64), n_tot
        t = np.sort(rng.choice(n_tot, size=max_pairs, replace=False))
        I, J = _pair_from_index(t, P)
        return I, J, n_tot
    if labels is None:
        raise ValueError(f"pairs={pairs!r} needs labels (one class label per row of X)")
    y = np.asarray(labels).ravel()
    if y.shape[0] != P:
        raise ValueError(f"labels must have one entry per row of X ({P}), got {y.shape[0]}")
    I, J = np.triu_indices(P, 1)
    keep = (y[I] == y[J]) if pairs == "within" else (y[I] != y[J])
    I, J = I[keep], J[keep]
    n_tot = int(I.size)
    if n_tot == 0:
        raise ValueError(f"no {pairs}-class pairs in the data")
    if n_tot > max_pairs:
        sel = np.sort(rng.choice(n_tot, size=max_pairs, replace=False))
        I, J = I[sel], J[sel]
    return I.astype(np.int64), J.astype(np.int64), n_tot


def nearest_pairs(q0, Kfun, chunk=256):
    """Each input's most correlated other input (c0_ab maximal over b != a): unique pairs (I, J), I < J."""
    P = q0.size
    best = np.empty(P, dtype=np.int64)
    allj = np.arange(P)
    for s in range(0, P, chunk):
        rows = np.arange(s, min(P, s + chunk))
        I = np.repeat(rows, P)
        J = np.tile(allj, rows.size)
        C = (Kfun(I, J) / np.sqrt(q0[I] * q0[J])).reshape(rows.size, P)
        C[np.arange(rows.size), rows] = -np.inf
        best[rows] = np.argmax(C, axis=1)
    a, b = np.minimum(allj, best), np.maximum(allj, best)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _pairs_for(q0, Kfun, max_pairs, seed, labels, pairs):
    if pairs == "nearest":
        I, J = nearest_pairs(q0, Kfun)
        n_tot = int(I.size)
        if n_tot > max_pairs:
            sel = np.sort(np.random.default_rng(seed).choice(n_tot, size=max_pairs, replace=False))
            I, J = I[sel], J[sel]
        return I, J, n_tot
    return sample_pairs(q0.size, max_pairs=max_pairs, seed=seed, labels=labels, pairs=pairs)


# ------------------------------------------------------------------ recursion
def _pair_block(net, q0, I, J, k0, a):
    """log S_ab (Eq. 8.2) and c^L_ab for alphas ``a`` (n_a,) and pairs (I, J) over inputs with norms q0.

    q0 (n_in,), I, J (n_p,) indices into q0, k0 (n_p,) = K0_IJ. Returns (logS, cL), each (n_a, n_p);
    nan where the kernel leaves float64 (non-homogeneous unbounded phi at large alpha^2 L).
    """
    phi, sw2, sb2_raw, L, block = net.phi, float(net.sigma_w2), float(net.sigma_b2), net.depth, net.block_type
    n_a = a.size
    A_ = a[:, None]
    A2 = A_ * A_
    q = np.tile(q0, (n_a, 1))
    k = np.tile(k0, (n_a, 1))
    m = np.zeros_like(q)
    s = np.zeros((n_a, 1))
    logf = np.zeros_like(k)
    homog = phi.homogeneous
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(L):
            sb2 = sb2_raw * np.exp(-s) if homog else sb2_raw
            q, k, m, dlog = block.pair_step(phi, sw2, sb2, A_, A2, q, k, m, I, J)   # resscale.blocks
            logf += dlog
            if homog:  # 1-homogeneous map: renormalise every layer, keep the log-scale
                r = np.maximum(np.max(q, axis=1, keepdims=True), _TINY)
                q, k, m = q / r, k / r, m / np.sqrt(r)
                s = s + np.log(r)
        lq = np.log(np.maximum(q, _TINY))
        lq0 = np.log(q0)
        logS = logf + 0.5 * (lq0[I] + lq0[J])[None, :] - 0.5 * (lq[:, I] + lq[:, J]) - s
        cL = np.clip(k / np.sqrt(np.maximum(q[:, I] * q[:, J], _TINY)), -1.0, 1.0)
    bad = ~(np.isfinite(logS) & np.isfinite(q[:, I]) & np.isfinite(q[:, J]) & np.isfinite(k))
    logS[bad] = np.nan
    cL[bad] = np.nan
    return logS, cL


def pair_log_sensitivity(net, q0, I, J, k0, alphas):
    """log S_ab (Eq. 8.2) and c^L_ab, shape (n_alphas, n_pairs), in chunks over alphas."""
    from .sensitivity import check_alphas

    a = check_alphas(alphas)
    q0 = np.asarray(q0, dtype=float)
    I, J = np.asarray(I, dtype=np.int64), np.asarray(J, dtype=np.int64)
    k0 = np.asarray(k0, dtype=float)
    # only the inputs that appear in a pair are propagated
    used, inv = np.unique(np.concatenate([I, J]), return_inverse=True)
    Iu, Ju = inv[:I.size], inv[I.size:]
    qu = q0[used]
    step = max(1, _CHUNK // max(1, I.size))
    out_l, out_c = [], []
    for i in range(0, a.size, step):
        l, c = _pair_block(net, qu, Iu, Ju, k0, a[i:i + step])
        out_l.append(l)
        out_c.append(c)
    return np.concatenate(out_l), np.concatenate(out_c)


# ------------------------------------------------------------------ statistics
def _measure(S, logS, c0, measure, n_total):
    """Value and standard error over pairs (axis 1) of the chosen measure (simple random sample)."""
    n = S.shape[1]
    fpc = math.sqrt(max(0.0, 1.0 - n / n_total)) if n_total > 1 else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        if measure == "mean":
            v = S.mean(axis=1)
            se = S.std(axis=1, ddof=1) / math.sqrt(n) * fpc if n > 1 else np.zeros_like(v)
        elif measure == "rms":
            m2 = (S * S).mean(axis=1)
            v = np.sqrt(m2)
            se = (S * S).std(axis=1, ddof=1) / math.sqrt(n) * fpc / (2.0 * np.maximum(v, _TINY)) if n > 1 \
                else np.zeros_like(v)
        elif measure == "geomean":
            ml = logS.mean(axis=1)
            v = np.exp(ml)
            se = v * logS.std(axis=1, ddof=1) / math.sqrt(n) * fpc if n > 1 else np.zeros_like(v)
        else:  # corr2: weights c0_ab^2 (ratio estimator, linearised SE)
            w = c0 * c0
            wm = float(w.mean())
            if not wm > 0:
                raise ValueError("measure 'corr2' needs pairs with non-zero input correlation")
            v = (S * w).mean(axis=1) / wm
            e = w[None, :] * (S - v[:, None]) / wm
            se = e.std(axis=1, ddof=1) / math.sqrt(n) * fpc if n > 1 else np.zeros_like(v)
    return v, se


@dataclass
class DataSensitivity:
    """Result of :func:`data_sensitivity`.

    alphas (n_a,), value (n_a,) the data-level sensitivity, stderr (n_a,) its standard error from
    pair subsampling (0 when every pair is used), measure, n_pairs used, n_pairs_total, exact
    (all pairs used), c0 (n_pairs,) input correlations of the pairs used, S (n_a, n_pairs) the
    per-pair sensitivities, cL (n_a, n_pairs) the output correlations, pairs (I, J).
    """

    alphas: np.ndarray
    value: np.ndarray
    stderr: np.ndarray
    measure: str
    n_pairs: int
    n_pairs_total: int
    exact: bool
    c0: np.ndarray = field(repr=False)
    S: np.ndarray = field(repr=False)
    cL: np.ndarray = field(repr=False)
    pairs: tuple = field(repr=False)

    def stat(self, measure):
        """The same per-pair sensitivities summarised with another measure: (value, stderr)."""
        check_choice("measure", measure, MEASURES)
        with np.errstate(divide="ignore"):
            return _measure(self.S, np.log(self.S), self.c0, measure, self.n_pairs_total)


def data_sensitivity(net, X=None, K0=None, alphas=None, *, measure="mean", max_pairs=DEFAULT_MAX_PAIRS,
                     seed=0, labels=None, pairs="all") -> DataSensitivity:
    """Data-level sensitivity (docs/theory.md Eq. 8.3) of ``net`` for the data X (or kernel K0).

    The mean over the data's pairs a < b of S_ab = dc^L_ab/dc^0_ab (diagonals held fixed,
    unequal norms exact, Eq. 8.2) for every alpha of ``alphas`` (default net.alpha).

    Parameters
    ----------
    net : ResNet
    X : (P, d) data sent through the input layer (K0 = sigma_in2 X X^T/d + sigma_bin2), or
    K0 : (P, P) input kernel (exactly one of the two)
    alphas : scalar or 1-D array of alphas >= 0
    measure : "mean" (default, Eq. 8.3), "rms", "geomean", "corr2" (Sec. 8.3)
    max_pairs : int   more pairs than this are subsampled (seeded); the SE is then > 0
    seed : int        seed of the pair subsample
    labels, pairs : "all" (default); "within" / "between" class pairs (need labels); "nearest"
                    (each input with its most correlated other input); for the comparison of Sec. 8.3
    """
    from .sensitivity import check_alphas

    net = _check_net(net)
    check_choice("measure", measure, MEASURES)
    a = check_alphas(net.alpha if alphas is None else alphas)
    q0, Kfun = data_kernel_entries(net, X=X, K0=K0)
    I, J, n_tot = _pairs_for(q0, Kfun, max_pairs, seed, labels, pairs)
    k0 = Kfun(I, J)
    c0 = np.clip(k0 / np.sqrt(q0[I] * q0[J]), -1.0, 1.0)
    logS, cL = pair_log_sensitivity(net, q0, I, J, k0, a)
    with np.errstate(over="ignore"):
        S = np.exp(np.minimum(logS, 709.0))
    v, se = _measure(S, logS, c0, measure, n_tot)
    return DataSensitivity(a, v, se, measure, int(I.size), int(n_tot), bool(I.size == n_tot),
                           c0, S, cL, (I, J))


# ------------------------------------------------------------------ continuum (analytic) limit
def _continuum_rates(net, lq, lqI, lqJ, c):
    """(d log q_a/dtau, (dk_ab/dtau)/sqrt(q_a q_b), d log f_ab/dtau) of the continuum flow (tau = alpha^2 l).

    Full:      dq/dtau = sw2 g(q) + sb2,  dk/dtau = sw2 G(q_a, q_b, k) + sb2,  d log f/dtau = sw2 A
    reduced (odd phi): dq/dtau = g(Z), dk/dtau = G(Z), d log f/dtau = sw2 A(Z), Z = sw2 K + sb2
    two_layer: dq/dtau = sw2 g(Z) + sb2, dk/dtau = sw2 G(Z) + sb2, d log f/dtau = sw2^2 A(Z).
    For 1-homogeneous phi the integrals are evaluated at the rescaled state K / sqrt(q_a q_b)
    (biases divided by the same scale), so q may grow like e^{T} without overflow.
    """
    phi, sw2, sb2, block = net.phi, float(net.sigma_w2), float(net.sigma_b2), net.block_type
    if phi.homogeneous:
        half = 0.5 * (lqI + lqJ)
        qd, sb_d = np.ones_like(lq), sb2 * np.exp(-lq)
        qI, qJ, kk, sb_p = np.exp(lqI - half), np.exp(lqJ - half), c, sb2 * np.exp(-half)
        norm_d, norm_p = 1.0, 1.0
    else:
        qd, sb_d = np.exp(lq), sb2
        qI, qJ = np.exp(lqI), np.exp(lqJ)
        norm_p = np.sqrt(qI * qJ)
        kk, sb_p, norm_d = c * norm_p, sb2, qd
    Fq, Fk, dlf = block.continuum_pair_rates(phi, sw2, qd, sb_d, qI, qJ, kk, sb_p)   # resscale.blocks
    return Fq / norm_d, Fk / norm_p, dlf


def continuum_log_sensitivity(net, q0, I, J, k0, T):
    """log S_ab(T) of the continuum limit (alpha -> 0, L -> inf, T = alpha^2 L fixed) on a grid T.

    Classical RK4 in log tau on the flow of (log q_a, c_ab, log f_ab) (Eq. 8.5); one trajectory gives
    every T of the grid. Returns (n_T, n_pairs); nan where the flow leaves float64.
    """
    obstacle = net.block_type.continuum_obstacle(net)
    if obstacle is not None:
        raise ValueError(f"no continuum limit T = alpha^2 L: {obstacle}")
    T = np.asarray(T, dtype=float)
    used, inv = np.unique(np.concatenate([I, J]), return_inverse=True)
    Iu, Ju = inv[:I.size], inv[I.size:]
    lq = np.log(np.asarray(q0, float)[used])
    c = np.clip(np.asarray(k0, float) / np.sqrt(q0[I] * q0[J]), -1.0, 1.0)
    lf = np.zeros_like(c)
    lq_start = lq.copy()

    def rhs(lq, c):
        dlq, Fk, dlf = _continuum_rates(net, lq, lq[Iu], lq[Ju], c)
        dc = Fk - 0.5 * c * (dlq[Iu] + dlq[Ju])
        return dlq, dc, dlf

    out = np.full((T.size, c.size), np.nan)
    order = np.argsort(T)
    t_nodes = np.concatenate([[0.0], T[order]])
    with np.errstate(all="ignore"):
        for n in range(1, t_nodes.size):
            t0, t1 = t_nodes[n - 1], t_nodes[n]
            # sub-steps: at most 2% relative growth of tau per step (RK4 error ~ 1e-9), >= 1 step
            n_sub = max(1, int(math.ceil((t1 - t0) / max(0.02 * t1, 1e-12))))
            n_sub = min(n_sub, 200)
            h = (t1 - t0) / n_sub
            for _ in range(n_sub):
                k1 = rhs(lq, c)
                k2 = rhs(lq + 0.5 * h * k1[0], c + 0.5 * h * k1[1])
                k3 = rhs(lq + 0.5 * h * k2[0], c + 0.5 * h * k2[1])
                k4 = rhs(lq + h * k3[0], c + h * k3[1])
                lq = lq + h / 6.0 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
                c = np.clip(c + h / 6.0 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]), -1.0, 1.0)
                lf = lf + h / 6.0 * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2])
            val = lf + 0.5 * (lq_start[Iu] + lq_start[Ju]) - 0.5 * (lq[Iu] + lq[Ju])
            out[order[n - 1]] = np.where(np.isfinite(val), val, np.nan)
    return out


# ------------------------------------------------------------------ optimum
def _zoom(f, lo, hi, n=41, passes=4, xatol=1e-7):
    """Maximise f (vectorised over alphas) on [lo, hi] in log alpha: zoom passes + one parabola."""
    best_a, best_v = lo, -np.inf
    for _ in range(passes):
        x = np.linspace(math.log(lo), math.log(hi), n)
        y = np.asarray(f(np.exp(x)), float)
        y = np.where(np.isfinite(y), y, -np.inf)
        j = int(np.clip(np.argmax(y), 1, n - 2))
        if y[j] > best_v:
            best_a, best_v = float(np.exp(x[j])), float(y[j])
        lo, hi = float(np.exp(x[j - 1])), float(np.exp(x[j + 1]))
        if x[j + 1] - x[j - 1] < max(50 * xatol, 1e-3):
            break
    den = y[j - 1] - 2 * y[j] + y[j + 1]
    if den < 0 and np.all(np.isfinite(y[j - 1:j + 2])):
        xp = x[j] + 0.5 * (x[j + 1] - x[j]) * (y[j - 1] - y[j + 1]) / den
        yp = float(np.asarray(f(np.exp([xp])), float)[0])
        if np.isfinite(yp) and yp > best_v:
            best_a, best_v = float(np.exp(xp)), yp
    return best_a, best_v


def optimal_alpha_data(net, X=None, K0=None, *, measure="mean", max_pairs=DEFAULT_MAX_PAIRS, seed=0,
                       alpha_range=(1e-4, 1e2), n_grid=200, xatol=1e-7, analytic=True,
                       n_boot=200, labels=None, pairs="all", _stacklevel=2):
    """alpha* = argmax_alpha of the data-level sensitivity (Eq. 8.3) for the data X (or kernel K0).

    Returns an :class:`resscale.OptimalAlphaResult` (``alphas``/``sensitivities`` = the scan, the
    maximum refined by zoom passes on the *same* pair sample, so the curve is smooth in alpha). When
    pairs are subsampled, the standard error of alpha* from a bootstrap over the sampled pairs
    (``n_boot`` resamples on the scan grid, parabolic interpolation) is in ``message`` and in the
    extra attribute ``data`` (a dict: measure, n_pairs, n_pairs_total, exact, alpha_stderr,
    sensitivity_stderr, band90, c0 quantiles). ``alpha_analytic`` = sqrt(T*/L) with T* the maximiser
    of the continuum-limit data-level sensitivity (Eq. 8.5; nan for the reduced block with non-odd phi).
    """
    from .inputs import check_bool, check_range
    from .optimal_alpha import NoInteriorMaximumWarning, OptimalAlphaResult

    net = _check_net(net)
    if not net.block_type.residual:
        raise ValueError(f"block={net.block!r} has no residual scaling alpha to optimise")
    check_choice("measure", measure, MEASURES)
    lo, hi = check_range("alpha_range", alpha_range, lo=0.0)
    n_grid = check_int("n_grid", n_grid, lo=3, hi=100_000)
    xatol = check_real("xatol", xatol, lo=0.0, strict_lo=True)
    analytic = check_bool("analytic", analytic)
    n_boot = check_int("n_boot", n_boot, lo=0)
    q0, Kfun = data_kernel_entries(net, X=X, K0=K0)
    I, J, n_tot = _pairs_for(q0, Kfun, max_pairs, seed, labels, pairs)
    k0 = Kfun(I, J)
    c0 = np.clip(k0 / np.sqrt(q0[I] * q0[J]), -1.0, 1.0)

    def curve(alphas, with_pairs=False):
        logS, _ = pair_log_sensitivity(net, q0, I, J, k0, np.asarray(alphas, float))
        with np.errstate(over="ignore"):
            S = np.exp(np.minimum(logS, 709.0))
        v, se = _measure(S, logS, c0, measure, n_tot)
        return (v, se, S, logS) if with_pairs else v

    def logv(alphas):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(curve(alphas))

    grid = np.logspace(math.log10(lo), math.log10(hi), n_grid)
    v, se, Sg, logSg = curve(grid, with_pairs=True)
    ok = np.isfinite(v)
    if not ok[0]:
        raise OverflowError(f"the data-level sensitivity is not finite (the kernel overflows float64) already "
                            f"at the smallest alpha = {grid[0]:g} of alpha_range; lower alpha_range[0] or depth")
    note_over = ""
    if not np.all(ok):
        first = int(np.argmin(ok))
        note_over = f" (the kernel overflows float64 for alpha >= {grid[first]:.3g}; scan truncated there)"
        grid, v, se, Sg, logSg = grid[:first], v[:first], se[:first], Sg[:first], logSg[:first]
        hi = float(grid[-1])
    lv = np.log(np.maximum(v, _TINY))
    i = int(np.argmax(lv))
    flat = float(np.max(lv) - min(lv[0], lv[-1])) < 1e-9
    a_an, T_an, an_note = math.nan, math.nan, "not computed"
    if analytic:
        a_an, T_an, an_note = _analytic_data(net, q0, I, J, k0, c0, measure, n_tot, lo, hi)
    band = _band(grid, v, i)
    info = dict(measure=measure, n_pairs=int(I.size), n_pairs_total=int(n_tot), exact=bool(I.size == n_tot),
                seed=int(seed), band90=band, sensitivity_stderr=float(se[i]),
                c0_quantiles={str(p): float(np.quantile(c0, p)) for p in (0.05, 0.25, 0.5, 0.75, 0.95)},
                c0_mean=float(c0.mean()), q0_mean=float(q0.mean()), alpha_stderr=None, alpha_boot=None)
    what = (f"data-level sensitivity ({measure} of S_ab over {'all ' if info['exact'] else ''}{I.size}"
            f"{'' if info['exact'] else f' of {n_tot}'} pairs)")
    if i in (0, len(grid) - 1) or flat:
        edge = "smallest" if i == 0 else "largest"
        msg = (f"no interior maximum: the {what} is constant to 1e-9 on [{lo:g}, {hi:g}]" if flat else
               f"no interior maximum: the {what} is largest at the {edge} scanned alpha = {grid[i]:.3g} "
               f"(range [{lo:g}, {hi:g}])") + note_over
        warnings.warn(msg, NoInteriorMaximumWarning, stacklevel=_stacklevel)
        res = OptimalAlphaResult(math.nan, float(v[i]), a_an, T_an, False, msg, an_note, grid, v)
        res.data = info
        return res
    a_star, l_star = _zoom(logv, grid[i - 1], grid[i + 1], xatol=xatol)
    if l_star < lv[i]:
        a_star, l_star = float(grid[i]), float(lv[i])
    se_txt = ""
    if not info["exact"] and n_boot > 0:
        info["alpha_stderr"], info["alpha_boot"] = _bootstrap_alpha(grid, Sg, logSg, c0, measure, n_tot, i,
                                                                    n_boot, seed)
        if info["alpha_stderr"] is not None:
            se_txt = f" (pair-subsampling SE of alpha* {info['alpha_stderr']:.3g}, bootstrap)"
    msg = (f"alpha* = {a_star:.6g} with {what} = {math.exp(l_star):.6g}"
           + (f" +- {se[i]:.2g}" if se[i] > 0 else "") + se_txt + note_over)
    res = OptimalAlphaResult(a_star, float(math.exp(l_star)), a_an, T_an, True, msg, an_note, grid, v)
    res.data = info
    return res


def _band(grid, v, i, level=0.9):
    """[lo, hi] of the contiguous stretch of the scan around index i where v >= level * v[i]."""
    ok = v >= level * v[i]
    lo = hi = i
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < grid.size - 1 and ok[hi + 1]:
        hi += 1
    return [float(grid[lo]), float(grid[hi])]


def _bootstrap_alpha(grid, S, logS, c0, measure, n_tot, i, n_boot, seed):
    """Bootstrap SE of the argmax (log-parabola through the best grid point) over the sampled pairs."""
    rng = np.random.default_rng(10_000 + int(seed))
    n = S.shape[1]
    w = max(3, min(12, i, grid.size - 1 - i))
    sl = slice(max(0, i - w), min(grid.size, i + w + 1))
    xs = np.log(grid[sl])
    est = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v, _ = _measure(S[sl][:, idx], logS[sl][:, idx], c0[idx], measure, np.inf)
        lv = np.log(np.maximum(v, _TINY))
        j = int(np.argmax(lv))
        if j in (0, lv.size - 1):
            est.append(xs[j])
            continue
        den = lv[j - 1] - 2 * lv[j] + lv[j + 1]
        dx = 0.5 * (xs[j + 1] - xs[j]) * (lv[j - 1] - lv[j + 1]) / den if den < 0 else 0.0
        est.append(xs[j] + dx)
    est = np.exp(np.asarray(est))
    return float(np.std(est, ddof=1)), [float(np.quantile(est, 0.16)), float(np.quantile(est, 0.84))]


def _analytic_data(net, q0, I, J, k0, c0, measure, n_tot, lo, hi):
    """(alpha_analytic, T*, note) from the continuum limit of the data-level sensitivity (Eq. 8.5)."""
    obstacle = net.block_type.continuum_obstacle(net)
    if obstacle is not None:
        return math.nan, math.nan, obstacle
    L = net.depth
    T_lo, T_hi = max(lo * lo * L, 1e-8), min(hi * hi * L, 1e6)
    T = np.geomspace(T_lo, T_hi, 161)
    try:
        lS = continuum_log_sensitivity(net, q0, I, J, k0, T)
    except (ValueError, FloatingPointError) as exc:  # pragma: no cover
        return math.nan, math.nan, f"continuum flow failed: {exc}"
    ok_cols = np.all(np.isfinite(lS), axis=1)
    if not ok_cols[0]:
        return math.nan, math.nan, "the continuum flow is not finite at the smallest T"
    n_ok = int(np.argmin(ok_cols)) if not np.all(ok_cols) else T.size
    T, lS = T[:n_ok], lS[:n_ok]
    with np.errstate(over="ignore"):
        S = np.exp(np.minimum(lS, 709.0))
    v, _ = _measure(S, lS, c0, measure, n_tot)
    lv = np.log(np.maximum(v, _TINY))
    j = int(np.argmax(lv))
    if j in (0, lv.size - 1):
        return (math.nan, math.nan, f"no interior maximum of the continuum data-level sensitivity for "
                                    f"T = alpha^2 L in [{T[0]:.3g}, {T[-1]:.3g}]")
    x = np.log(T)
    den = lv[j - 1] - 2 * lv[j] + lv[j + 1]
    xs = x[j] + (0.5 * (x[j + 1] - x[j]) * (lv[j - 1] - lv[j + 1]) / den if den < 0 else 0.0)
    Ts = float(np.exp(xs))
    return (math.sqrt(Ts / L), Ts,
            "leading order in 1/L (continuum limit T = alpha^2 L fixed) of the data-level sensitivity on the "
            "same pairs; T* from a 161-point log grid + parabola (relative error of alpha* O(1/L) + ~1e-3); "
            "docs/theory.md Sec. 8.4")


def _optimal_alpha_hook(net, c0, X, width, alpha_range, n_grid, xatol, analytic, data_options):
    """:func:`resscale.optimal_alpha` with ``X=``: argument checks, then :func:`optimal_alpha_data`."""
    if X is None:
        raise ValueError(f"optimal_alpha: {', '.join(sorted(data_options))} only apply with X= (a data set)")
    if c0 is not None:
        raise ValueError("optimal_alpha: pass either c0 (two inputs of correlation c0) or X (a data set), "
                         "not both c0 and X")
    if width is not None:
        raise ValueError("optimal_alpha: width (finite-width alpha*) is not available with X (data-level "
                         "sensitivity is mean-field only)")
    return optimal_alpha_data(net, X=X, alpha_range=alpha_range, n_grid=n_grid, xatol=xatol,
                              analytic=analytic, _stacklevel=4, **data_options)

