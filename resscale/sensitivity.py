"""Sensitivity of the output correlation to the input correlation (docs/theory.md, Sec. 5).

Two inputs of equal norm q0 and correlation c0 stay of equal norm, so the
recursion reduces to the scalars q^l = K^l_aa = K^l_bb, k^l = K^l_ab (and the
common mean m^l for the reduced block). Since q^l does not depend on k^0,

    S = d c^L / d c^0 = (q0 / q^L) prod_{l=1}^{L} dk^l/dk^{l-1}              (Eq. 5.1)

with the exact one-step factors (A = E[phi' phi'] at the current (q, k)):

    full         dk^l/dk^{l-1} = 1 + alpha^2 sigma_w2 A(q, q, k)                (Eq. 5.2)
    reduced      dk^l/dk^{l-1} = 1 + alpha^2 sigma_w2 A(Z_q, Z_q, Z_k),  Z = sigma_w2 K + sigma_b2
    feedforward  dk^l/dk^{l-1} = sigma_w2 A(q, q, k)

evaluated in log space (a sum of logs) and vectorised over a whole grid of
alphas in one pass. c0 = 1 gives the normalised mean squared input-output
Jacobian (Eq. 5.3).
"""
from __future__ import annotations

import numpy as np

from .inputs import Q0_MIN, check_scalar, scale_culprits
from .inputs import check_alphas as _check_alphas

_TINY = 1e-300
_Q_OVERFLOW = float(np.finfo(float).max) / 4.0


def check_alphas(alphas) -> np.ndarray:
    """Validate an alpha grid (finite, >= 0, 1-D; strings refused): :func:`resscale.inputs.check_alphas`."""
    return _check_alphas(alphas, "alphas")


def two_input_trajectory(net, c0, q0, alphas):
    """Run the equal-norm two-input recursion for every alpha in ``alphas`` at once.

    Returns a dict of arrays over alphas: ``log_q`` (log q^L), ``c`` (c^L),
    ``log_dk`` (sum over layers of log dk^l/dk^{l-1}), ``overflow`` (bool mask).

    erf with the full or reduced block takes a fused closed-form path
    (:func:`_erf_trajectory`, Sec. 5.1 of docs/theory.md): the same formulas in a few
    in-place array passes per layer, the log of the product of the one-step factors
    taken once per block of layers; :func:`_reference_trajectory` is the plain path
    (kept as the reference; they agree to ~1e-13 relative, tests/test_meanfield_speed.py).
    """
    if type(net.phi).__name__ == "_Erf" and net.block in ("full", "reduced"):
        return _erf_trajectory(net, c0, q0, alphas)
    return _reference_trajectory(net, c0, q0, alphas)


def _finish(q, k, s, log_dk):
    log_q = np.log(np.maximum(q, _TINY)) + s
    c = np.clip(k / np.maximum(q, _TINY), -1.0, 1.0)
    # q >= float64 max / 4: the next 1 + 2 q overflows (the paths would differ there): overflow
    bad = ~(np.isfinite(q) & np.isfinite(k) & np.isfinite(log_dk) & (np.abs(q) < _Q_OVERFLOW))
    log_q[bad] = np.nan
    return {"log_q": log_q, "c": c, "log_dk": log_dk, "overflow": bad}


def _reference_trajectory(net, c0, q0, alphas):
    """The generic two-input recursion (any activation, any block), one layer at a time.

    Quadrature activations use the tabulated pair functions when the work is large
    (:func:`resscale.tabulated_pairs.for_trajectory`; RESSCALE_TABULATED=0 keeps the quadrature)."""
    from .tabulated_pairs import for_trajectory
    L = net.depth
    a = alphas
    phi = for_trajectory(net.phi, L * np.size(a))
    fast = _tabulated_compiled(net, phi, c0, q0, a)
    if fast is not None:
        return fast
    return _finish(*_plain_recursion(net, phi, c0, q0, a))


def _tabulated_compiled(net, phi, c0, q0, a):
    """The compiled (numba) two-input recursion on the tables of a tabulated activation
    (:meth:`resscale.tabulated_pairs.TabulatedActivation.compiled_trajectory`; full, reduced
    and two_layer blocks), or None (not tabulated, other block, numba unavailable or not worth
    loading). Alphas whose trajectory leaves the table are recomputed by the plain recursion."""
    import os
    from .tabulated_pairs import TabulatedActivation
    if not isinstance(phi, TabulatedActivation) or np.size(a) == 0:
        return None
    L, n = int(net.depth), int(np.size(a))
    # loading numba and the cached kernel costs ~1 s once; the NumPy table path ~L (40 + 1.3 n) microseconds
    load = bool(os.environ.get("RESSCALE_NUMBA")) or L * (40e-6 + 1.3e-6 * n) > 0.3
    r = phi.compiled_trajectory(net.block, net.sigma_w2, net.sigma_b2, L, c0, q0, a, load=load)
    if r is None:
        return None
    q, k, log_dk = r["q"], r["k"], r["log_dk"]
    bad = ~r["ok"]
    if np.any(bad):
        qb, kb, _, lb = _plain_recursion(net, phi, c0, q0, a[bad])
        q[bad], k[bad], log_dk[bad] = qb, kb, lb
    return _finish(q, k, np.zeros(a.shape), log_dk)


def _plain_recursion(net, phi, c0, q0, a):
    """(q, k, s, log_dk) of the layer-by-layer NumPy recursion with activation ``phi``."""
    sw2, sb2_raw, L = net.sigma_w2, net.sigma_b2, net.depth
    a2 = a * a
    q = np.full(a.shape, float(q0))
    k = np.full(a.shape, float(q0) * float(c0))
    m = np.zeros(a.shape)
    s = np.zeros(a.shape)  # log-scale (homogeneous activations only)
    log_dk = np.zeros(a.shape)
    block, homog = net.block_type, phi.homogeneous
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(L):
            q, k, m, s, log_dk = _two_input_step(phi, block, homog, sw2, sb2_raw, a, a2, q, k, m, s, log_dk)
    return q, k, s, log_dk


def _erf_trajectory(net, c0, q0, alphas):
    """Fused two-input recursion for phi = erf, full or reduced block (Eq. 5.2 with Eq. 2.4).

    With z = q (full) or z = sigma_w2 q + sigma_b2 (reduced), zk likewise, d = 1 + 2 z,
    x = 2 zk / d:  G = (2/pi) asin x, g = (2/pi) asin(2 z / d),
    A = (4/pi) / (d sqrt(1 - x^2)); the factors 1 + alpha^2 sw2 A lie in
    [1, 1 + (4/pi) alpha^2 sw2], so their product over ``blk`` layers stays finite
    and one log per block replaces one log1p per layer.
    """
    sw2, sb2, L = float(net.sigma_w2), float(net.sigma_b2), net.depth
    full = net.block == "full"
    a = np.asarray(alphas, dtype=float)
    nb = _numba_kernel((L, a.size))
    if a.size <= 2 and nb is None:
        return _erf_trajectory_scalar(full, sw2, sb2, L, float(c0), float(q0), a)
    a2 = a * a
    c1 = (a2 * sw2) * (4.0 / np.pi)                      # alpha^2 sw2 (4/pi); this order: no overflow at sw2 ~ 1e308
    cg = c1 / 2.0 if full else a2 * (2.0 / np.pi)       # q += cg * asin(.) + cb
    cb = a2 * sb2 if full else np.zeros_like(a)
    c1h = 0.5 * c1
    fmax = float(np.max(np.log1p(c1))) if a.size else 0.0
    blk = int(max(1, min(64, 600.0 // max(fmax, 1e-300))))
    if nb is not None:
        q, k, log_dk = nb(full, sw2, sb2, int(L), float(c0), float(q0), a)
        return _finish(q, k, np.zeros(a.shape), log_dk)
    n = a.size
    Y = np.empty((2, n))                                 # rows: q, k
    Y[0] = float(q0)
    Y[1] = float(q0) * float(c0)
    log_dk = np.zeros(n)
    prod = np.ones(n)
    X, Z = np.empty((2, n)), np.empty((2, n))
    inv, t = np.empty(n), np.empty(n)
    cg2 = np.broadcast_to(cg, (2, n))
    mul, add, div = np.multiply, np.add, np.divide
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for layer in range(L):
            if full:
                Zr = Y
            else:
                mul(Y, sw2, out=Z)
                add(Z, sb2, out=Z)
                Zr = Z
            mul(Zr[0], 2.0, out=inv)
            add(inv, 1.0, out=inv)                   # d = 1 + 2 z
            div(2.0, inv, out=inv)                   # 2 / d
            mul(Zr, inv, out=X)                      # (2 z / d, x = 2 zk / d)
            np.minimum(X, 1.0, out=X)
            mul(X[1], X[1], out=t)
            np.subtract(1.0, t, out=t)
            # 1 - x^2 >= (1 + 4 z) / d^2 exactly (|zk| <= z): the floor keeps the factor <= 1 + c1 where
            # x rounds to 1 (huge z, c -> 1), as in the scalar and numba paths (no inf/NaN from rounding)
            np.maximum(t, ((0.25 + Zr[0]) * inv) * inv, out=t)
            np.sqrt(t, out=t)
            div(inv, t, out=t)                       # 2 / (d sqrt(1 - x^2))
            mul(t, c1h, out=t)
            add(t, 1.0, out=t)
            mul(prod, t, out=prod)                   # prod of 1 + alpha^2 sw2 A
            np.arcsin(X, out=X)                      # (pi/2) (g, G)
            mul(X, cg2, out=X)
            add(Y, X, out=Y)
            if full and sb2:
                Y += cb
            if (layer + 1) % blk == 0:
                log_dk += np.log(prod)
                prod.fill(1.0)
        log_dk += np.log(prod)
    q, k = Y[0].copy(), Y[1].copy()
    return _finish(q, k, np.zeros(a.shape), log_dk)


def _erf_kernel_py(full, sw2, sb2, L, c0, q0, alphas):
    """Compiled (numba) body of :func:`_erf_trajectory`, same formulas; layers outside,
    alphas inside (independent alphas overlap in the CPU pipeline)."""
    n = alphas.size
    Q, K, LG, PR = np.full(n, q0), np.full(n, q0 * c0), np.zeros(n), np.ones(n)
    C1, CG, CB = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        a2 = alphas[i] * alphas[i]
        C1[i] = a2 * sw2 * 4.0 / np.pi
        CG[i] = C1[i] / 2.0 if full else a2 * 2.0 / np.pi
        CB[i] = a2 * sb2 if full else 0.0
    for _ in range(L):
        for i in range(n):
            q, k = Q[i], K[i]
            if full:
                z, zk = q, k
            else:
                z, zk = sw2 * q + sb2, sw2 * k + sb2
            inv = 1.0 / (1.0 + 2.0 * z)
            x = min(2.0 * zk * inv, 1.0)
            p = PR[i] * (1.0 + C1[i] * inv / np.sqrt(max(1.0 - x * x, ((1.0 + 4.0 * z) * inv) * inv, _TINY)))
            if p > 1e250:
                LG[i] += np.log(p)
                p = 1.0
            PR[i] = p
            Q[i] = q + CG[i] * np.arcsin(min(2.0 * z * inv, 1.0)) + CB[i]
            K[i] = k + CG[i] * np.arcsin(max(x, -1.0)) + CB[i]
    for i in range(n):
        LG[i] += np.log(PR[i])
    return Q, K, LG


def _compile_numba():
    """numba.njit(_erf_kernel_py) when numba is installed and RESSCALE_NO_NUMBA is unset; else None."""
    import os
    if os.environ.get("RESSCALE_NO_NUMBA"):
        return None
    try:
        import numba
    except Exception:
        return None
    try:
        return numba.njit(cache=True, fastmath=False, error_model="numpy")(_erf_kernel_py)
    except Exception:  # pragma: no cover
        return None


_UNSET = object()
_nb_erf = _UNSET   # resolved on first use (importing numba costs ~0.5 s; keep `import resscale` fast)


def _numba_kernel(work=None, force=False):
    """The compiled erf kernel, or None (numba absent, or RESSCALE_NO_NUMBA set).

    Loading numba and the cached kernel costs ~1 s once per process, more than a
    NumPy pass at L = 1000 (~20 ms). So it is used when it is already loaded, when
    ``force`` or RESSCALE_NUMBA=1 asks for it, or when the NumPy estimate for this call
    (``work`` = (L, n_alphas): ~L (15 + 0.05 n) microseconds) exceeds 0.2 s.
    """
    global _nb_erf
    import os
    if _nb_erf is not _UNSET:
        return _nb_erf
    if os.environ.get("RESSCALE_NO_NUMBA"):
        return None
    big = work is not None and work[0] * (15e-6 + 5e-8 * work[1]) > 0.2
    if force or big or os.environ.get("RESSCALE_NUMBA"):
        _nb_erf = _compile_numba()
        return _nb_erf
    return None


def _erf_trajectory_scalar(full, sw2, sb2, L, c0, q0, alphas):
    """:func:`_erf_trajectory` for one or two alphas: a plain Python loop (math module)."""
    import math
    out_q, out_k, out_l = [], [], []
    for al in alphas:
        a2 = float(al) * float(al)
        c1 = a2 * sw2 * 4.0 / math.pi
        cg = c1 / 2.0 if full else a2 * 2.0 / math.pi
        cb = a2 * sb2 if full else 0.0
        q, k, lg, prod = q0, q0 * c0, 0.0, 1.0
        asin, sqrt = math.asin, math.sqrt
        try:
            for _ in range(L):
                if full:
                    z, zk = q, k
                else:
                    z, zk = sw2 * q + sb2, sw2 * k + sb2
                inv = 1.0 / (1.0 + 2.0 * z)
                x = 2.0 * zk * inv
                prod *= 1.0 + c1 * inv / sqrt(max(1.0 - x * x, ((1.0 + 4.0 * z) * inv) * inv, _TINY))
                if prod > 1e250:
                    lg += math.log(prod)
                    prod = 1.0
                q, k = q + cg * asin(2.0 * z * inv) + cb, k + cg * asin(min(max(x, -1.0), 1.0)) + cb
            lg += math.log(prod)
        except (OverflowError, ValueError):
            q, k, lg = math.inf, math.inf, math.nan
        out_q.append(q)
        out_k.append(k)
        out_l.append(lg)
    q, k, lg = (np.array(v, dtype=float) for v in (out_q, out_k, out_l))
    with np.errstate(invalid="ignore", over="ignore"):
        return _finish(q, k, np.zeros(q.shape), lg)


def _two_input_step(phi, block, homog, sw2, sb2_raw, a, a2, q, k, m, s, log_dk):
    """One layer of the two-input recursion (Eq. 5.2) for arrays over alphas (the block's
    ``two_input_step``, :mod:`resscale.blocks`), with the log-space renormalisation."""
    sb2 = sb2_raw * np.exp(-s) if homog else sb2_raw
    q, k, m, dlog = block.two_input_step(phi, sw2, sb2, a, a2, q, k, m)
    log_dk = log_dk + dlog
    if homog:  # renormalise every layer: q~ = 1, k~ = c
        r = np.maximum(q, _TINY)
        q, k, m = q / r, k / r, m / np.sqrt(r)
        s = s + np.log(r)
    return q, k, m, s, log_dk


def log_sensitivity(net, c0, q0=1.0, alphas=None, strict=True) -> np.ndarray:
    """log S(alpha) (Eq. 5.1) for every alpha of ``alphas`` (default: net.alpha).

    The kernel of a non-homogeneous, unbounded activation (gelu) can exceed
    float64 at large alpha^2 L; then ``strict=True`` raises OverflowError naming
    the first such alpha, and ``strict=False`` returns nan there.
    """
    c0 = check_scalar("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_scalar("q0", q0, lo=Q0_MIN)
    a = check_alphas(net.alpha if alphas is None else alphas)
    tr = two_input_trajectory(net, c0, q0, a)
    out = tr["log_dk"] + np.log(q0) - tr["log_q"]
    if strict and np.any(tr["overflow"]):
        culprits = scale_culprits(net, q0=q0, alphas=a)
        raise OverflowError(f"the mean-field kernel of activation {net.phi.name!r} exceeds float64 for "
                            f"alphas >= {a[tr['overflow']].min():.4g} at depth {net.depth}"
                            + (f" (large inputs: {culprits})" if culprits else "")
                            + "; reduce alphas, q0, depth or the variances sigma_w2 / sigma_b2 of net")
    return out


def sensitivity(net, c0, q0=1.0, alphas=None):
    """S = d c^L / d c^0 for two inputs of norm q0 and correlation c0 (diagonal held fixed).

    Exact mean-field value (docs/theory.md Eq. 5.1-5.2). ``alphas=None`` uses
    ``net.alpha`` and returns a float; an array of alphas returns an array (one
    vectorised pass over the grid). c0 = 1 gives the normalised mean squared
    input-output Jacobian (Eq. 5.3). For ``block="feedforward"`` alpha is
    irrelevant.
    """
    logS = log_sensitivity(net, c0, q0, alphas)
    S = np.exp(np.minimum(logS, 709.0))
    if np.any(logS > 709.0):
        raise OverflowError(f"sensitivity exceeds float64 (log S up to {float(np.max(logS)):.4g}) for alphas >= "
                            f"{float(np.min(np.atleast_1d(net.alpha if alphas is None else alphas)[logS > 709.0])):.4g}"
                            "; use log_sensitivity, or reduce alphas, depth or sigma_w2 of net")
    if alphas is None or np.ndim(alphas) == 0:
        return float(S[0])
    return S
