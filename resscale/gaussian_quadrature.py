"""Multi-dimensional Gaussian integrals for the finite-width theory (docs/theory.md Sec. 4.6).

The 1/N theory (:mod:`resscale.finite_width`) needs, for every pair of layers
k <= m, four-point functions of a Gaussian random walk such as

    E[ phi(x_a) phi(x_b) phi(y_c) phi(y_d) ],   x = h^k, y = h^m,  Cov(x, y) = K^k,

i.e. expectations of products of univariate factors of (at most four) jointly
Gaussian variables. Plain tensor Gauss-Hermite quadrature is useless here:
erf at large variance and relu both have (near-)kinks on hyperplanes, and 4-D
GH of order 40 still misses by 1e-2 (measured, docs/theory.md Sec. 4.6). The
scheme used instead (Eq. 4.30-4.32):

1. split the variables into an *outer* set (<= 2 variables) and an *inner*
   set (<= 2 variables); the inner set is Gaussian conditionally on the outer
   one, with mean B u (linear in the outer variables u) and covariance S
   (Schur complement);
2. the inner conditional expectation is done in closed form (erf, relu,
   linear: bivariate normal CDF via Owen's T) or, for other activations, by
   Gauss-Hermite of order 48 (1-D) / 32x32 (2-D) on the smooth conditional law;
3. the outer integral is done in polar coordinates of the whitened outer
   variables: radial Gauss-Laguerre in r^2/2 and, in angle, Gauss-Legendre on
   each arc between the directions where an outer variable or an inner
   conditional mean changes sign. Every kink of relu (and every steep step of
   erf at large variance) lies on such a line through the origin, so each
   piece is smooth and the quadrature converges spectrally.

Derivatives of the inner function with respect to the conditional means
(needed for E[phi'' phi], E[phi' phi'] in the mean shift M) are taken by
central differences with step 1e-3 sqrt(S) (relative error ~1e-6).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special

_SQ2 = math.sqrt(2.0)
_SQ2PI = math.sqrt(2.0 * math.pi)
_RHO_MAX = 1.0 - 1e-12


# ---------------------------------------------------------------- bivariate normal CDF
def bvn_cdf(h, k, rho):
    """P(X < h, Y < k) for a standard bivariate normal with correlation rho (vectorised).

    Owen's T representation (Owen 1956):
    Phi2 = (Phi(h)+Phi(k))/2 - T(h, a_h) - T(k, a_k) - beta.
    """
    h, k, rho = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (h, k, rho)))
    rho = np.clip(rho, -_RHO_MAX, _RHO_MAX)
    sq = np.sqrt(1.0 - rho * rho)
    tiny = 1e-150
    hh = np.where(np.abs(h) < tiny, tiny, h)
    kk = np.where(np.abs(k) < tiny, tiny, k)
    ah = (kk - rho * hh) / (hh * sq)
    ak = (hh - rho * kk) / (kk * sq)
    beta = np.where(hh * kk > 0, 0.0, 0.5)
    return 0.5 * (special.ndtr(hh) + special.ndtr(kk)) - special.owens_t(hh, ah) \
        - special.owens_t(kk, ak) - beta


def _npdf(x):
    return np.exp(-0.5 * x * x) / _SQ2PI


# ---------------------------------------------------------------- inner closed forms
# Y ~ N(m, v) (1-D) or N((m1, m2), [[v1, c], [c, v2]]) (2-D).

def _erf_mean(m, v):
    return special.erf(m / np.sqrt(1.0 + 2.0 * v))


def _erf_pair(m1, m2, v1, v2, c):
    """E[erf(Y1) erf(Y2)] = E[sign(V1) sign(V2)], V = sqrt2 Y - zeta (Eq. 4.31)."""
    s1, s2 = np.sqrt(2.0 * v1 + 1.0), np.sqrt(2.0 * v2 + 1.0)
    a1, a2 = _SQ2 * m1 / s1, _SQ2 * m2 / s2
    rho = 2.0 * c / (s1 * s2)
    return 1.0 - 2.0 * special.ndtr(-a1) - 2.0 * special.ndtr(-a2) + 4.0 * bvn_cdf(-a1, -a2, rho)


def _erf_sq(m, v):
    return _erf_pair(m, m, v, v, v)


def _relu_mean(m, v):
    s = np.sqrt(np.maximum(v, 1e-300))
    t = m / s
    return m * special.ndtr(t) + s * _npdf(t)


def _relu_sq(m, v):
    s = np.sqrt(np.maximum(v, 1e-300))
    t = m / s
    return (m * m + v) * special.ndtr(t) + m * s * _npdf(t)


def _relu_pair(m1, m2, v1, v2, c):
    """E[relu(Y1) relu(Y2)] (moments of the truncated bivariate normal, Rosenbaum 1961)."""
    s1, s2 = np.sqrt(np.maximum(v1, 1e-300)), np.sqrt(np.maximum(v2, 1e-300))
    rho = np.clip(c / (s1 * s2), -_RHO_MAX, _RHO_MAX)
    sq = np.sqrt(1.0 - rho * rho)
    h1, h2 = m1 / s1, m2 / s2            # Y_i = s_i (h_i + Z_i), region Z_i > -h_i
    L = bvn_cdf(h1, h2, rho)
    A2 = (h2 - rho * h1) / sq
    A1 = (h1 - rho * h2) / sq
    ez1 = _npdf(h1) * special.ndtr(A2) + rho * _npdf(h2) * special.ndtr(A1)
    ez2 = _npdf(h2) * special.ndtr(A1) + rho * _npdf(h1) * special.ndtr(A2)
    q = (h1 * h1 - 2.0 * rho * h1 * h2 + h2 * h2) / (sq * sq)
    phi2 = np.exp(-0.5 * q) / (2.0 * math.pi * sq)
    ez12 = rho * L - rho * h1 * _npdf(h1) * special.ndtr(A2) - rho * h2 * _npdf(h2) * special.ndtr(A1) \
        + sq * sq * phi2
    return s1 * s2 * (h1 * h2 * L + h1 * ez2 + h2 * ez1 + ez12)


def _lin_mean(m, v):
    return np.asarray(m, dtype=float) + 0.0 * v


def _lin_sq(m, v):
    return m * m + v


def _lin_pair(m1, m2, v1, v2, c):
    return m1 * m2 + c


@lru_cache(maxsize=8)
def _gh(n):
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / _SQ2PI


def _gh_forms(phi):
    """Gauss-Hermite fallback for activations without closed forms."""
    def mean(m, v):
        x, w = _gh(48)
        return phi.fn(m[..., None] + np.sqrt(np.maximum(v, 0.0))[..., None] * x) @ w

    def sq(m, v):
        x, w = _gh(48)
        f = phi.fn(m[..., None] + np.sqrt(np.maximum(v, 0.0))[..., None] * x)
        return (f * f) @ w

    def pair(m1, m2, v1, v2, c):
        x, w = _gh(32)
        s1 = np.sqrt(np.maximum(v1, 0.0))
        r = c / np.maximum(s1, 1e-300)
        t = np.sqrt(np.maximum(v2 - r * r, 0.0))
        y1 = m1[..., None] + s1[..., None] * x                                   # (..., n)
        y2 = m2[..., None, None] + r[..., None, None] * x[:, None] + t[..., None, None] * x[None, :]
        return np.einsum("...i,...ij,i,j->...", phi.fn(y1), phi.fn(y2), w, w)
    return mean, sq, pair


def inner_forms(phi):
    """(mean, sq, pair) conditional-expectation functions for activation ``phi``."""
    name = getattr(phi, "name", "")
    if name == "erf":
        return _erf_mean, _erf_sq, _erf_pair
    if name == "relu":
        return _relu_mean, _relu_sq, _relu_pair
    if name == "linear":
        return _lin_mean, _lin_sq, _lin_pair
    return _gh_forms(phi)


# ---------------------------------------------------------------- outer quadrature
@lru_cache(maxsize=8)
def _laguerre(n, a):
    s, w = special.roots_genlaguerre(n, a)
    return s, w


@lru_cache(maxsize=8)
def _legendre(n):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w          # on [0, 1]


def _outer_points_1d(var, n_r):
    """Nodes/weights for u ~ N(0, var) (B,): both half-lines, radial gen-Laguerre(-1/2)."""
    s, w = _laguerre(n_r, -0.5)
    r = np.sqrt(2.0 * s)
    w = w / (2.0 * math.sqrt(math.pi))
    sd = np.sqrt(np.maximum(var, 0.0))
    u = np.concatenate([r, -r])[None, :] * sd[:, None]       # (B, 2n)
    ww = np.concatenate([w, w])
    return u[..., None], np.broadcast_to(ww, u.shape)


def _outer_points_2d(A, lines, n_r, n_t):
    """Polar nodes for u = A z, z ~ N(0, I_2); A (B,2,2); lines (B, nl, 2) rows in z-space.

    Angles are split at every direction where a line's value changes sign.
    Returns u (B, M, 2) and weights (B, M).
    """
    B = A.shape[0]
    th0 = np.arctan2(-lines[..., 0], lines[..., 1])                      # (B, nl)
    th = np.concatenate([th0, th0 + math.pi], axis=1) % (2.0 * math.pi)
    th = np.sort(th, axis=1)
    th = np.concatenate([np.zeros((B, 1)), th, np.full((B, 1), 2.0 * math.pi)], axis=1)
    lo, hi = th[:, :-1], th[:, 1:]                                        # (B, na) arcs
    x, wx = _legendre(n_t)
    ang = lo[..., None] + (hi - lo)[..., None] * x                         # (B, na, nt)
    wang = (hi - lo)[..., None] * wx / (2.0 * math.pi)
    s, ws = _laguerre(n_r, 0.0)
    r = np.sqrt(2.0 * s)
    z = np.stack([np.cos(ang)[..., None] * r, np.sin(ang)[..., None] * r], axis=-1)  # (B,na,nt,nr,2)
    w = wang[..., None] * ws
    z = z.reshape(B, -1, 2)
    u = np.matmul(z, np.swapaxes(A, 1, 2))
    return u, w.reshape(B, -1)


def _dedupe_lines(lines):
    """Drop lines parallel (in every batch item) to an earlier one, or zero: fewer, longer arcs."""
    keep = []
    nrm = np.linalg.norm(lines, axis=-1)
    for j in range(lines.shape[1]):
        if np.all(nrm[:, j] < 1e-300):
            continue
        par = False
        for i in keep:
            crs = lines[:, i, 0] * lines[:, j, 1] - lines[:, i, 1] * lines[:, j, 0]
            if np.all(np.abs(crs) <= 1e-12 * nrm[:, i] * nrm[:, j] + 1e-300):
                par = True
                break
        if not par:
            keep.append(j)
    return lines[:, keep] if keep else lines[:, :1]


def _chol2(S):
    """Lower 'square root' of a batch of 2x2 PSD matrices (eigen-based, robust to rank 1)."""
    lam, U = np.linalg.eigh(S)
    return U * np.sqrt(np.maximum(lam, 0.0))[:, None, :]


def gaussian_expectation(Sigma, n_outer, outer_fn, inner=None, n_r=24, n_t=12):
    """E[ outer_fn(u) * inner(m(u), S) ] for a batch of Gaussian vectors.

    Parameters
    ----------
    Sigma : (B, r, r) covariance of (outer variables, inner variables)
    n_outer : 1 or 2 -- the first n_outer variables are integrated numerically
    outer_fn : callable u (B, M, n_outer) -> (B, M) values (products of phi powers, ...)
    inner : None or callable (m (B, M, r_i), S (B, r_i, r_i)) -> (B, M): the
        conditional expectation over the remaining variables given the outer ones
        (their conditional mean m = B u and covariance S, Eq. 4.30).
    Returns (B,) expectations.
    """
    Sigma = np.asarray(Sigma, dtype=float)
    B, r, _ = Sigma.shape
    So = Sigma[:, :n_outer, :n_outer]
    if inner is not None and r > n_outer:
        Soi = Sigma[:, :n_outer, n_outer:]
        Sii = Sigma[:, n_outer:, n_outer:]
        Soo_pinv = np.linalg.pinv(So, rcond=1e-12, hermitian=True)
        Breg = np.einsum("bij,bik->bjk", Soi, Soo_pinv)                   # (B, r_i, n_o)
        S = Sii - np.einsum("bjk,bkl->bjl", Breg, Soi)
        S = 0.5 * (S + np.swapaxes(S, 1, 2))
    else:
        Breg = np.zeros((B, 0, n_outer))
        S = None
    if n_outer == 1:
        u, w = _outer_points_1d(So[:, 0, 0], 4 * n_r)   # 1-D outer: cheap, use 4x the order
    else:
        A = _chol2(So)
        lines = np.concatenate([A, np.einsum("bjk,bkl->bjl", Breg, A)], axis=1)
        lines = _dedupe_lines(lines)
        u, w = _outer_points_2d(A, lines, n_r, n_t)
    val = outer_fn(u)
    if inner is not None and r > n_outer:
        m = np.matmul(u, np.swapaxes(Breg, 1, 2))
        val = val * inner(m, S)
    return np.sum(val * w, axis=1)


# ---------------------------------------------------------------- inner factories
def make_inner(phi, kind, d=(0, 0), fd_rel=1e-3):
    """Inner conditional expectation, optionally differentiated in the conditional means.

    kind: "p" (E phi(Y)), "sq" (E phi(Y)^2), "pp" (E phi(Y1) phi(Y2)),
          "lin" (E Y), "linsq" (E Y^2), "linlin" (E Y1 Y2).
    d: derivative orders (d1, d2) with respect to the means (central differences,
       step fd_rel * sqrt(S_ii)); e.g. E[phi''(Y1) phi(Y2)] = d^2/dm1^2 E[phi(Y1)phi(Y2)].
    """
    mean, sq, pair = inner_forms(phi)
    if kind in ("lin", "linsq", "linlin"):
        mean, sq, pair = _lin_mean, _lin_sq, _lin_pair
        kind = {"lin": "p", "linsq": "sq", "linlin": "pp"}[kind]

    def base(m, S):
        if kind == "p":
            return mean(m[..., 0], S[:, None, 0, 0])
        if kind == "sq":
            return sq(m[..., 0], S[:, None, 0, 0])
        return pair(m[..., 0], m[..., 1], S[:, None, 0, 0], S[:, None, 1, 1], S[:, None, 0, 1])

    if d == (0, 0):
        return base
    exact = _exact_derivative(phi, kind, d)
    if exact is not None:
        return exact

    def deriv(m, S):
        out = 0.0
        steps = [fd_rel * np.sqrt(np.maximum(S[:, None, i, i], 1e-300)) for i in range(min(2, S.shape[1]))]
        stencils = []
        for i, order in enumerate(d):
            if order == 0:
                stencils.append([(0.0, 1.0)])
            elif order == 1:
                stencils.append([(1.0, 0.5), (-1.0, -0.5)])
            else:
                stencils.append([(1.0, 1.0), (0.0, -2.0), (-1.0, 1.0)])
        for o1, c1 in stencils[0]:
            for o2, c2 in (stencils[1] if len(stencils) > 1 else [(0.0, 1.0)]):
                mm = m.copy()
                mm[..., 0] = mm[..., 0] + o1 * steps[0]
                if o2 != 0.0:
                    mm[..., 1] = mm[..., 1] + o2 * steps[1]
                out = out + c1 * c2 * base(mm, S)
        den = steps[0] ** d[0]
        if len(d) > 1 and d[1]:
            den = den * steps[1] ** d[1]
        return out / den
    return deriv


# ---------------------------------------------------------------- closed-form mean derivatives
_2SQPI = 2.0 / math.sqrt(math.pi)


def _erf_d1pair(m1, m2, v1, v2, c):
    """E[erf'(Y1) erf(Y2)]: tilt Y1 by exp(-Y1^2) (Eq. 4.32)."""
    t = 1.0 + 2.0 * v1
    var2 = np.maximum(v2 - 2.0 * c * c / t, 0.0)
    return _2SQPI * np.exp(-m1 * m1 / t) / np.sqrt(t) * special.erf((m2 - 2.0 * c * m1 / t) / np.sqrt(1.0 + 2.0 * var2))


def _erf_d11(m1, m2, v1, v2, c):
    """E[erf'(Y1) erf'(Y2)] = 4/pi det(I+2S)^-1/2 exp(-m^T (I+2S)^-1 m)."""
    a, b, e = 1.0 + 2.0 * v1, 1.0 + 2.0 * v2, 2.0 * c
    det = a * b - e * e
    q = (b * m1 * m1 - 2.0 * e * m1 * m2 + a * m2 * m2) / det
    return (4.0 / math.pi) * np.exp(-q) / np.sqrt(det)


def _exact_derivative(phi, kind, d):
    """Closed-form (or cheap) mean-derivatives of the inner expectation, where available."""
    name = getattr(phi, "name", "")
    if name not in ("erf", "relu") or kind not in ("pp", "sq"):
        return None

    def args(m, S):
        if kind == "sq":
            v = S[:, None, 0, 0]
            return m[..., 0], m[..., 0], v, v, v
        return m[..., 0], m[..., 1], S[:, None, 0, 0], S[:, None, 1, 1], S[:, None, 0, 1]

    def fd_m1(f, m1, m2, v1, v2, c, same):
        h = 1e-4 * np.sqrt(np.maximum(v1, 1e-300)) + 1e-8
        if same:
            return (f(m1 + h, m2 + h, v1, v2, c) - f(m1 - h, m2 - h, v1, v2, c)) / (2 * h)
        return (f(m1 + h, m2, v1, v2, c) - f(m1 - h, m2, v1, v2, c)) / (2 * h)

    if name == "erf":
        if kind == "sq":          # d^2/dm^2 E erf(Y)^2 = 2 d/dm E[erf'(Y) erf(Y)]
            return lambda m, S: 2.0 * fd_m1(_erf_d1pair, *args(m, S), same=True)
        if d == (1, 1):
            return lambda m, S: _erf_d11(*args(m, S))
        if d == (2, 0):
            return lambda m, S: fd_m1(_erf_d1pair, *args(m, S), same=False)
        if d == (0, 2):
            return lambda m, S: (lambda m1, m2, v1, v2, c: fd_m1(_erf_d1pair, m2, m1, v2, v1, c, False))(*args(m, S))
        return None
    # relu: phi' = step, phi'' = delta
    if kind == "sq":              # E[(relu^2)''(Y)] = 2 P(Y > 0)
        return lambda m, S: 2.0 * special.ndtr(m[..., 0] / np.sqrt(np.maximum(S[:, None, 0, 0], 1e-300)))

    def dstep(m1, m2, v1, v2, c):
        s1, s2 = np.sqrt(np.maximum(v1, 1e-300)), np.sqrt(np.maximum(v2, 1e-300))
        return bvn_cdf(m1 / s1, m2 / s2, c / (s1 * s2))

    def ddelta(m1, m2, v1, v2, c):
        v1 = np.maximum(v1, 1e-300)
        dens = np.exp(-0.5 * m1 * m1 / v1) / np.sqrt(2.0 * math.pi * v1)
        return dens * _relu_mean(m2 - c / v1 * m1, np.maximum(v2 - c * c / v1, 0.0))
    if d == (1, 1):
        return lambda m, S: dstep(*args(m, S))
    if d == (2, 0):
        return lambda m, S: ddelta(*args(m, S))
    if d == (0, 2):
        return lambda m, S: (lambda m1, m2, v1, v2, c: ddelta(m2, m1, v2, v1, c))(*args(m, S))
    return None


# ---------------------------------------------------------------- fused inner bundle (walk pairs, P = 2)
def _owen_sq(h, rho):
    """Phi2(h, h; rho) = Phi(h) - 2 T(h, sqrt((1-rho)/(1+rho))) (one Owen's T instead of two)."""
    rho = np.clip(rho, -_RHO_MAX, _RHO_MAX)
    return special.ndtr(h) - 2.0 * special.owens_t(h, np.sqrt((1.0 - rho) / (1.0 + rho)))


def _erf_bundle(m1, m2, v1, v2, c, want):
    """All inner conditional expectations of erf needed by the walk tables (Eq. 4.31-4.32),
    sharing transcendental evaluations; derivatives in the means are exact (no differences)."""
    out = {}
    s1, s2 = np.sqrt(2.0 * v1 + 1.0), np.sqrt(2.0 * v2 + 1.0)
    a1, a2 = _SQ2 * m1 / s1, _SQ2 * m2 / s2
    P1, P2 = special.ndtr(-a1), special.ndtr(-a2)
    if "pp" in want:
        out["pp"] = 1.0 - 2.0 * P1 - 2.0 * P2 + 4.0 * bvn_cdf(-a1, -a2, 2.0 * c / (s1 * s2))
    if "sq0" in want:
        out["sq0"] = 1.0 - 4.0 * P1 + 4.0 * _owen_sq(-a1, 2.0 * v1 / (s1 * s1))
    if "sq1" in want:
        out["sq1"] = 1.0 - 4.0 * P2 + 4.0 * _owen_sq(-a2, 2.0 * v2 / (s2 * s2))
    if "d11" in want:
        out["d11"] = _erf_d11(m1, m2, v1, v2, c)

    def d1pair_grad(m1, m2, v1, v2, c):
        """(d/dm1, d/dm2) of E[erf'(Y1) erf(Y2)]."""
        t = 1.0 + 2.0 * v1
        var2 = np.maximum(v2 - 2.0 * c * c / t, 0.0)
        sg = np.sqrt(1.0 + 2.0 * var2)
        mu = (m2 - 2.0 * c * m1 / t) / sg
        pre = _2SQPI * np.exp(-m1 * m1 / t) / np.sqrt(t)
        ef, dens = special.erf(mu), _2SQPI * np.exp(-mu * mu) / sg
        return pre * (-2.0 * m1 / t * ef - 2.0 * c / t * dens), pre * dens

    if "d20" in want:
        out["d20"] = d1pair_grad(m1, m2, v1, v2, c)[0]
    if "d02" in want:
        out["d02"] = d1pair_grad(m2, m1, v2, v1, c)[0]
    if "sqdd0" in want:          # E[(erf^2)''(Y1)] = 2 d/dm E[erf'(Y) erf(Y)]
        g1, g2 = d1pair_grad(m1, m1, v1, v1, v1)
        out["sqdd0"] = 2.0 * (g1 + g2)
    if "sqdd1" in want:
        g1, g2 = d1pair_grad(m2, m2, v2, v2, v2)
        out["sqdd1"] = 2.0 * (g1 + g2)
    return out


def _relu_bundle(m1, m2, v1, v2, c, want):
    """relu inner expectations sharing the one bivariate normal CDF (pp and E[step step])."""
    out = {}
    s1, s2 = np.sqrt(np.maximum(v1, 1e-300)), np.sqrt(np.maximum(v2, 1e-300))
    h1, h2 = m1 / s1, m2 / s2
    if "pp" in want or "d11" in want:
        rho = np.clip(c / (s1 * s2), -_RHO_MAX, _RHO_MAX)
        sq = np.sqrt(1.0 - rho * rho)
        Lc = bvn_cdf(h1, h2, rho)
        out["d11"] = Lc
        if "pp" in want:
            A2 = (h2 - rho * h1) / sq
            A1 = (h1 - rho * h2) / sq
            n1, n2 = _npdf(h1), _npdf(h2)
            N1, N2 = special.ndtr(A1), special.ndtr(A2)
            ez1 = n1 * N2 + rho * n2 * N1
            ez2 = n2 * N1 + rho * n1 * N2
            q = (h1 * h1 - 2.0 * rho * h1 * h2 + h2 * h2) / (sq * sq)
            phi2 = np.exp(-0.5 * q) / (2.0 * math.pi * sq)
            ez12 = rho * Lc - rho * h1 * n1 * N2 - rho * h2 * n2 * N1 + sq * sq * phi2
            out["pp"] = s1 * s2 * (h1 * h2 * Lc + h1 * ez2 + h2 * ez1 + ez12)
    if "sq0" in want:
        out["sq0"] = _relu_sq(m1, v1)
    if "sq1" in want:
        out["sq1"] = _relu_sq(m2, v2)
    if "sqdd0" in want:
        out["sqdd0"] = 2.0 * special.ndtr(h1)
    if "sqdd1" in want:
        out["sqdd1"] = 2.0 * special.ndtr(h2)

    def ddelta(m1, m2, v1, v2, c):
        v1 = np.maximum(v1, 1e-300)
        dens = np.exp(-0.5 * m1 * m1 / v1) / np.sqrt(2.0 * math.pi * v1)
        return dens * _relu_mean(m2 - c / v1 * m1, np.maximum(v2 - c * c / v1, 0.0))
    if "d20" in want:
        out["d20"] = ddelta(m1, m2, v1, v2, c)
    if "d02" in want:
        out["d02"] = ddelta(m2, m1, v2, v1, c)
    return out


_BUNDLE_KEYS = {"pp": ("pp", (0, 0)), "sq0": ("sq", (0, 0)), "sq1": ("sq", (0, 0)),
                "d11": ("pp", (1, 1)), "d20": ("pp", (2, 0)), "d02": ("pp", (0, 2)),
                "sqdd0": ("sq", (2, 0)), "sqdd1": ("sq", (2, 0))}


def inner_bundle(phi, m, S, want=tuple(_BUNDLE_KEYS)):
    """Several inner conditional expectations of Y ~ N(m, S) (2-D) in one pass.

    m (B, M, 2) conditional means, S (B, 2, 2) covariance. Keys of the returned dict:
    "pp" E phi(Y1) phi(Y2); "sq0"/"sq1" E phi(Y_i)^2; "d11" E phi'(Y1) phi'(Y2);
    "d20"/"d02" E phi''(Y1) phi(Y2) / E phi(Y1) phi''(Y2); "sqdd0"/"sqdd1" E (phi^2)''(Y_i).
    erf and relu share their transcendental evaluations (closed forms, exact derivatives);
    linear is exact; other activations use :func:`make_inner` (Gauss-Hermite).
    """
    want = set(want)
    m1, m2 = m[..., 0], m[..., 1]
    v1, v2, c = S[:, None, 0, 0], S[:, None, 1, 1], S[:, None, 0, 1]
    name = getattr(phi, "name", "")
    if name == "erf":
        return _erf_bundle(m1, m2, v1, v2, c, want)
    if name == "relu":
        return _relu_bundle(m1, m2, v1, v2, c, want)
    out = {}
    for key in want:
        kind, d = _BUNDLE_KEYS[key]
        if kind == "sq":
            j = 0 if key.endswith("0") else 1
            out[key] = make_inner(phi, "sq", d=d)(m[..., j:j + 1], S[:, j:j + 1, j:j + 1])
        else:
            out[key] = make_inner(phi, "pp", d=d)(m, S)
    return out


def _outer_points_2d_split(A, lines, n_r, n_t, r_split, n_in=None):
    """Like :func:`_outer_points_2d` with a composite radial rule: Gauss-Legendre in r on
    [0, r_split] (n_in nodes) plus shifted Gauss-Laguerre in (r^2 - r_split^2)/2 on the
    tail (n_r nodes). r_split (B,) is in whitened units; use it when the integrand varies on
    a scale much smaller than the outer standard deviation (erf at large kernel values:
    feature size ~1 in h, i.e. r ~ 1/sqrt(K); plain Laguerre in r^2/2 resolves that
    poorly). r_split = 0 reduces to the plain rule.
    """
    B = A.shape[0]
    n_in = n_r if n_in is None else n_in
    th0 = np.arctan2(-lines[..., 0], lines[..., 1])
    th = np.concatenate([th0, th0 + math.pi], axis=1) % (2.0 * math.pi)
    th = np.sort(th, axis=1)
    th = np.concatenate([np.zeros((B, 1)), th, np.full((B, 1), 2.0 * math.pi)], axis=1)
    lo, hi = th[:, :-1], th[:, 1:]
    x, wx = _legendre(n_t)
    ang = lo[..., None] + (hi - lo)[..., None] * x                         # (B, na, nt)
    wang = (hi - lo)[..., None] * wx / (2.0 * math.pi)
    R = np.asarray(r_split, dtype=float).reshape(B, 1)
    xl, wl = _legendre(n_in)
    r_in = R * xl                                                          # (B, n_in)
    w_in = R * wl * r_in * np.exp(-0.5 * r_in * r_in)
    s, ws = _laguerre(n_r, 0.0)
    r_out = np.sqrt(R * R + 2.0 * s)                                       # (B, n_r)
    w_out = np.exp(-0.5 * R * R) * ws
    r = np.concatenate([r_in, r_out], axis=1)                              # (B, nrr)
    wr = np.concatenate([w_in, w_out], axis=1)
    c, sn = np.cos(ang)[..., None], np.sin(ang)[..., None]                 # (B, na, nt, 1)
    rr = r[:, None, None, :]
    z = np.stack([c * rr, sn * rr], axis=-1).reshape(B, -1, 2)
    w = (wang[..., None] * wr[:, None, None, :]).reshape(B, -1)
    u = np.matmul(z, np.swapaxes(A, 1, 2))
    return u, w


def _outer_points_1d_split(var, n, r_split, r_tail=2.5):
    """Nodes/weights (B, 6n) for u ~ N(0, var) (B,): on each half-line (whitened units)
    Gauss-Legendre on [0, r_split] and on [r_split, r_tail'] (n nodes each), r_tail' =
    max(r_tail, 2 r_split), plus a shifted Gauss-Laguerre tail (n nodes) in
    (r^2 - r_tail'^2)/2 whose 1/r Jacobian stays smooth because r_tail' >= 2.5."""
    R = np.clip(np.asarray(r_split, dtype=float), 1e-3, None)[:, None]
    R2 = np.maximum(r_tail, 2.0 * R)
    xl, wl = _legendre(n)
    r_a = R * xl
    w_a = R * wl * np.exp(-0.5 * r_a * r_a) / _SQ2PI
    r_b = R + (R2 - R) * xl
    w_b = (R2 - R) * wl * np.exp(-0.5 * r_b * r_b) / _SQ2PI
    s, ws = _laguerre(n, 0.0)
    r_c = np.sqrt(R2 * R2 + 2.0 * s)
    w_c = np.exp(-0.5 * R2 * R2) * ws / (r_c * _SQ2PI)
    r = np.concatenate([r_a, r_b, r_c], axis=1)
    w = np.concatenate([w_a, w_b, w_c], axis=1)
    sd = np.sqrt(np.maximum(np.asarray(var, dtype=float), 0.0))[:, None]
    return np.concatenate([r, -r], axis=1) * sd, np.concatenate([w, w], axis=1)
