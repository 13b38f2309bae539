"""Next order in 1/N for the closed-chain blocks (docs/theory.md Sec. 4.12, Eq. 4.80-4.92, 4.103).

The generic recursion; the chains themselves (one engine per block: two_layer, reduced,
feedforward) are in :mod:`.chains`, their coordinates and Gaussian moments in :mod:`.chain_moments`.

For a Markov chain s^l = f(s^{l-1}) + xi^l in R^n with E[xi^l | F_{l-1}] = 0 exactly and
conditional cumulants

    N   Cov(xi | s)   = Q(s) + R(s)/N          (exact for both blocks: R = 0 reduced)
    N^2 kappa3(xi | s) = T(s) + O(1/N)          kappa4(xi | s) = O(1/N^3)

the deviation delta = s - s_mf from the mean-field path has moments

    E delta    = a1/N + a2/N^2,   N Cov delta = c1 + c2/N,   N^2 kappa3(delta) = t2   (+ higher orders)

obeying the layer recursions (Eq. 4.84-4.88; J, H, T3, T4 the 1st..4th derivatives of f at
the mean-field point, Q', Q'' those of Q)

    a1' = J a1 + 1/2 H:c1
    c1' = J c1 J^T + Q
    a2' = J a2 + 1/2 H:(c2 + a1 a1) + 1/6 T3:t2 + 1/2 T3[a1, c1] + 1/8 T4[c1, c1]
    c2' = J c2 J^T + sym[J H:(t2 + 2 a1 c1)] + 1/2 H c1 c1 H^T + sym[J T3[c1, c1]]
          + Q'.a1 + 1/2 Q'':c1 + R
    t2' = J J J t2 + sym3[J J H c1 c1] + sym3[J c1 Q'] + T

V1 = c2, M2 = a2 restricted to the kernel coordinates. The state lives in "x-coordinates":
the upper triangle of Khat (a <= b), followed by mhat for the reduced block.

Derivatives of f: finite differences of the closed-form Jacobian (_jac_G / jac_G_batch):
H central (step 1e-4 of the kernel scale, error ~1e-8), T3 mixed second differences (step
1e-3: ~1e-6), T4 mixed third differences (step 2e-3: ~1e-5 relative; measured h^2 convergence,
M2 within 1e-4 relative of the step -> 0 extrapolation for relu/gelu, P = 2, L = 4). Q' central (1e-4),
1/2 Q'':c1 second differences along the eigen-directions of c1 (step 1e-3: ~1e-6).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..kernel_recursion import mean_field_kernel
from .chain_moments import _Coords, feature_cumulants, gaussian_moment, phi_moment_table  # noqa: F401 (re-exported)
from .chains import _ENGINES, NEXT_ORDER_BLOCKS, RESUMMED_BLOCKS

__all__ = ["next_order_theory", "NEXT_ORDER_BLOCKS", "feature_cumulants", "gaussian_moment", "estimate_seconds"]


def _sym3_special_last(Z):
    """Z[a,b,c] symmetric in (a,b), c the 'special' slot: sum over the 3 choices of special slot."""
    return Z + np.transpose(Z, (0, 2, 1)) + np.transpose(Z, (2, 1, 0))


def _sym3_special_first(Z):
    """Z[a,b,c] symmetric in (b,c), a the special slot."""
    return Z + np.transpose(Z, (1, 0, 2)) + np.transpose(Z, (2, 1, 0))


# ---------------------------------------------------------------- finite differences of f
def _stencil(n, h2, h3, h4):
    """Points (offsets) and bookkeeping for H, T3, T4 from a Jacobian function."""
    pts = [np.zeros(n)]
    e = np.eye(n)
    for j in range(n):
        pts += [h2 * e[j], -h2 * e[j]]
    pairs = list(itertools.combinations_with_replacement(range(n), 2))
    for j, k in pairs:
        for s1, s2 in itertools.product((1, -1), (1, -1)):
            pts.append(h3 * (s1 * e[j] + s2 * e[k]))
    triples = list(itertools.combinations_with_replacement(range(n), 3))
    for j, k, l in triples:
        for s in itertools.product((1, -1), repeat=3):
            pts.append(h4 * (s[0] * e[j] + s[1] * e[k] + s[2] * e[l]))
    return np.array(pts), pairs, triples


def _derivs_from_jac(jac, x, scale, n_k):
    """J, H, T3, T4 of f at x from a batched Jacobian function jac(X (B, n)) -> (B, n, n)."""
    n = x.shape[0]
    h2, h3, h4 = 1e-4 * scale, 1e-3 * scale, 2e-3 * scale
    off, pairs, triples = _stencil(n, h2, h3, h4)
    Js = jac(x[None, :] + off)
    J = Js[0]
    i = 1
    H = np.zeros((n, n, n))
    for j in range(n):
        H[:, :, j] = (Js[i] - Js[i + 1]) / (2 * h2)
        i += 2
    T3 = np.zeros((n, n, n, n))
    for j, k in pairs:
        d = (Js[i] - Js[i + 1] - Js[i + 2] + Js[i + 3]) / (4 * h3 * h3)
        T3[:, :, j, k] = T3[:, :, k, j] = d
        i += 4
    T4 = np.zeros((n, n, n, n, n))
    signs = list(itertools.product((1, -1), repeat=3))
    for j, k, l in triples:
        d = sum(s[0] * s[1] * s[2] * Js[i + q] for q, s in enumerate(signs)) / (8 * h4 ** 3)
        for perm in set(itertools.permutations((j, k, l))):
            T4[(slice(None), slice(None)) + perm] = d
        i += 8
    # symmetrise over the derivative slots (f is smooth; averages the difference errors)
    H = 0.5 * (H + np.swapaxes(H, 1, 2))
    T3 = sum(np.transpose(T3, (0,) + p) for p in itertools.permutations((1, 2, 3))) / 6.0
    T4 = sum(np.transpose(T4, (0,) + p) for p in itertools.permutations((1, 2, 3, 4))) / 24.0
    return J, H, T3, T4


def _dQ(Qfun, x, scale):
    """Q'[p, q, r] = dQ_pq / dx_r (central, step 1e-4 of the kernel scale)."""
    n = x.shape[0]
    h = 1e-4 * scale
    e = np.eye(n)
    Qs = Qfun(np.concatenate([x[None] + h * e, x[None] - h * e]))
    return np.moveaxis((Qs[:n] - Qs[n:]) / (2 * h), 0, 2)


def _half_Q2(Qfun, x, c1, scale, Q0):
    """1/2 Q'':c1 from second differences along the eigen-directions of c1 (step 1e-3)."""
    lam, U = np.linalg.eigh(0.5 * (c1 + c1.T))
    keep = lam > 1e-14 * max(float(np.max(np.abs(lam))), 1e-300)
    lam, U = lam[keep], U[:, keep]
    if lam.size == 0:
        return np.zeros_like(Q0)
    h = 1e-3 * scale
    k = lam.size
    Qs = Qfun(np.concatenate([x[None] + h * U.T, x[None] - h * U.T]))
    d2 = (Qs[:k] + Qs[k:] - 2 * Q0[None]) / (h * h)
    return 0.5 * np.einsum("i,ipq->pq", lam, d2)


# ---------------------------------------------------------------- the generic recursion
def _step(st, J, H, T3, T4, Q, dQ, hQ2, R, T):
    """One layer of Eq. 4.84-4.88 (all inputs in x-coordinates, at the mean-field point)."""
    a1, c1, a2, c2, t2 = st["a1"], st["c1"], st["a2"], st["c2"], st["t2"]
    na1 = J @ a1 + 0.5 * np.einsum("pij,ij->p", H, c1)
    nc1 = J @ c1 @ J.T + Q
    na2 = (J @ a2 + 0.5 * np.einsum("pij,ij->p", H, c2 + np.outer(a1, a1))
           + np.einsum("pijk,ijk->p", T3, t2) / 6.0
           + 0.5 * np.einsum("pijk,i,jk->p", T3, a1, c1)
           + 0.125 * np.einsum("pijkl,ij,kl->p", T4, c1, c1))
    X = np.einsum("ai,bjk,ijk->ab", J, H, t2 + 2 * np.einsum("j,ik->ijk", a1, c1))
    Y = np.einsum("ai,bjkl,ij,kl->ab", J, T3, c1, c1)
    HH = 0.5 * np.einsum("ajk,blm,jl,km->ab", H, H, c1, c1)
    nc2 = (J @ c2 @ J.T + 0.5 * (X + X.T) + HH + 0.5 * (Y + Y.T)
           + np.einsum("pqj,j->pq", dQ, a1) + hQ2 + R)
    JC = J @ c1
    Z1 = np.einsum("ai,bj,ckl,ik,jl->abc", J, J, H, c1, c1)       # special slot c
    Z2 = np.einsum("aj,bcj->abc", JC, dQ)                          # special slot a
    nt2 = (np.einsum("ai,bj,ck,ijk->abc", J, J, J, t2) + _sym3_special_last(Z1)
           + _sym3_special_first(Z2) + T)
    sym = lambda A: 0.5 * (A + A.T)                                 # noqa: E731
    return dict(a1=na1, c1=sym(nc1), a2=na2, c2=sym(nc2), t2=nt2)


# Measured range of validity (docs/validation.md, "Next order in 1/N (issue 10)",
# scripts/validate_next_order.py; erf/relu/gelu, two_layer and reduced, N = 8..128; the feed-forward
# rows (points G-I) fall inside the same thresholds):
#   order=1: the leading-order N Cov is within 5% of Monte-Carlo at every point with eps < 0.051
#            (its error is ~ eps: e.g. 17% at eps = 0.18);
#   order=2: V + V1/N within 5% at every point with eps^2 < 0.0605 (eps < 0.25); above, 4 of 6 rows
#            fail (5.5-15%: the series is asymptotic-like, error ~ 0.3-1 x eps^2, at N = 8-12).
VALIDITY = {1: 0.05, 2: 0.06}


def validity_warning(fw):
    """A one-line warning when the width is outside the measured range of validity, else None."""
    if fw.width is None:
        return None
    eps = fw.expansion_ratio
    if not np.isfinite(eps):
        return None
    o = 1 if fw.order == 1 else 2
    par = eps ** o
    lim = VALIDITY[o]
    if par <= lim:
        return None
    if o == 1:
        return (f"warning: width N={fw.width} is outside the measured range of the leading-order theory "
                f"(expansion parameter {par:.3f} > {lim}: expect ~{100 * par:.0f}% error in N Cov); "
                "use --order 2 (next order in 1/N)")
    return (f"warning: width N={fw.width} is outside the measured range of the next-order theory "
            f"(expansion parameter eps^2 = {par:.3f} > {lim}, eps = {eps:.2f}): the 1/N series is not "
            "validated here; increase the width")


def check_next_order(net, order, resummed=False, full=False):
    """Validate ``order`` (1 or 2; with ``resummed`` also "resummed"); order=2 / "resummed" only for the
    closed-chain blocks, and (``full=True``: :func:`finite_width` itself) order=2 also for the full block
    with a built-in activation (Sec. 4.12.5; relu: Sec. 4.12.6)."""
    if isinstance(order, str) and resummed and order == "resummed":
        if net.block not in RESUMMED_BLOCKS:
            raise NotImplementedError(
                f"order='resummed' (docs/theory.md Sec. 4.12.3) is implemented for the blocks "
                f"{RESUMMED_BLOCKS}; block={net.block!r}: use order=1 or 2")
        return order
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, np.integer)) or order not in (1, 2):
        extra = ' or "resummed" (Sec. 4.12.3)' if resummed else ""
        raise ValueError(f"order must be 1 (leading 1/N theory) or 2 (next order, docs/theory.md "
                         f"Sec. 4.12){extra}, got order={order!r}")
    if order == 2 and full and net.block == "full":
        from .full_next_order import check_full_activation
        check_full_activation(net)
        return 2
    if order == 2 and net.block not in _ENGINES:
        raise NotImplementedError(
            f"order=2 (the next order in 1/N, docs/theory.md Sec. 4.12) is implemented for the blocks "
            f"{NEXT_ORDER_BLOCKS} (closed Markov chains of the kernel); block={net.block!r} is not "
            "closed" + (" (finite_width(order=2) covers it, Sec. 4.12.5, but this quantity does not)"
                        if net.block == "full" else "") + ": use order=1")
    return int(order)


def expansion_ratio(V, V1, M, M2, N):
    """eps = max(eps_V, eps_M): the size of the next-order term relative to the leading one at width N
    (Eq. 4.92). eps_V = max_{ab,cd} |V1_abcd| / (N sqrt(V_abab V_cdcd)) (normalised like a
    correlation, so near-zero cross entries do not blow it up); eps_M = max |M2| / (N max |M|)
    (0 where M = 0, e.g. linear phi)."""
    P = V.shape[0]
    d = np.sqrt(np.abs(np.einsum("abab->ab", V)))
    den = d[:, :, None, None] * d[None, None, :, :]
    eV = float(np.max(np.abs(V1) / np.maximum(den, 1e-300))) / N
    mM = float(np.max(np.abs(M)))
    eM = float(np.max(np.abs(M2))) / (N * mM) if mM > 1e-12 * float(np.max(np.abs(d))) else 0.0
    del P
    return max(eV, eM)


# measured seconds per layer of one next-order run with p inputs (2-core machine, loaded; erf/relu;
# gelu ~1.5x): the T4 stencil (n^3/6 x 8 Jacobians, n = p(p+1)/2 (+p)) and the n^5 contractions dominate
_SECONDS_PER_LAYER = {1: 0.03, 2: 0.12, 3: 0.55, 4: 5.5}
SUBSET = 4                  # every entry of V1 / M2 involves at most 4 inputs (Eq. 4.98)
MAX_SECONDS = 900.0         # refuse (ValueError) above this estimate; env RESSCALE_NEXT_ORDER_MAX_S


def _subsets(P):
    return [tuple(range(P))] if P <= SUBSET else list(itertools.combinations(range(P), SUBSET))


def estimate_seconds(P, depth):
    """Estimated run time of :func:`next_order_theory` for P inputs (Eq. 4.98: one run for P <= 4,
    C(P, 4) four-input sub-kernel runs above)."""
    p = min(P, SUBSET)
    return len(_subsets(P)) * depth * _SECONDS_PER_LAYER[p]


def check_cost(P, depth, what="K0"):
    """ValueError when the next-order run for P inputs is estimated above the limit."""
    import os
    lim = float(os.environ.get("RESSCALE_NEXT_ORDER_MAX_S", MAX_SECONDS))
    est = estimate_seconds(P, depth)
    if est > lim:
        n = len(_subsets(P))
        raise ValueError(
            f"order=2 with P={P} inputs (rows of {what}) needs {n} four-input sub-kernel runs of "
            f"{depth} layers (Eq. 4.98), estimated ~{est:.3g} s > the limit {lim:g} s "
            "(RESSCALE_NEXT_ORDER_MAX_S): use fewer inputs (rows of X / K0), a shallower net, order=1, "
            "or raise the limit")
    return est


def next_order_theory(net, K0, n_r=12, n_t=8):
    """V, V1, M, M2 (and the state statistics) of the closed-chain blocks (Eq. 4.84-4.90).

    Returns a dict with V, V1 (P,P,P,P), M, M2 (P,P) and, for the reduced block, the mean
    channel M_mean, M2_mean (P,); ``stats``: the final x-coordinate moments (a1, c1, a2, c2, t2)
    (P <= 4; None above). P > 4: sub-kernel exactness (Eq. 4.98): the chain restricted to a
    subset of the inputs is the chain of that subset, so every entry (at most 4 distinct inputs)
    is taken from the run on a 4-input sub-kernel containing its inputs (C(P, 4) runs).
    """
    if net.block not in _ENGINES:
        raise NotImplementedError(
            f"order=2 (the next order in 1/N, docs/theory.md Sec. 4.12) is implemented for the blocks "
            f"{NEXT_ORDER_BLOCKS} (closed chains); got block={net.block!r}: use order=1")
    K0 = np.asarray(K0, dtype=float)
    P = K0.shape[0]
    if P <= SUBSET:
        return _next_order_single(net, K0, n_r, n_t)
    out = dict(V=np.zeros((P,) * 4), V1=np.zeros((P,) * 4), M=np.zeros((P, P)), M2=np.zeros((P, P)),
               stats=None, Ks=mean_field_kernel(net, K0=K0, all_layers=True))
    if net.block == "reduced":
        out["M_mean"], out["M2_mean"] = np.zeros(P), np.zeros(P)
    for sub in _subsets(P):
        s = np.array(sub)
        r = _next_order_single(net, K0[np.ix_(s, s)], n_r, n_t)
        ix4 = np.ix_(s, s, s, s)
        out["V"][ix4], out["V1"][ix4] = r["V"], r["V1"]
        out["M"][np.ix_(s, s)], out["M2"][np.ix_(s, s)] = r["M"], r["M2"]
        if "M_mean" in out:
            out["M_mean"][s], out["M2_mean"][s] = r["M_mean"], r["M2_mean"]
    return out


def _next_order_single(net, K0, n_r, n_t):
    eng = _ENGINES[net.block](net, np.asarray(K0, dtype=float), n_r, n_t)
    co = eng.co
    n = co.n
    c1, t2 = eng.initial()
    st = dict(a1=np.zeros(n), c1=c1, a2=np.zeros(n), c2=np.zeros((n, n)), t2=t2)
    for l in range(eng.n_steps):
        x, sc = eng.point(l), eng.scale(l)
        jac, Qf = eng.maps(l)
        J, H, T3, T4 = _derivs_from_jac(jac, x, sc, co.nk)
        Q0 = Qf(x[None])[0]
        dQ = _dQ(Qf, x, sc)
        hQ2 = _half_Q2(Qf, x, st["c1"], sc, Q0)
        R, T = eng.RT(l)
        st = _step(st, J, H, T3, T4, Q0, dQ, hQ2, R, T)
    nk = co.nk
    out = dict(V=co.full4(st["c1"][:nk, :nk]), V1=co.full4(st["c2"][:nk, :nk]),
               M=co.full2(st["a1"][:nk]), M2=co.full2(st["a2"][:nk]), stats=st, Ks=eng.Ks)
    if n > nk:
        out["M_mean"], out["M2_mean"] = st["a1"][nk:], st["a2"][nk:]
    return out
