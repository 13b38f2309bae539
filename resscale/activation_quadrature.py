"""The :class:`Activation` type: phi with its derivatives and Gaussian integrals by quadrature
(docs/theory.md Sec. 2.3).

For a centred bivariate Gaussian (u_a, u_b) with covariance [[kaa, kab], [kab, kbb]],
:meth:`Activation.pair` gives G = E[phi(u_a) phi(u_b)] and its derivatives (Eq. 2.1-2.3),
:meth:`Activation.diag` g(k) = E[phi(u)^2] and :meth:`Activation.mean` mu(k) = E[phi(u)], here by
sinh-mapped trapezoid rules (1-D) and a conditional decomposition u_b | u_a (2-D), accurate to
<= 1e-9 relative for smooth phi and k in [1e-6, 1e6], |rho| <= 1 (accuracy parameters ``_QUAD_H``
etc. below; measured in tests/test_quadrature.py). The closed forms (erf, relu, linear) override
these methods (:mod:`resscale.activation_closed_forms`); the registry of built-ins and the
resolver are in :mod:`resscale.activations`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

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
        """True when phi'' is exact: a smooth phi (the built-in relu overrides this with True: its
        delta is handled in closed form, :mod:`resscale.activation_closed_forms`)."""
        return bool(self.smooth)

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
