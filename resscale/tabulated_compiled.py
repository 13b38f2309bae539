"""Compiled (numba) evaluation of the tabulated pair functions (issue 9; docs/theory.md Sec. 5.1).

Split from :mod:`resscale.tabulated_pairs` (the tables' policy and NumPy evaluation; their build:
:mod:`resscale.tabulated_build`).
Here: the same interpolation one point at a time (``_eval_py`` = ``_locate_py``, the cell and
fractions, then ``_combine_py``, the weighted sums and exponentials), the fused equal-norm two-input
recursion of the full, reduced and two_layer blocks on it (``_traj_py``, used through
:meth:`TabulatedActivation.compiled_trajectory`; per layer short loops over the alphas --
locate, table sums, exponentials, update -- rather than one loop with the whole evaluation as its body: one
evaluation is a long dependency chain (log, divisions, square roots, weights, sums, exp), and
short bodies let the CPU overlap independent alphas: ~1.7x faster; then all but the table sums
branch-free with inline log / exp, :func:`_log_fast_py`, :func:`_exp_fast_py`, so that those loops
vectorize over the alphas: ~1.8x faster again, results equal to rounding; docs/theory.md Sec. 5.1) and
one-point evaluators for the continuum flow. Plain Python functions, compiled by :func:`_compiled` with
numba (cache=True) when it is installed and RESSCALE_NO_NUMBA is unset; without numba nothing
here runs (the NumPy path in :mod:`resscale.tabulated_pairs` is used instead).
"""
from __future__ import annotations

import math
import os
import threading

import numpy as np

from .asymptotic_pairs import pair_scalar as _asym_py
from .tabulated_build import BETA, EPS, _GHOST, _LM, _OFFS, _ORDER

_LOCK = threading.Lock()

# ------------------------------------------------------------------ compiled path (numba)
# The same interpolation as TabulatedActivation._eval, one point at a time, and the fused
# two-input recursion of the full, reduced and two_layer blocks on it (docs/theory.md Sec. 5.1).
# A trajectory whose (z, zk) leaves the table (z outside [Q_LO, Q_HI], zk not finite) is
# stopped there and flagged; the caller recomputes those alphas with the NumPy path.
_LW_INV = np.array([(-1.0) ** (_ORDER - 1 - m) / (math.factorial(m) * math.factorial(_ORDER - 1 - m))
                    for m in range(_ORDER)])
_LW_OFF = np.array([float(o) for o in _OFFS])
assert _ORDER == 8, "the compiled evaluator below is unrolled for _ORDER = 8"
_TT_BIG = 1e8 * EPS            # asinh(y) = log(2 y) + 1/(4 y^2) - ...: for y > 1e8 the 1/(4 y^2) < 2.5e-17 (v >~ 20)
_TWO_OVER_EPS = 2.0 / EPS
_INV_EPS, _INV_EPS2 = 1.0 / EPS, 1.0 / (EPS * EPS)
_LN2 = math.log(2.0)
_KINDS = {"full": 0, "reduced": 1, "two_layer": 2}


def _lw_py(u, w):
    """Lagrange weights at nodes _OFFS (prefix / suffix products), into w (len _ORDER)."""
    left = 1.0
    for m in range(_ORDER):
        w[m] = left
        left *= u - _LW_OFF[m]
    right = 1.0
    for m in range(_ORDER - 1, -1, -1):
        w[m] *= right * _LW_INV[m]
        right *= u - _LW_OFF[m]


def _eval_py(z, zk, T, D, modes, P, wx, wv):
    """(ok, G, A, g, mu) at (z, zk) = (q, k) of equal-norm inputs: the tables' interpolation
    (as TabulatedActivation._eval), fused, on local scalars; ok False (the rest 0) outside the table.
    T: flat 2-D tables (halves, nx_tot, nv_tot, 2) (A, R interleaved), D: flat 1-D table
    (nx_tot, ncol) (log g, log N[, G(q,-1)/g, E[phi]/sqrt(g)]), modes (halves, 2): log form;
    P = (xs0, hx, hv, x_lo, x_hi, nxc, nvc, nv_tot, nx_tot, halves, ncol, asym, a^2, b^2, b):
    with asym = 1, finite z above the table (x > x_hi) use the homogeneous limit's closed forms
    (:func:`resscale.asymptotic_pairs.pair_scalar`).
    Table offsets are unsigned (np.uint64): NumPy-style negative-index wrap-around costs
    a compare and select per load (~20% of the evaluation)."""
    s, ix, ux, iv, uv, h, num = _locate_nb(z, zk, P)
    if s == 0:
        return False, 0.0, 0.0, 0.0, 0.0
    if s == 2:
        G, A, g, mu = _asym_nb(z, zk, P[12], P[13], P[14])
        return True, G, A, g, mu
    G, A, g, mu = _combine_nb(ix, ux, iv, uv, h, num, zk, T, D, modes, P, wx, wv)
    return True, G, A, g, mu


def _locate_py(z, zk, P):
    """(status, ix, ux, iv, uv, h, num) of (z, zk): status 0 outside the table, 2 beyond it with the
    homogeneous limit, 1 inside: cell (ix, iv), fractions (ux, uv), half h, num = z - |zk| (or q -+ k)."""
    if not (z > 0.0) or not math.isfinite(zk):
        return 0, 0, 0.0, 0, 0.0, 0, 0.0
    x = math.log(z)
    if not (x >= P[3] and x <= P[4]):
        if x > P[4] and P[11] == 1.0 and math.isfinite(z):
            return 2, 0, 0.0, 0, 0.0, 0, 0.0
        return 0, 0, 0.0, 0, 0.0, 0, 0.0
    t = (x - P[0]) / P[1] - (_ORDER // 2 - 1)
    fi = min(max(math.floor(t), 0.0), P[5] - 1.0)
    odd = P[9] == 1.0
    h = 0
    if odd:
        ka = abs(zk)
        num, den = max(z - ka, 0.0), z + ka
    else:
        dd, ss = max(z - zk, 0.0), max(z + zk, 0.0)
        if dd <= ss:
            num, den = dd, ss
        else:
            num, den, h = ss, dd, 1
    tt = math.sqrt(num / den)
    if tt > _TT_BIG:                    # asinh(y) = log(2 y) + O(y^-2), y = t / EPS > 1e8: below rounding
        v = math.log(tt * _TWO_OVER_EPS) + (2.0 * BETA) * tt
    else:                               # asinh(y), accurate for small y, without math.asinh (slow)
        y = tt / EPS
        v = math.log1p(y + y * y / (1.0 + math.sqrt(1.0 + y * y))) + (2.0 * BETA) * tt
    tv = v / P[2] + (_GHOST - (_ORDER // 2 - 1))
    fj = min(max(math.floor(tv), 0.0), P[6] - 1.0)
    return 1, int(fi), t - fi, int(fj), tv - fj, h, num


def _table_sums_py(ix, ux, iv, uv, h, T, D, P, wx, wv):
    """The Lagrange-weighted table sums in cell (ix, iv) at fractions (ux, uv): (log g, log N, FA, FR, d2, d3)."""
    _lw_nb(ux, wx)
    _lw_nb(uv, wv)
    odd = P[9] == 1.0
    u1, u2, u3 = np.uint64(1), np.uint64(2), np.uint64(3)
    # 1-D table: rows ix..ix+7
    nc = np.uint64(int(P[10]))
    d = np.uint64(ix * int(P[10]))
    lg, ln, d2, d3 = 0.0, 0.0, 0.0, 0.0
    for a in range(_ORDER):
        wa = wx[a]
        lg += wa * D[d]
        ln += wa * D[d + u1]
        if not odd:
            d2 += wa * D[d + u2]
            d3 += wa * D[d + u3]
        d += nc
    # 2-D table: rows ix..ix+7 of half h, 2 * _ORDER contiguous values (A, R interleaved) from column iv
    u4, u5, u6, u7 = np.uint64(4), np.uint64(5), np.uint64(6), np.uint64(7)
    u8, u9, u10, u11 = np.uint64(8), np.uint64(9), np.uint64(10), np.uint64(11)
    u12, u13, u14, u15 = np.uint64(12), np.uint64(13), np.uint64(14), np.uint64(15)
    nv2 = 2 * int(P[7])
    r = np.uint64((h * int(P[8]) + ix) * nv2 + 2 * iv)
    step = np.uint64(nv2)
    w0, w1, w2, w3, w4, w5, w6, w7 = wv[0], wv[1], wv[2], wv[3], wv[4], wv[5], wv[6], wv[7]
    FA, FR = 0.0, 0.0
    for a in range(_ORDER):
        sa = ((w0 * T[r] + w1 * T[r + u2]) + (w2 * T[r + u4] + w3 * T[r + u6])
              + ((w4 * T[r + u8] + w5 * T[r + u10]) + (w6 * T[r + u12] + w7 * T[r + u14])))
        sr = ((w0 * T[r + u1] + w1 * T[r + u3]) + (w2 * T[r + u5] + w3 * T[r + u7])
              + ((w4 * T[r + u9] + w5 * T[r + u11]) + (w6 * T[r + u13] + w7 * T[r + u15])))
        FA += wx[a] * sa
        FR += wx[a] * sr
        r += step
    return lg, ln, FA, FR, d2, d3


def _combine_py(ix, ux, iv, uv, h, num, zk, T, D, modes, P, wx, wv):
    """(G, A, g, mu) interpolated in cell (ix, iv) at fractions (ux, uv) (from _locate_py)."""
    lg, ln, FA, FR, d2, d3 = _table_sums_nb(ix, ux, iv, uv, h, T, D, P, wx, wv)
    odd = P[9] == 1.0
    g = math.exp(lg)
    if modes[h, 0] and modes[h, 1]:
        A = math.exp(FA + ln)
        RN = math.exp(FR + ln)
    else:
        N = math.exp(ln)
        A = math.exp(FA) * N if modes[h, 0] else FA * N
        RN = math.exp(FR) * N if modes[h, 1] else FR * N
    if odd:
        G = math.copysign(g - num * RN, zk)
    elif h == 0:
        G = g - num * RN
    else:
        G = g * d2 + num * RN
    mu = 0.0 if odd else math.sqrt(g) * d3
    return G, A, g, mu


# ---- branch-free inline log / exp (no library call): the trajectory's per-alpha loops vectorize (SIMD)
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10   # (fdlibm's split of log 2)
_LOG2E = 1.4426950408889634
_SQRT2 = 1.4142135623730951
_LOG_C = tuple(1.0 / (2 * n + 1) for n in range(1, 12))      # atanh series 1/3 .. 1/23
_EXP_C = tuple(1.0 / math.factorial(n) for n in range(14))
_MANT, _ONE_BITS = np.int64(0xFFFFFFFFFFFFF), np.int64(0x3FF0000000000000)


def _log_fast_py(z):
    """log z for positive normal finite z (~1 ulp; no call, no branch; other z: garbage, not trapped):
    z = 2^e m, m in [1/sqrt 2, sqrt 2), log m = 2 atanh(s), s = (m - 1)/(m + 1), |s| <= 0.172, series to s^23
    (remainder < 1e-19)."""
    b = np.float64(z).view(np.int64)
    e = (b >> np.int64(52)) - np.int64(1023)
    m = np.int64((b & _MANT) | _ONE_BITS).view(np.float64)
    big = m > _SQRT2
    m = 0.5 * m if big else m
    ef = float(e) + (1.0 if big else 0.0)
    sm = (m - 1.0) / (m + 1.0)
    s2 = sm * sm
    c = _LOG_C
    s4 = s2 * s2
    p = ((c[0] + s2 * c[1]) + s4 * (c[2] + s2 * c[3])) + (s4 * s4) * (
        ((c[4] + s2 * c[5]) + s4 * (c[6] + s2 * c[7])) + (s4 * s4) * ((c[8] + s2 * c[9]) + s4 * c[10]))
    lm = 2.0 * sm + (2.0 * sm * s2) * p
    return ef * _LN2_HI + (lm + ef * _LN2_LO)


def _exp_fast_py(x):
    """exp x for |x| <= 700 (~1 ulp; no call, no branch; callers redo |x| > 700 and NaN with math.exp):
    x = k log 2 + r, |r| <= log(2)/2, Taylor to r^13 (remainder < 5e-18), times 2^k from the exponent bits."""
    x = min(max(x, -700.0), 700.0)
    k = math.floor(x * _LOG2E + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    c = _EXP_C
    q0 = (c[0] + r * c[1]) + r2 * (c[2] + r * c[3])
    q1 = (c[4] + r * c[5]) + r2 * (c[6] + r * c[7])
    q2 = (c[8] + r * c[9]) + r2 * (c[10] + r * c[11])
    p = (q0 + r4 * q1) + (r4 * r4) * (q2 + r4 * (c[12] + r * c[13]))
    return p * np.int64((np.int64(k) + np.int64(1023)) << np.int64(52)).view(np.float64)


def _sums_py(i, ix, ux, iv, uv, h, T, D, P, wx, wv, S):
    """The weighted table sums of _combine_py for alpha i, into S[:, i] = (log g, log N, FA, FR, d2, d3)."""
    lg, ln, FA, FR, d2, d3 = _table_sums_nb(ix, ux, iv, uv, h, T, D, P, wx, wv)
    S[0, i], S[1, i], S[2, i], S[3, i], S[4, i], S[5, i] = lg, ln, FA, FR, d2, d3


def _traj_py(kind, sw2, sb2, L, c0, q0, alphas, T, D, modes, P):
    """Fused equal-norm two-input recursion (the blocks' two_input_step) for every alpha:
    layers outside, alphas inside, in stages, each a loop over the alphas: (1) cell location, branch-free
    with the inline log (vectorized: SIMD over alphas); the few alphas outside the table (homogeneous limit,
    or stop) one by one as in _locate_py; (2) the weights and table sums (scalar: gathers); (3) the three
    exponentials, inline and branch-free (SIMD; |arg| > 700 or NaN redone with math.exp); (4) the update
    (SIMD; the running product of the one-step factors renormalised by its exponent bits, exactly).
    The arithmetic of _eval_py up to rounding (inline log / exp ~1 ulp; asinh(y) as
    log1p(y + y^2 / (1 + sqrt(1 + y^2))) for all y). Returns q, k, log_dk, ok (False: the trajectory left
    the table and was stopped there). With the homogeneous-limit continuation (P[11] = 1) a trajectory
    whose (z, zk) overflows (not finite) ends there with q = k = log_dk = NaN and ok True: the NumPy path
    gives NaN from there on as well."""
    n = alphas.size
    Q, K, M = np.full(n, q0), np.full(n, q0 * c0), np.zeros(n)
    LG, PR = np.zeros(n), np.ones(n)
    OK = np.ones(n, dtype=np.bool_)
    DONE = np.zeros(n, dtype=np.bool_)
    wx, wv = np.empty(_ORDER), np.empty(_ORDER)
    odd = P[9] == 1.0
    cf = sw2 * sw2 if kind == 2 else sw2
    ST = np.zeros(n, dtype=np.int64)            # 0 idle, 1 table, 2 homogeneous limit
    LIVE = np.ones(n, dtype=np.int64)           # OK and not DONE
    IX, IV, HH = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    UX, UV, NUM, ZK = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    GG, AA, gg, MU = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    S = np.zeros((6, n))
    xs0, ihx, ihv, x_lo, x_hi = P[0], 1.0 / P[1], 1.0 / P[2], P[3], P[4]
    nx1, nv1 = P[5] - 1.0, P[6] - 1.0
    b2 = 2.0 * BETA
    lgm = [bool(modes[hh, 0]) for hh in range(modes.shape[0])]
    lrm = [bool(modes[hh, 1]) for hh in range(modes.shape[0])]
    mA0, mR0 = lgm[0], lrm[0]
    mA1, mR1 = lgm[-1], lrm[-1]
    for _ in range(L):
        n_in = 0
        for i in range(n):              # stage 1: cells (SIMD); outside the table: flagged
            q, k = Q[i], K[i]
            if kind == 0:
                z, zk = q, k
            else:
                z, zk = sw2 * q + sb2, sw2 * k + sb2
            x = _log_fast_nb(z)
            inside = (LIVE[i] == 1) & (z > 0.0) & (z < math.inf) & (abs(zk) < math.inf) & (x >= x_lo) & (x <= x_hi)
            x = x if inside else xs0
            t = (x - xs0) * ihx - (_ORDER // 2 - 1)
            fi = min(max(math.floor(t), 0.0), nx1)
            if odd:
                ka = abs(zk)
                num, den, h = max(z - ka, 0.0), z + ka, 0
            else:
                dd, ss = max(z - zk, 0.0), max(z + zk, 0.0)
                h = 0 if dd <= ss else 1
                num, den = (dd, ss) if h == 0 else (ss, dd)
            rr = num / den
            rr = rr if inside else 0.0
            tt = math.sqrt(rr)
            y2 = rr * _INV_EPS2
            w = tt * _INV_EPS + y2 / (1.0 + math.sqrt(1.0 + y2))     # asinh(y) = log1p(w), y = t / EPS
            uw = 1.0 + w
            v = (_log_fast_nb(uw) + (w - (uw - 1.0)) / uw) + b2 * tt
            tv = v * ihv + (_GHOST - (_ORDER // 2 - 1))
            fj = min(max(math.floor(tv), 0.0), nv1)
            IX[i], UX[i], IV[i], UV[i] = int(fi), t - fi, int(fj), tv - fj
            HH[i], NUM[i], ZK[i] = h, num, zk
            ST[i] = 1 if inside else 0
            n_in += 1 if inside else 0
        alive = n_in > 0
        if n_in < n:                    # the rest: homogeneous limit, stop, or idle (as _locate_py)
            for i in range(n):
                if ST[i] == 1 or LIVE[i] == 0:
                    continue
                q, k = Q[i], K[i]
                if kind == 0:
                    z, zk = q, k
                else:
                    z, zk = sw2 * q + sb2, sw2 * k + sb2
                s, ix, ux, iv, uv, h, num = _locate_nb(z, zk, P)
                if s == 0:
                    if P[11] == 1.0 and not (math.isfinite(z) and math.isfinite(zk)):
                        Q[i], K[i], LG[i], PR[i] = math.nan, math.nan, math.nan, 1.0
                        DONE[i] = True
                    OK[i] = DONE[i]
                    LIVE[i] = 0
                    continue
                alive = True
                ST[i] = s
                if s == 2:
                    GG[i], AA[i], gg[i], MU[i] = _asym_nb(z, zk, P[12], P[13], P[14])
                else:                   # (not reached: stage 1 found it outside)
                    IX[i], IV[i], UX[i], UV[i], HH[i], NUM[i], ZK[i] = ix, iv, ux, uv, h, num, zk
                    _sums_nb(i, ix, ux, iv, uv, h, T, D, P, wx, wv, S)
        if not alive:
            break
        for i in range(n):              # stage 2: weights and table sums
            if ST[i] == 1:
                _sums_nb(i, IX[i], UX[i], IV[i], UV[i], HH[i], T, D, P, wx, wv, S)
        fix = False
        for i in range(n):              # stage 3: exponentials (SIMD), G, A, g, mu
            lg, ln, FA, FR, d2, d3 = S[0, i], S[1, i], S[2, i], S[3, i], S[4, i], S[5, i]
            h = HH[i]
            mA = mA0 if h == 0 else mA1
            mR = mR0 if h == 0 else mR1
            ea, eb = (FA + ln) if mA else ln, (FR + ln) if mR else ln
            fix |= (ST[i] == 1) & ~((abs(lg) <= 700.0) & (abs(ea) <= 700.0) & (abs(eb) <= 700.0))
            g = _exp_fast_nb(lg)
            A = _exp_fast_nb(ea) * (1.0 if mA else FA)
            RN = _exp_fast_nb(eb) * (1.0 if mR else FR)
            num = NUM[i]
            if odd:
                G0 = g - num * RN
                G = -G0 if ZK[i] < 0.0 else G0
                mu = 0.0
            else:
                G = g - num * RN if h == 0 else g * d2 + num * RN
                mu = math.sqrt(g) * d3
            t1 = ST[i] == 1
            GG[i], AA[i], gg[i], MU[i] = (G if t1 else GG[i]), (A if t1 else AA[i]), (g if t1 else gg[i]), \
                (mu if t1 else MU[i])
        if fix:                         # an exponent beyond +-700 or NaN: math.exp (as _combine_py)
            for i in range(n):
                if ST[i] == 1:
                    lg, ln, FA, FR, d2, d3 = S[0, i], S[1, i], S[2, i], S[3, i], S[4, i], S[5, i]
                    if not ((abs(lg) <= 700.0) and (abs(FA + ln) <= 700.0) and (abs(FR + ln) <= 700.0)
                            and (abs(ln) <= 700.0)):
                        GG[i], AA[i], gg[i], MU[i] = _combine_nb(IX[i], UX[i], IV[i], UV[i], HH[i], NUM[i],
                                                                 ZK[i], T, D, modes, P, wx, wv)
        for i in range(n):              # stage 4: the recursion (SIMD)
            on = ST[i] != 0
            q, k = Q[i], K[i]
            G, A, g, mu = GG[i], AA[i], gg[i], MU[i]
            a = alphas[i]
            a2 = a * a
            f = 1.0 + a2 * cf * A
            fp = f > 0.0
            p = PR[i] * (f if fp else 1.0)
            # renormalise by the exponent bits: p = 2^e m exactly, LG += e log 2
            eb_ = ((np.float64(p).view(np.int64) >> np.int64(52)) & np.int64(2047)) - np.int64(1023)
            ren = (abs(eb_) > 800) & (p > 0.0) & (p < math.inf)
            e = float(eb_) if ren else 0.0
            p = p * (np.int64((np.int64(1023) - eb_) << np.int64(52)).view(np.float64) if ren else 1.0)
            dl = e * _LN2 + (0.0 if fp else (-math.inf if f == 0.0 else math.nan))
            PR[i] = p if on else PR[i]
            LG[i] = LG[i] + dl if on else LG[i]
            if kind == 1:
                if odd:
                    qn, kn, mn = q + a2 * g, k + a2 * G, M[i]
                else:
                    drift = 2.0 * a * M[i] * mu
                    qn, kn, mn = q + drift + a2 * g, k + drift + a2 * G, M[i] + a * mu
            else:
                qn, kn, mn = q + a2 * (sw2 * g + sb2), k + a2 * (sw2 * G + sb2), M[i]
            Q[i], K[i], M[i] = (qn if on else q), (kn if on else k), (mn if on else M[i])
            ST[i] = 0
    for i in range(n):
        LG[i] += math.log(PR[i])
    return Q, K, LG, OK


def _pair_scalar_py(z, zk, T, D, modes, P):
    """(ok, G, A, g) at one point."""
    wx, wv = np.empty(_ORDER), np.empty(_ORDER)
    ok, G, A, g, _ = _eval_nb(z, zk, T, D, modes, P, wx, wv)
    if not ok:
        return False, math.nan, math.nan, math.nan
    return True, G, A, g


def _log_g_scalar_py(x, D, P):
    """(interpolated log g, its derivative in x) at x = log q (power-form weights, as
    TabulatedActivation._one_d_with_derivative)."""
    t = (x - P[0]) / P[1] - (_ORDER // 2 - 1)
    fi = min(max(np.floor(t), 0.0), P[5] - 1.0)
    ix, u = int(fi), t - fi
    nc = int(P[10])
    val, der = 0.0, 0.0
    for m in range(_ORDER):
        w, dw, up = 0.0, 0.0, 1.0
        for p in range(_ORDER):
            w += _LM[m, p] * up
            if p + 1 < _ORDER:
                dw += _LM[m, p + 1] * (p + 1) * up
            up *= u
        val += w * D[(ix + m) * nc]
        der += dw * D[(ix + m) * nc]
    return val, der / P[1]


_lw_nb, _eval_nb, _asym_nb = _lw_py, _eval_py, _asym_py   # compiled in _compiled()
_locate_nb, _combine_nb = _locate_py, _combine_py
_log_fast_nb, _exp_fast_nb, _sums_nb = _log_fast_py, _exp_fast_py, _sums_py
_table_sums_nb = _table_sums_py
_NB = None                      # (trajectory kernel, scalar pair) once compiled; False: unavailable


def _compiled(load=True):
    """(trajectory kernel, scalar pair function), compiled with numba (cache=True), or None when
    numba is absent, RESSCALE_NO_NUMBA is set, or ``load`` is False and they are not loaded yet."""
    global _NB, _lw_nb, _eval_nb, _asym_nb, _locate_nb, _combine_nb, _log_fast_nb, _exp_fast_nb, _sums_nb
    global _table_sums_nb
    if os.environ.get("RESSCALE_NO_NUMBA"):
        return None
    if _NB is not None or not load:
        return _NB or None
    with _LOCK:
        if _NB is None:
            try:
                import numba
                # 'contract' (fused multiply-add) only: no reassociation, NaN/inf semantics kept
                opts = dict(cache=True, fastmath={"contract"}, error_model="numpy", nogil=True)
                inl = numba.njit(inline="always", **opts)
                _lw_nb, _asym_nb = inl(_lw_py), inl(_asym_py)
                _table_sums_nb = inl(_table_sums_py)
                _locate_nb, _combine_nb = inl(_locate_py), inl(_combine_py)
                _eval_nb = inl(_eval_py)
                _log_fast_nb, _exp_fast_nb, _sums_nb = inl(_log_fast_py), inl(_exp_fast_py), inl(_sums_py)
                _NB = (numba.njit(**opts)(_traj_py), numba.njit(**opts)(_pair_scalar_py),
                       numba.njit(**opts)(_log_g_scalar_py))
            except Exception:
                _lw_nb, _eval_nb, _asym_nb = _lw_py, _eval_py, _asym_py
                _locate_nb, _combine_nb = _locate_py, _combine_py
                _log_fast_nb, _exp_fast_nb, _sums_nb = _log_fast_py, _exp_fast_py, _sums_py
                _table_sums_nb = _table_sums_py
                _NB = False
    return _NB or None
