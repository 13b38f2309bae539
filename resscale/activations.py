"""Activation functions and their Gaussian integrals (docs/theory.md, Sec. 2).

Every kernel map of the theory needs, for a centred bivariate Gaussian
(u_a, u_b) with covariance [[kaa, kab], [kab, kbb]],

    G(kaa, kbb, kab)  = E[phi(u_a) phi(u_b)]                      (Eq. 2.1)
    dG/dkab           = E[phi'(u_a) phi'(u_b)]          (Price)   (Eq. 2.2)
    dG/dkaa           = 1/2 E[phi''(u_a) phi(u_b)]                (Eq. 2.3)

plus the diagonal g(k) = E[phi(u)^2] with g'(k) = E[phi'^2 + phi phi''] and the
mean mu(k) = E[phi(u)] with mu'(k) = 1/2 E[phi''(u)] (the mean only matters for
the reduced block with a non-odd phi).

Closed forms (Eq. 2.4-2.6): erf (arcsine kernel), relu (arc-cosine kernel),
linear. Everything else (tanh, gelu, any callable) uses sinh-mapped trapezoid
rules (1-D) and a conditional decomposition u_b | u_a (2-D), accurate to
<= 1e-9 relative for smooth phi and k in [1e-6, 1e6], |rho| <= 1 (accuracy
parameters ``_QUAD_H`` etc. below; measured in tests/test_quadrature.py and
stated in theory.md Sec. 2.3). For a user callable without derivatives, phi' and phi'' are taken by
central differences of phi (step 1e-4 / 1e-3; the *recursion* is still
differentiated exactly). ``from_callable`` refuses a callable that is not finite on
[-12, 12] or (unless its kinks are declared) not C^2 numerically (:func:`find_kinks`);
declared kinks give ``Activation.smooth = False`` (docs/theory.md Sec. 5.1).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import numpy as np
from scipy import special

_SQRT2 = math.sqrt(2.0)
_TINY = 1e-300


@lru_cache(maxsize=16)
def gauss_hermite(n: int):
    """Nodes/weights of probabilists' Gauss-Hermite: E[f(z)] ~ sum w_i f(x_i), z ~ N(0,1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / math.sqrt(2.0 * math.pi)


def _fd1(f, h=1e-4):
    return lambda u: (f(u + h) - f(u - h)) / (2 * h)


def _fd2(f, h=1e-3):
    return lambda u: (f(u + h) - 2.0 * f(u) + f(u - h)) / (h * h)


# ------------------------------------------------------------ quadrature rules
# Accuracy parameters of the quadrature (docs/theory.md Sec. 2.3). The defaults
# give <= 1e-9 relative error (measured: tests/test_quadrature.py).
_QUAD_H = 0.17        # trapezoid step in the (capped) sinh variable t
_QUAD_SPAN = 8.5      # Gaussians are truncated at +-8.5 standard deviations
_QUAD_CAP = 5.0       # capped map: node spacing <= _QUAD_CAP * tau * h (~0.85 tau)
_GH_SIGMA = 0.25      # 1-D: Gauss-Hermite (order _GH_ORDER) for sigma <= this
_GH_ORDER = 20
_GH_TAU = ((0.0, 1), (0.004, 4), (0.03, 8), (0.1, 12), (0.2, 16), (0.35, 24))  # inner GH orders
_GH_FAR = 24          # inner Gauss-Hermite order for windows far from phi's features
_SHARED_MAX = 160     # shared inner grid (one phi evaluation per node) up to this many nodes
_MIN_REL_SCALE = 1e-6  # features narrower than 1e-6 sigma are not resolved (cost ~ log(sigma) capped)
_CHUNK = 300_000      # max points per vectorised block (memory bound, cache friendly)


def _bucket(n, step=8):
    """Round node counts up to a multiple of ``step`` (fewer vectorised groups)."""
    return (step * np.ceil(np.asarray(n, dtype=float) / step)).astype(np.int64)


def _capped_t(v, s, A):
    """Inverse of the capped sinh map v = A asinh((s/A) sinh t): t(v) = asinh((A/s) sinh(v/A))."""
    x = np.abs(v) / A
    xc = np.minimum(x, 700.0)
    y = (A / s) * np.sinh(xc)
    big = np.log(A / s) + x + np.log1p(-np.exp(-2.0 * np.maximum(x, 1e-300)))
    t = np.where((y < 1e300) & (x < 700.0), np.arcsinh(y), big)
    return np.copysign(t, v)


def _capped_nodes(tlo, thi, s, A, n):
    """Trapezoid nodes v and weights dv over [v(tlo), v(thi)], n nodes, capped sinh map.

    dv/dt = s cosh t / sqrt(1 + (s sinh t / A)^2): spacing ~ s h near 0 (resolves
    phi's unit-scale features), grows geometrically, and saturates at A h
    (resolves a Gaussian of width ~A/_QUAD_CAP anywhere). A = inf: plain sinh map.
    """
    frac = np.linspace(0.0, 1.0, n)
    t = tlo[..., None] + (thi - tlo)[..., None] * frac
    h = ((thi - tlo) / (n - 1))[..., None]
    s, A = s[..., None], A[..., None]
    tc = np.clip(t, -300.0, 300.0)
    sh = np.sinh(tc)
    r = (s / A) * sh
    inf = np.isinf(A)
    Af = np.where(inf, 1.0, A)
    v = np.where(inf, s * sh, Af * np.arcsinh(r))
    dv = h * s * np.cosh(tc) / np.sqrt(1.0 + r * r)
    far = np.abs(t) > 300.0  # (finite A only) asymptotically linear part of the map
    if np.any(far):
        v = np.where(far, np.copysign(Af * (np.abs(t) + np.log(s / Af)), t), v)
        dv = np.where(far, h * Af, dv)
    dv[..., 0] *= 0.5
    dv[..., -1] *= 0.5
    return v, dv


def _normal_rule(sigma, half, scale=None, bucket=4):
    """Quadrature for E f(u), u ~ N(0, sigma^2), sigma a 1-D array.

    Returns a list of (index, nodes, weights) groups (nodes/weights: (m, n)).
    sigma <= _GH_SIGMA: Gauss-Hermite; otherwise a sinh-mapped trapezoid rule
    u = s sinh t, s = min(sigma, 1), |u| <= _QUAD_SPAN sigma, step <= _QUAD_H.
    half=True: only u >= 0 with doubled weights (exact for even integrands).
    ``scale`` (default 1): length scale of the integrand's features at u = 0
    (the rule resolves both it and sigma). Node counts are rounded up to a
    multiple of ``bucket`` so that few vectorised groups remain.
    """
    sigma = np.asarray(sigma, dtype=float)
    scale = np.ones_like(sigma) if scale is None else np.minimum(np.asarray(scale, dtype=float), 1.0)
    out = []
    gh = sigma <= _GH_SIGMA * scale
    if np.any(gh):
        idx = np.nonzero(gh)[0]
        x, w = gauss_hermite(_GH_ORDER)
        if half:
            keep = x > 0
            x, w = x[keep], 2.0 * w[keep]
        out.append((idx, sigma[idx, None] * x, np.broadcast_to(w, (idx.size, x.size))))
    if np.any(~gh):
        idx_all = np.nonzero(~gh)[0]
        sg = sigma[idx_all]
        s = np.maximum(np.minimum(sg, scale[idx_all]), _MIN_REL_SCALE * sg)
        T = np.arcsinh(_QUAD_SPAN * sg / s)
        K = _bucket(T / _QUAD_H, bucket)
        for k in np.unique(K):
            sel = K == k
            idx, sgi, si, Ti = idx_all[sel], sg[sel], s[sel], T[sel]
            he = Ti / k   # offset grid t = +-(j + 1/2) he: no node at u = 0 (graceful beyond _MIN_REL_SCALE)
            if half:
                v, dv = _capped_nodes(0.5 * he, Ti - 0.5 * he, si, np.full_like(si, np.inf), int(k))
                dv *= 2.0   # mirror image u -> -u
            else:
                v, dv = _capped_nodes(0.5 * he - Ti, Ti - 0.5 * he, si, np.full_like(si, np.inf), 2 * int(k))
            dv[:, 0] *= 2.0   # (undo the endpoint halving: this is an open midpoint-type grid)
            dv[:, -1] *= 2.0
            z = v / sgi[:, None]
            w = dv * np.exp(-0.5 * z * z) / (sgi[:, None] * math.sqrt(2.0 * math.pi))
            out.append((idx, v, w))
    return out


def _gh_inner_order(tau):
    """Gauss-Hermite order for the inner (conditional) integral of width tau (<= _GH_TAU[-1][0])."""
    n = np.full(tau.shape, -1, dtype=np.int64)
    for lim, order in reversed(_GH_TAU):
        n = np.where(tau <= lim, order, n)
    return n


@dataclass(frozen=True, eq=False)
class Activation:
    """An activation phi with its derivatives and Gaussian integrals.

    Attributes
    ----------
    name : str
    fn, d1, d2 : vectorised callables phi, phi', phi''
    odd : bool            phi(-u) = -phi(u)  (then mu = 0)
    homogeneous : bool    phi(lambda u) = lambda phi(u) for lambda > 0 (relu, linear):
                          the kernel map is then 1-homogeneous, used for log-space scaling
    closed_form : bool    Gaussian integrals in closed form (else quadrature)
    n_quad : int          kept for compatibility; no longer used (the quadrature's
                          accuracy is set by the module constants _QUAD_H, _QUAD_SPAN)
    smooth : bool         phi is C^2 (phi' and phi'' are ordinary functions). False for
                          relu and for a callable declared with ``kinks``: its phi'' has
                          delta parts that ``d2`` does not carry, so theory that needs phi''
                          (finite width) must check this flag (see ``supports_finite_width``)
    kinks : tuple         points where phi' jumps (declared via :func:`from_callable`)
    asymptotic_slopes     (s_+, s_-) with phi(x) ~ s_+- x for x -> +-inf up to a localized remainder
                          (gelu: (1, 0)): the tables continue beyond their q range with the
                          homogeneous limit's closed forms (:mod:`resscale.asymptotic_pairs`);
                          None: detected numerically for a quadrature activation; False: never
    """

    name: str
    fn: Callable
    d1: Callable
    d2: Callable
    odd: bool = False
    homogeneous: bool = False
    closed_form: bool = False
    n_quad: int = 64
    smooth: bool = True
    kinks: tuple = ()
    asymptotic_slopes: Optional[tuple] = None

    @property
    def supports_finite_width(self) -> bool:
        """True when phi'' is exact: a smooth phi, or the built-in relu (delta handled in closed form)."""
        return bool(self.smooth or isinstance(self, _Relu))

    def pair_equal(self, q, k):
        """(G, A, g) for two inputs of equal variance q and covariance k (arrays over a grid):
        G = E[phi(u_a) phi(u_b)], A = dG/dk = E[phi'(u_a) phi'(u_b)], g = E[phi(u)^2].

        The quantities of the two-input recursion (Sec. 5); closed-form activations
        override this with a few fused array passes (same values as :meth:`pair`/:meth:`diag`).
        """
        G, _, _, A = self.pair(q, q, k)
        return G, A, self.diag(q)[0]

    def __call__(self, u):
        return self.fn(u)

    def __repr__(self):
        return f"Activation({self.name!r})"

    # ------------------------------------------------------------------ pair
    def pair(self, kaa, kbb, kab):
        """G, dG/dkaa, dG/dkbb, dG/dkab for arrays of (kaa, kbb, kab) (Eq. 2.1-2.3).

        kab is treated as one variable (the symmetric entry K_ab = K_ba).
        """
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        return self._pair_quadrature(kaa, kbb, kab)

    def kernel(self, kaa, kbb, kab):
        """G(kaa, kbb, kab) = E[phi(u_a) phi(u_b)] only (Eq. 2.1), no derivatives."""
        return self.pair(kaa, kbb, kab)[0]

    def kernel_packed(self, d, i, j, k):
        """G for a packed list of pairs: d the kernel diagonal, (i, j) pair indices, k = K_ij."""
        return self.kernel(d[i], d[j], k)

    def diag(self, k):
        """g(k) = E[phi(u)^2], g'(k) for u ~ N(0, k)."""
        k = np.asarray(k, dtype=float)
        f = lambda u: (lambda a, b, c: (a * a, b * b + a * c))(self.fn(u), self.d1(u), self.d2(u))
        g, dg = self._expect(k, f, 2, half=self.odd)
        return g, dg

    def mean(self, k):
        """mu(k) = E[phi(u)], mu'(k) = 1/2 E[phi''(u)] for u ~ N(0, k)."""
        k = np.asarray(k, dtype=float)
        if self.odd:
            z = np.zeros_like(k)
            return z, z.copy()
        m, d = self._expect(k, lambda u: (self.fn(u), self.d2(u)), 2, half=False)
        return m, 0.5 * d

    def _expect(self, k, f, nout, half):
        """E[f(u)] (a tuple of nout integrands) for u ~ N(0, k), k an array; 1-D sinh/GH rule."""
        shape = k.shape
        kf = k.ravel()
        bad = ~np.isfinite(kf)
        sig = np.sqrt(np.maximum(np.where(bad, 1.0, kf), 0.0))
        out = [np.zeros(sig.shape) for _ in range(nout)]
        for idx, u, w in _normal_rule(sig, half, bucket=16):
            step = max(1, _CHUNK // u.shape[1])
            for c in range(0, idx.size, step):
                sl = slice(c, c + step)
                vals = f(u[sl])
                _check_values(self, vals[0], u[sl])
                for o, val in zip(out, vals):
                    o[idx[sl]] = np.einsum("mn,mn->m", val, w[sl])
        for o in out:
            o[bad] = np.nan
        return tuple(o.reshape(shape) for o in out)

    def _pair_quadrature(self, kaa, kbb, kab):
        """Conditional decomposition u_b | u_a ~ N(beta u_a, tau^2) (docs/theory.md Sec. 2.3).

        Outer integral over u_a: sinh rule (Gauss-Hermite for tiny variance),
        folded to u_a >= 0 for odd phi. Inner smoothing Phi_j(mu) = E[phi^(j)(mu + tau y)]:
        Gauss-Hermite in y for tau <= 0.35 (tau = 0 exactly: phi^(j)(mu)); else a
        capped-sinh trapezoid rule in u_b centred at 0 with spacing <= 0.85 tau,
        shared by all outer nodes when that grid is small (phi evaluated once
        per node, the Gaussian weights form a matrix); otherwise shared only by
        the outer nodes with |mu| <= 13.5 tau, and Gauss-Hermite (order 24) in y
        for the others (window mu +- 8.5 tau far from phi's features).
        """
        shape = kaa.shape
        kaa, kbb, kab = (np.asarray(v, dtype=float).ravel() for v in (kaa, kbb, kab))
        out = [np.zeros(kaa.shape) for _ in range(4)]
        if kaa.size == 0:
            return tuple(o.reshape(shape) for o in out)
        bad = ~(np.isfinite(kaa) & np.isfinite(kbb) & np.isfinite(kab))
        if np.any(bad):  # non-finite input: NaN output
            kaa, kbb, kab = (np.where(bad, v0, v) for v, v0 in ((kaa, 1.0), (kbb, 1.0), (kab, 0.0)))
        ka0, kb0 = np.maximum(kaa, 0.0), np.maximum(kbb, 0.0)
        sa = np.sqrt(ka0)
        pos = ka0 > 0
        beta = np.where(pos, kab / np.where(pos, ka0, 1.0), 0.0)
        tau = np.sqrt(np.maximum(kb0 - beta * kab, 0.0))
        L, h = _QUAD_SPAN, _QUAD_H
        # inner regime and node count per element
        gh = tau <= _GH_TAU[-1][0]
        tw = np.where(gh, 1.0, tau)  # (the capped-sinh parameters only matter where tau is large)
        ts, tA = np.maximum(1.0, _MIN_REL_SCALE * tw), _QUAD_CAP * tw   # tau > 0.35: A > s
        Vs = np.abs(beta) * L * sa + L * tw
        n_shared = 2 * _bucket(_capped_t(Vs, ts, tA) / h, 8)
        n_window = 2 * _bucket(_capped_t((2.0 * L + 5.0) * tw, ts, tA) / h, 8)
        kind = np.where(gh, 0, np.where(n_shared <= _SHARED_MAX, 1, 2))
        n_in = np.where(kind == 0, _gh_inner_order(tau), np.where(kind == 1, n_shared, n_window))
        # the outer integrand phi(u_a) Phi(beta u_a) has features on the scale min(1, max(1, tau)/|beta|)
        oscale = np.maximum(tau, 1.0) / np.maximum(np.abs(beta), 1e-300)
        for idx_o, a_all, wa_all in _normal_rule(sa, half=self.odd, scale=oscale):
            key = kind[idx_o] * 100_000 + n_in[idx_o]
            for kv in np.unique(key):
                sel = np.nonzero(key == kv)[0]
                knd, ni = int(kv // 100_000), int(kv % 100_000)
                no = a_all.shape[1]
                step = max(1, _CHUNK // (no * ni))
                for c in range(0, sel.size, step):
                    rows = sel[c:c + step]
                    idx = idx_o[rows]
                    a, wa = a_all[rows], wa_all[rows]
                    P0, P1, P2 = self._inner(knd, ni, beta[idx, None] * a, tau[idx], ts[idx], tA[idx], Vs[idx])
                    fa = self.fn(a)
                    _check_values(self, fa, a)
                    _check_values(self, P0, beta[idx, None] * a)
                    out[0][idx] = np.einsum("mn,mn->m", wa * fa, P0)
                    out[1][idx] = 0.5 * np.einsum("mn,mn->m", wa * self.d2(a), P0)
                    out[2][idx] = 0.5 * np.einsum("mn,mn->m", wa * fa, P2)
                    out[3][idx] = np.einsum("mn,mn->m", wa * self.d1(a), P1)
        for o in out:
            o[bad] = np.nan
        return tuple(o.reshape(shape) for o in out)

    def _inner(self, kind, n, mu, tau, s, A, V):
        """Phi_j(mu) = E[phi^(j)(mu + tau y)], y ~ N(0,1), j = 0, 1, 2, for mu of shape (m, no)."""
        inv = 1.0 / (np.maximum(tau, 1e-300) * math.sqrt(2.0 * math.pi))
        if kind == 0:  # Gauss-Hermite in y
            y, wy = gauss_hermite(n)
            b = mu[..., None] + tau[:, None, None] * y
            return self.fn(b) @ wy, self.d1(b) @ wy, self.d2(b) @ wy
        if kind == 1:  # one grid in u_b per element, shared by all outer nodes
            T = _capped_t(V, s, A)
            he = T / (n // 2)   # offset grid +-(j + 1/2) he, as in _normal_rule
            v, dv = _capped_nodes(0.5 * he - T, T - 0.5 * he, s, A, n)   # (m, n)
            dv[:, 0] *= 2.0
            dv[:, -1] *= 2.0
            F = np.stack([self.fn(v), self.d1(v), self.d2(v)], axis=-1) * dv[..., None]
            c = 1.0 / (math.sqrt(2.0) * tau)
            W = np.subtract((v * c[:, None])[:, None, :], (mu * c[:, None])[..., None])  # (m, no, n)
            np.multiply(W, W, out=W)
            np.negative(W, out=W)
            np.exp(W, out=W)
            R = np.matmul(W, F) * inv[:, None, None]                   # (m, no, 3)
            return R[..., 0], R[..., 1], R[..., 2]
        # Windows mu +- L tau per outer node. Far from phi's features (|mu| > (L + 5) tau)
        # phi is smooth on the window's scale: Gauss-Hermite in y. Near ones all lie in
        # |u_b| <= (2 L + 5) tau: one capped-sinh grid per element, shared by them.
        L = _QUAD_SPAN
        P = [np.empty(mu.shape) for _ in range(3)]
        near = np.abs(mu) <= (L + 5.0) * tau[:, None]
        if not np.all(near):
            r, c = np.nonzero(~near)
            y, wy = gauss_hermite(_GH_FAR)
            b = mu[r, c][:, None] + tau[r][:, None] * y
            P[0][r, c], P[1][r, c], P[2][r, c] = self.fn(b) @ wy, self.d1(b) @ wy, self.d2(b) @ wy
        if np.any(near):
            r, c = np.nonzero(near)
            T = _capped_t((2.0 * L + 5.0) * tau, s, A)
            he = T / (n // 2)
            v, dv = _capped_nodes(0.5 * he - T, T - 0.5 * he, s, A, n)   # (m, n)
            dv[:, 0] *= 2.0
            dv[:, -1] *= 2.0
            F = np.stack([self.fn(v), self.d1(v), self.d2(v)], axis=-1) * (dv * inv[:, None])[..., None]
            cc = 1.0 / (math.sqrt(2.0) * tau)
            W = np.subtract((v * cc[:, None])[r], (mu[r, c] * cc[r])[:, None])  # (N, n)
            np.multiply(W, W, out=W)
            np.negative(W, out=W)
            np.exp(W, out=W)
            R = np.matmul(W[:, None, :], F[r])[:, 0, :]
            P[0][r, c], P[1][r, c], P[2][r, c] = R[:, 0], R[:, 1], R[:, 2]
        return tuple(P)


def _check_values(act, vals, u):
    """Raise ValueError naming the activation if phi gave NaN at finite quadrature nodes.

    (inf is left alone: it is an overflow of the kernel, reported by the recursions.)
    """
    vals = np.asarray(vals)
    if not np.isnan(vals).any():
        return
    uu = np.broadcast_to(np.asarray(u, dtype=float), vals.shape)
    bad = np.isnan(vals) & np.isfinite(uu)
    if np.any(bad):
        ub = uu[bad]
        raise ValueError(f"activation {act.name!r} returned NaN at u = {ub.flat[0]:.6g} (a quadrature node; "
                         f"the Gaussian integrals need phi finite on the whole real line, here at least on "
                         f"[{ub.min():.4g}, {ub.max():.4g}])")


class _Erf(Activation):
    """phi = erf: arcsine kernel G = (2/pi) arcsin(2kab / sqrt((1+2kaa)(1+2kbb))) (Eq. 2.4)."""

    def kernel_packed(self, d, i, j, k):
        """G for packed pairs (d = diagonal, pairs (i, j), k = K_ij) with few array passes."""
        r = 1.0 / np.sqrt(1.0 + 2.0 * d)
        x = r[i]
        x *= r[j]
        x *= k
        x *= 2.0
        np.clip(x, -1.0, 1.0, out=x)
        np.arcsin(x, out=x)
        x *= 2.0 / math.pi
        return x

    def kernel(self, kaa, kbb, kab):
        x = 2.0 * np.asarray(kab, dtype=float) / np.sqrt((1.0 + 2.0 * np.asarray(kaa)) * (1.0 + 2.0 * np.asarray(kbb)))
        return (2.0 / math.pi) * np.arcsin(np.clip(x, -1.0, 1.0))

    def pair(self, kaa, kbb, kab):
        if np.ndim(kaa) == 0 and np.ndim(kbb) == 0 and np.ndim(kab) == 0:   # scalar fast path (ODE)
            return _erf_pair_scalar(float(kaa), float(kbb), float(kab))
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        da, db = 1.0 + 2.0 * kaa, 1.0 + 2.0 * kbb
        D = da * db
        root = np.sqrt(np.maximum(D - 4.0 * kab * kab, _TINY))
        G = (2.0 / math.pi) * np.arcsin(np.clip(2.0 * kab / np.sqrt(D), -1.0, 1.0))
        dab = (4.0 / math.pi) / root
        daa = -(4.0 / math.pi) * kab / (da * root)
        dbb = -(4.0 / math.pi) * kab / (db * root)
        return G, daa, dbb, dab

    def diag(self, k):
        if np.ndim(k) == 0 and math.isfinite(k) and k > -0.25:
            k = float(k)
            return (np.float64((2.0 / math.pi) * math.asin(2.0 * k / (1.0 + 2.0 * k))),
                    np.float64((4.0 / math.pi) / ((1.0 + 2.0 * k) * math.sqrt(1.0 + 4.0 * k))))
        k = np.asarray(k, dtype=float)
        g = (2.0 / math.pi) * np.arcsin(2.0 * k / (1.0 + 2.0 * k))
        dg = (4.0 / math.pi) / ((1.0 + 2.0 * k) * np.sqrt(1.0 + 4.0 * k))
        return g, dg

    def pair_equal(self, q, k):
        d = 1.0 + 2.0 * q
        inv = 1.0 / d
        x = np.clip(2.0 * k * inv, -1.0, 1.0)
        G = (2.0 / math.pi) * np.arcsin(x)
        A = (4.0 / math.pi) / np.sqrt(np.maximum(d * d - 4.0 * k * k, _TINY))
        g = (2.0 / math.pi) * np.arcsin(2.0 * q * inv)
        return G, A, g


def _erf_pair_scalar(kaa, kbb, kab):
    """Scalar version of _Erf.pair (math module; same formulas)."""
    if not (math.isfinite(kaa) and math.isfinite(kbb) and math.isfinite(kab)):
        return tuple(np.float64(math.nan) for _ in range(4))
    da, db = 1.0 + 2.0 * kaa, 1.0 + 2.0 * kbb
    D = da * db
    if D <= 0.0:
        return tuple(np.float64(math.nan) for _ in range(4))
    root = math.sqrt(max(D - 4.0 * kab * kab, _TINY))
    G = (2.0 / math.pi) * math.asin(min(max(2.0 * kab / math.sqrt(D), -1.0), 1.0))
    dab = (4.0 / math.pi) / root
    return (np.float64(G), np.float64(-(4.0 / math.pi) * kab / (da * root)),
            np.float64(-(4.0 / math.pi) * kab / (db * root)), np.float64(dab))


class _Relu(Activation):
    """phi = max(u, 0): arc-cosine kernel (Cho & Saul 2009) (Eq. 2.5).

    G = sqrt(kaa kbb)/(2 pi) (sin t + (pi - t) cos t), cos t = kab/sqrt(kaa kbb);
    dG/dkab = (pi - t)/(2 pi); dG/dkaa = sqrt(kbb/kaa) sin t /(4 pi).
    """

    def pair(self, kaa, kbb, kab):
        if np.ndim(kaa) == 0 and np.ndim(kbb) == 0 and np.ndim(kab) == 0:   # scalar fast path (ODE)
            return _relu_pair_scalar(float(kaa), float(kbb), float(kab))
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        saa, sbb = np.sqrt(np.maximum(kaa, _TINY)), np.sqrt(np.maximum(kbb, _TINY))
        rho = np.clip(kab / (saa * sbb), -1.0, 1.0)
        t = np.arccos(rho)
        sin_t = np.sqrt(1.0 - rho * rho)
        G = saa * sbb / (2.0 * math.pi) * (sin_t + (math.pi - t) * rho)
        dab = (math.pi - t) / (2.0 * math.pi)
        daa = (sbb / saa) * sin_t / (4.0 * math.pi)
        dbb = (saa / sbb) * sin_t / (4.0 * math.pi)
        return G, daa, dbb, dab

    def diag(self, k):
        k = np.asarray(k, dtype=float)
        return 0.5 * k, np.full_like(k, 0.5)

    def pair_equal(self, q, k):
        sa = np.sqrt(np.maximum(q, _TINY))
        s = sa * sa                     # (as in pair: the same rounding)
        rho = np.clip(k / s, -1.0, 1.0)
        t = np.arccos(rho)
        G = s / (2.0 * math.pi) * (np.sqrt(1.0 - rho * rho) + (math.pi - t) * rho)
        return G, (math.pi - t) / (2.0 * math.pi), 0.5 * q

    def mean(self, k):
        k = np.asarray(k, dtype=float)
        kk = np.maximum(k, _TINY)
        return np.sqrt(kk / (2.0 * math.pi)), 0.5 / np.sqrt(2.0 * math.pi * kk)


def _relu_pair_scalar(kaa, kbb, kab):
    """Scalar version of _Relu.pair (math module; same formulas)."""
    if not (math.isfinite(kaa) and math.isfinite(kbb) and math.isfinite(kab)):
        return tuple(np.float64(math.nan) for _ in range(4))
    saa, sbb = math.sqrt(max(kaa, _TINY)), math.sqrt(max(kbb, _TINY))
    rho = min(max(kab / (saa * sbb), -1.0), 1.0)
    t = math.acos(rho)
    sin_t = math.sqrt(1.0 - rho * rho)
    G = saa * sbb / (2.0 * math.pi) * (sin_t + (math.pi - t) * rho)
    return (np.float64(G), np.float64((sbb / saa) * sin_t / (4.0 * math.pi)),
            np.float64((saa / sbb) * sin_t / (4.0 * math.pi)), np.float64((math.pi - t) / (2.0 * math.pi)))


class _Linear(Activation):
    """phi = u: G = kab (Eq. 2.6)."""

    def kernel(self, kaa, kbb, kab):
        return np.array(np.broadcast_arrays(kaa, kbb, np.asarray(kab, dtype=float))[2], dtype=float)

    def pair(self, kaa, kbb, kab):
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        z = np.zeros(kab.shape)
        return kab.copy(), z, z.copy(), np.ones(kab.shape)

    def diag(self, k):
        k = np.asarray(k, dtype=float)
        return k.copy(), np.ones_like(k)

    def pair_equal(self, q, k):
        k = np.asarray(k, dtype=float)
        return k.copy(), np.ones(k.shape), np.array(q, dtype=float)


# ----------------------------------------------------------------- builtins
_SQRT_PI = math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf_d1(u):
    return (2.0 / _SQRT_PI) * np.exp(-u * u)


def _erf_d2(u):
    return -2.0 * u * _erf_d1(u)


def _tanh_d1(u):
    t = np.tanh(u)
    return 1.0 - t * t


def _tanh_d2(u):
    t = np.tanh(u)
    return -2.0 * t * (1.0 - t * t)


def _relu(u):
    return np.maximum(u, 0.0)


def _relu_d1(u):
    return (np.asarray(u) > 0).astype(float)


def _zero(u):
    return np.zeros_like(np.asarray(u, dtype=float))


def _gelu(u):
    return u * special.ndtr(u)


def _gelu_d1(u):
    return special.ndtr(u) + u * _INV_SQRT_2PI * np.exp(-0.5 * u * u)


def _gelu_d2(u):
    return _INV_SQRT_2PI * np.exp(-0.5 * u * u) * (2.0 - u * u)


def _identity(u):
    return np.asarray(u, dtype=float)


def _one(u):
    return np.ones_like(np.asarray(u, dtype=float))


BUILTIN = {
    "erf": lambda: _Erf("erf", special.erf, _erf_d1, _erf_d2, odd=True, closed_form=True),
    "tanh": lambda: Activation("tanh", np.tanh, _tanh_d1, _tanh_d2, odd=True),
    "relu": lambda: _Relu("relu", _relu, _relu_d1, _zero, homogeneous=True, closed_form=True,
                          smooth=False, kinks=(0.0,)),
    "linear": lambda: _Linear("linear", _identity, _one, _zero, odd=True, homogeneous=True,
                              closed_form=True),
    "gelu": lambda: Activation("gelu", _gelu, _gelu_d1, _gelu_d2, asymptotic_slopes=(1.0, 0.0)),
}


class KinkedActivationWarning(UserWarning):
    """A user activation with declared kinks: mean-field integrals are only approximately right."""


_PROBE = np.linspace(-12.0, 12.0, 481)   # finiteness probe (covers +-8.5 sd of k up to ~2)
_KINK_GRID = np.linspace(-8.0, 8.0, 1601)  # spacing 0.01 = the larger difference step
_KINK_H = 0.01


def find_kinks(fn, grid=_KINK_GRID, h=_KINK_H, rtol=1e-2):
    """Points of ``grid`` where phi is numerically not C^2 (a kink or a jump).

    Compares central second differences at steps h and h/2: for a smooth phi they
    differ by ~ phi^(4) h^2 / 16 (~1e-5 for unit-scale features), at a jump J of phi'
    within h of a grid point by >= ~J/(3h) (grid spacing <= h, so every kink is seen).
    Flags where the difference exceeds rtol * (1 + median |phi''|). Returns the flagged
    points, one representative per cluster.
    """
    u = np.asarray(grid, dtype=float)
    f0 = np.asarray(fn(u), dtype=float)
    d_h = (np.asarray(fn(u + h), dtype=float) - 2.0 * f0 + np.asarray(fn(u - h), dtype=float)) / (h * h)
    h2 = 0.5 * h
    d_h2 = (np.asarray(fn(u + h2), dtype=float) - 2.0 * f0 + np.asarray(fn(u - h2), dtype=float)) / (h2 * h2)
    diff = np.abs(d_h - d_h2)
    scale = 1.0 + np.median(np.abs(d_h2))
    bad = np.flatnonzero(~(diff <= rtol * scale))
    if bad.size == 0:
        return []
    groups = np.split(bad, np.flatnonzero(np.diff(bad) > 3) + 1)
    return [float(u[g[np.argmax(diff[g])]]) for g in groups]


def from_callable(fn: Callable, d1: Optional[Callable] = None, d2: Optional[Callable] = None,
                  name: Optional[str] = None, odd: bool = False, n_quad: int = 64,
                  kinks=None, check_smooth: bool = True) -> Activation:
    """Wrap a user callable phi (vectorised over NumPy arrays) as an :class:`Activation`.

    Gaussian integrals use quadrature; missing derivatives are central differences
    of ``fn`` (step 1e-4 / 1e-3). Set ``odd=True`` if phi is odd (skips the mean,
    which is then exactly 0).

    Guards (issue 12): phi must be finite on [-12, 12] (ValueError naming the first
    bad point; the quadrature also raises if phi gives NaN at any of its nodes).
    Non-smooth phi: finite differences give a wrong phi'' at a kink (relu as a callable
    loses the delta part of phi''), so unless ``kinks`` is given phi is checked
    numerically (:func:`find_kinks` on [-8, 8]) and a kink or jump raises ValueError
    saying how to declare it. Declare kinks with ``kinks=[u0, ...]`` (and preferably
    ``d1``): the result then has ``smooth=False``; the mean-field code accepts it (it
    needs only phi and phi'), the finite-width code must refuse it
    (``Activation.supports_finite_width``). ``kinks=[]`` declares phi smooth without
    the numerical check; ``check_smooth=False`` skips the check as well.
    A declared ``d1`` is checked against central differences of phi away from kinks.
    """
    label = name or getattr(fn, "__name__", "callable")
    probe = _PROBE
    try:
        with np.errstate(all="ignore"):
            val = np.asarray(fn(probe), dtype=float)
    except Exception as exc:  # pragma: no cover - message path
        raise ValueError(f"activation callable {label!r} failed on a NumPy array: {exc}") from exc
    if val.shape != probe.shape:
        raise ValueError(f"activation callable {label!r} must map a NumPy array elementwise "
                         f"(shape {probe.shape} in, got {val.shape} out)")
    if not np.all(np.isfinite(val)):
        ub = probe[~np.isfinite(val)]
        raise ValueError(f"activation callable {label!r} must map a NumPy array elementwise to finite values: "
                         f"phi(u) is not finite at u = {ub[0]:.4g} (and {ub.size - 1} more of {probe.size} "
                         f"probe points in [-12, 12]); Gaussian integrals need phi on the whole real line")
    if kinks is None:
        found = find_kinks(fn) if check_smooth else []
        if found:
            pts = ", ".join(f"{x:.3g}" for x in found[:5])
            raise ValueError(
                f"activation callable {label!r} is not smooth: its second finite differences at two step "
                f"sizes disagree near u = {pts} (a kink or a jump), so phi'' by finite differences would be "
                f"silently wrong. Declare it: rs.from_callable(fn, d1=<phi'>, kinks=[{pts}]) (mean field "
                f"then works; the finite-width theory needs phi'' and refuses kinked activations), use "
                f"a built-in (e.g. 'relu'), or pass kinks=[] if phi is in fact C^2.")
        kinks = ()
    kinks = tuple(float(x) for x in kinks)
    if kinks:
        warnings.warn(
            f"activation {label!r} declared with kinks at {list(kinks)}: its Gaussian integrals use the "
            "quadrature built for smooth phi, which converges only slowly across a kink (measured for relu "
            "as a callable: G and E[phi' phi'] off by ~3e-4 relative at K = 1, rho = 0.5, and by up to "
            "~30% at K = 0.01, rho = -0.9); use a built-in closed form (e.g. 'relu') where one exists. "
            "The finite-width theory refuses it (Activation.supports_finite_width is False).",
            KinkedActivationWarning, stacklevel=2)
    for nm, g in (("d1", d1), ("d2", d2)):
        if g is not None:
            gv = np.asarray(g(probe), dtype=float)
            if gv.shape != probe.shape or not np.all(np.isfinite(gv)):
                raise ValueError(f"activation callable {label!r}: {nm} must map arrays elementwise to "
                                 "finite values on [-12, 12]")
    if d1 is not None:   # a declared phi' must agree with central differences of phi away from kinks
        u = np.linspace(-4.0, 4.0, 161) + 0.00317
        far = np.all(np.abs(u[:, None] - np.asarray(kinks + (np.inf,))[None, :]) > 1e-2, axis=1)
        fd = _fd1(fn)(u[far])
        dv = np.asarray(d1(u[far]), dtype=float)
        if np.max(np.abs(fd - dv)) > 1e-5 * (1.0 + np.max(np.abs(fd))):
            k = int(np.argmax(np.abs(fd - dv)))
            raise ValueError(f"activation callable {label!r}: the declared d1 does not match the derivative "
                             f"of phi (at u = {u[far][k]:.4g}: d1 = {dv[k]:.6g}, finite difference "
                             f"{fd[k]:.6g})")
    return Activation(label, fn, d1 or _fd1(fn), d2 or _fd2(fn), odd=odd, n_quad=n_quad,
                      smooth=not kinks, kinks=kinks)


def get_activation(activation) -> Activation:
    """Resolve ``"erf" | "tanh" | "relu" | "linear" | "gelu"``, a callable or an Activation."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.strip().lower()
        if key not in BUILTIN:
            raise ValueError(f"activation must be one of {sorted(BUILTIN)} or a callable, got {activation!r}")
        return BUILTIN[key]()
    if callable(activation):
        return from_callable(activation)
    raise ValueError(f"activation must be a name {sorted(BUILTIN)} or a callable, got {activation!r}")
