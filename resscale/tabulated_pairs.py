"""Tabulated equal-norm Gaussian pair functions for quadrature activations (issue 9).

The two-input recursion (:mod:`resscale.sensitivity`) and the continuum flow
(:mod:`resscale.optimal_alpha`) need, for two inputs of equal variance q and
covariance k = c q,

    G(q, c) = E[phi(u_a) phi(u_b)],  A(q, c) = E[phi'(u_a) phi'(u_b)],  g(q) = E[phi(u)^2]

(``Activation.pair_equal``). For activations without closed forms (tanh, gelu, user
callables) each value costs a 2-D quadrature (~50-150 microseconds a point), once per
layer and alpha. Here they are tabulated once per activation and interpolated
(docs/theory.md Sec. 5.1):

* variables: x = log q on a uniform grid (q in [Q_LO, Q_HI]), and for the angle
  theta = arccos c (theta' = arccos(-c) on the half c < 0) the variable
  v = asinh(t / EPS) + 2 BETA t, t = tan(theta/2): logarithmic in theta for EPS << theta << 1
  (for large q the functions change on the scale theta ~ 1/sqrt(q), e.g. tanh -> sign), linear
  for theta << EPS and ~theta near theta = pi/2. t = sqrt((q - k)/(q + k)) is
  computed from q - k and q + k, so c near +-1 keeps its relative precision;
* tabulated: A / N (N(q) = A(q, c = 1) = E[phi'^2]) and the divided difference
  R = (g - G) / (q - k) = mean of A over [k, q] (c >= 0; for c < 0 the mean over
  [-q, k], anchored at G(q, -1)), in log form where they are positive on the whole
  table (else linear); G = g - (q - k) R keeps g - G (the quantity that drives 1 - c)
  relatively accurate however close c is to 1. R comes from integrating the
  tabulated A along theta (Gauss-Legendre on the interpolant), not from differences
  of quadrature values of G. Odd phi: one half, G(-c) = -G(c), A(-c) = A(c), and R is
  normalised so that G(q, 0) = 0; otherwise the c < 0 half is shifted so that G is
  continuous at c = 0 (the shift is the quadrature's own inconsistency, checked);
* 1-D in x: log g, log N, G(q, -1)/g (non-odd), E[phi]/sqrt(g) (non-odd);
* interpolation: tensor-product Lagrange of order ``_ORDER`` (8 points per axis) on the
  uniform grids, ghost nodes beyond the ranges (even mirror at theta = 0);
* beyond Q_HI, for activations asymptotically piecewise linear, phi(x) ~ s_+ x (x -> +inf),
  s_- x (x -> -inf), up to a localized remainder (declared ``Activation.asymptotic_slopes``:
  gelu (1, 0); detected numerically for callables, e.g. softplus, by
  :func:`resscale.asymptotic_pairs.detect_slopes`), the closed forms of the homogeneous limit
  p = s_+ relu(x) - s_- relu(-x) (:mod:`resscale.asymptotic_pairs`; counter ``n_asymptotic``),
  accepted at build when they agree with the table at q = Q_HI (``_TOL_JA``, ``_TOL_JG``;
  ``stats["asymptotic"]``). Their error is O(q^-1/2) relative in A where theta <~ q^-1/2
  (~1.4 / sqrt(q) for softplus, 0.2 / sqrt(q) gelu) and O(1/q) elsewhere; log S off by <= 2e-5
  (c0 = 1, measured 1.5e-5 softplus, 2.2e-6 gelu; ~1e-7 at c0 = 0.9), docs/theory.md Sec. 5.1;
* otherwise outside q in [Q_LO, Q_HI] the original quadrature is used (non-finite input: NaN,
  as the quadrature gives, without calling it);
* compiled path (numba, when installed and RESSCALE_NO_NUMBA is unset): the same evaluation
  one point at a time (``tabulated_compiled._eval_py``), the fused two-input
  recursion of the full, reduced and two_layer blocks on it
  (:meth:`TabulatedActivation.compiled_trajectory`, used by ``sensitivity._reference_trajectory``;
  an alpha whose trajectory leaves the table is flagged and recomputed by the NumPy path; with the
  homogeneous limit it continues beyond Q_HI, and one that overflows float64 ends with NaN) and
  one-point ``pair`` / ``diag`` calls (the continuum flow). Agrees with the NumPy path to ~1e-13.

Modules: here the mode / cache policy, the build-time check and the NumPy evaluation; the grid
parameters, angle variable, Lagrange weights and the table construction (``build_tables``) in
:mod:`resscale.tabulated_build` (re-exported here); the compiled path in :mod:`resscale.tabulated_compiled`.

Accuracy against the quadrature (the reference), measured at build time on random
points (``TabulatedActivation.stats``; the table is refused, and the quadrature used,
if A is off by more than ``_TOL_A`` relative or G by more than ``_TOL_G`` g), and in
tests/test_meanfield_tabulated.py. Switch: environment variable RESSCALE_TABULATED
= "auto" (default: tables for large work, or when already built), "1"/"always",
"0"/"never" (quadrature everywhere: the reference), or :func:`mode` as a context manager.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import OrderedDict

import numpy as np

from .activations import Activation
from .tabulated_build import (BETA, EPS, _GHOST, _HX, _LM, _NV_HALF, _OFFS, _ORDER, _POW, _TH_EXT,  # noqa: F401
                              _cell, _dtheta_dv, _lagrange_matrix, _theta_of_v, _v_of_t, _weights, build_tables)

__all__ = ["tabulated", "for_trajectory", "for_flow", "mode", "TabulatedActivation", "cache_clear"]

# ---------------------------------------------------------------- table parameters
Q_LO, Q_HI = 1e-8, 1e10      # tabulated range of q (variance); outside: quadrature
# (grid parameters EPS, BETA, _HX, _NV_HALF, _TH_EXT, _ORDER, _GHOST: resscale.tabulated_build)
_TOL_A = 1e-6                # build-time acceptance: max relative error of A at random points
_TOL_G = 1e-7                # ... and of G (in units of g) and of g
_N_CHECK = 400               # random check points at build time
_WORK_MIN = 60_000           # 'auto': build a table when depth * n_alphas (x halves) exceeds this
_TOL_JA = 2e-5               # homogeneous-limit continuation beyond Q_HI: max |A_lim - A| / N at q = Q_HI
_TOL_JG = 1e-7               # ... and max |G_lim - G| / g, |g_lim - g| / g (= _TOL_G, the table's own acceptance)

_LOCK = threading.Lock()
_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_MAX = 8
_MODE_OVERRIDE = []


def _mode():
    if _MODE_OVERRIDE:
        return _MODE_OVERRIDE[-1]
    env = os.environ.get("RESSCALE_TABULATED", "auto").strip().lower()
    if env in ("0", "never", "off", "false", "no"):
        return "never"
    if env in ("1", "always", "on", "true", "yes"):
        return "always"
    return "auto"


@contextlib.contextmanager
def mode(value):
    """Context manager: ``"never"`` (quadrature, the reference), ``"always"`` or ``"auto"``."""
    if value not in ("never", "always", "auto"):
        raise ValueError(f"mode must be 'never', 'always' or 'auto', got {value!r}")
    _MODE_OVERRIDE.append(value)
    try:
        yield
    finally:
        _MODE_OVERRIDE.pop()


def _key(phi):
    return (type(phi), phi.name, phi.fn, phi.d1, phi.d2, bool(phi.odd), bool(phi.smooth), tuple(phi.kinks),
            getattr(phi, "asymptotic_slopes", None))


def _eligible(phi):
    return (isinstance(phi, Activation) and not isinstance(phi, TabulatedActivation)
            and not phi.closed_form and not phi.homogeneous)


def cache_clear():
    with _LOCK:
        _CACHE.clear()


def _cached(phi):
    with _LOCK:
        hit = _CACHE.get(_key(phi))
        if hit is not None:
            _CACHE.move_to_end(_key(phi))
        return hit


def tabulated(phi, build=True):
    """The :class:`TabulatedActivation` of ``phi`` (built once and cached), or None when
    ``phi`` has closed forms, its table failed the build-time accuracy check, or
    ``build`` is False and none is cached."""
    if not _eligible(phi):
        return None
    hit = _cached(phi)
    if hit is None and build:
        try:
            hit = TabulatedActivation.build(phi)
        except (ValueError, FloatingPointError, OverflowError, ZeroDivisionError) as exc:
            hit = _Refused(f"{type(exc).__name__}: {exc}")
        with _LOCK:
            _CACHE[_key(phi)] = hit
            while len(_CACHE) > _CACHE_MAX:
                _CACHE.popitem(last=False)
    return hit if isinstance(hit, TabulatedActivation) else None


class _Refused:
    def __init__(self, reason):
        self.reason = reason


def refusal_reason(phi):
    hit = _cached(phi) if _eligible(phi) else None
    return hit.reason if isinstance(hit, _Refused) else None


def for_trajectory(phi, work):
    """The activation to use in the two-input recursion: the tabulated one when the mode
    allows it ('always'; 'auto' and work = depth * n_alphas >= _WORK_MIN per table half,
    or a table already built), else ``phi`` itself."""
    if not _eligible(phi):
        return phi
    m = _mode()
    if m == "never":
        return phi
    halves = 1 if phi.odd else 2
    build = m == "always" or work >= _WORK_MIN * halves
    return tabulated(phi, build=build) or phi


def for_flow(phi):
    """Same for the continuum ODE (scalar calls): a cached table ('auto') or a new one ('always')."""
    if not _eligible(phi):
        return phi
    m = _mode()
    if m == "never":
        return phi
    return tabulated(phi, build=(m == "always")) or phi


class NetView:
    """``net`` with ``phi`` replaced (for the blocks' ``continuum_rates``)."""

    __slots__ = ("_net", "phi")

    def __init__(self, net, phi):
        self._net, self.phi = net, phi

    def __getattr__(self, name):
        return getattr(self._net, name)


class TabulatedActivation(Activation):
    """An :class:`Activation` whose equal-norm functions (``pair_equal``, ``diag``, ``mean``,
    ``pair`` with kaa == kbb, which then returns NaN for the unused dG/dkaa, dG/dkbb) come
    from tables; beyond Q_HI, when ``asym`` (the slopes) is set, from the homogeneous limit's closed
    forms (:mod:`resscale.asymptotic_pairs`); everything else, and q otherwise outside [Q_LO, Q_HI],
    from the wrapped ``base``. Internal to the mean-field recursions; counters ``n_table`` /
    ``n_asymptotic`` / ``n_fallback`` count points (the compiled trajectory counts only ``n_table``)."""

    # (frozen dataclass: the extra state is set with object.__setattr__)
    @classmethod
    def build(cls, base):
        self = cls(base.name, base.fn, base.d1, base.d2, odd=base.odd, homogeneous=base.homogeneous,
                   closed_form=False, n_quad=base.n_quad, smooth=base.smooth, kinks=base.kinks)
        st = object.__setattr__
        st(self, "base", base)
        st(self, "n_table", 0)
        st(self, "n_fallback", 0)
        st(self, "n_asymptotic", 0)
        st(self, "asym", None)
        self._build()
        self._asymptotic_setup()
        return self

    def _asymptotic_setup(self):
        """Enable the homogeneous-limit continuation beyond Q_HI (:mod:`resscale.asymptotic_pairs`)
        when the base activation declares or shows slopes (s_+, s_-) and the limit's closed forms agree
        with the table at q = Q_HI (|dA| <= _TOL_JA N, |dG|, |dg| <= _TOL_JG g, at c = +-1, +-(1 - 10^-j),
        j = 1..14, and a c grid); stats["asymptotic"] records the slopes and the junction deviations."""
        from . import asymptotic_pairs as ap
        sl = ap.slopes(self.base)
        if sl is not None and self.odd and sl[0] != sl[1]:
            sl = None                                    # an odd phi has s_+ = s_-
        info = {"slopes": sl}
        if sl is not None:
            near = 1.0 - 10.0 ** -np.arange(1.0, 15.0)
            c = np.concatenate([[1.0, -1.0], near, -near, np.linspace(-0.95, 0.95, 39)])
            if self.odd:
                c = c[c >= 0.0]
            q = np.full(c.shape, math.exp(self._x_range[1]))
            G1, A1, g1 = self._eval(q, q * c, np.full(c.shape, self._x_range[1]))
            G0, A0, g0 = ap.pair_equal(q, q * c, sl)
            N = np.exp(self._one_d_eval(np.full(1, self._x_range[1]))[0, 1])
            with np.errstate(all="ignore"):
                eA = float(np.max(np.abs(A0 - A1)) / N)
                eG = float(max(np.max(np.abs(G0 - G1) / g1), np.max(np.abs(g0 - g1) / g1)))
            info.update(junction_err_A_over_N=eA, junction_err_G_over_g=eG)
            ok = eA <= _TOL_JA and eG <= _TOL_JG            # (False for NaN)
            info["used"] = ok
            if ok:
                object.__setattr__(self, "asym", sl)
        self.stats["asymptotic"] = info

    # ---- construction
    def _build(self):
        import time
        t0 = time.perf_counter()
        object.__setattr__(self, "build_seconds", None)
        build_tables(self, Q_LO, Q_HI, _TOL_G)          # (the module's Q_LO, Q_HI: tests shrink them)
        self._check()
        object.__setattr__(self, "build_seconds", time.perf_counter() - t0)

    def _check(self):
        """Compare with the quadrature at random points; refuse the table beyond the tolerances."""
        rng = np.random.default_rng(12345)
        n = _N_CHECK
        x = rng.uniform(math.log(Q_LO), math.log(Q_HI), n)
        q = np.exp(x)
        kind = rng.integers(0, 3, n)
        c = rng.uniform(-1.0, 1.0, n)
        near = 1.0 - 10.0 ** rng.uniform(-12, -1, n)
        c = np.where(kind == 1, near, np.where(kind == 2, -near, c))
        c[:4] = (1.0, -1.0, 0.0, 1.0)
        k = q * c
        with np.errstate(all="ignore"):
            G0, A0, g0 = (np.asarray(v, dtype=float) for v in self.base.pair_equal(q, k))
        G1, A1, g1 = self._eval(q, k, x)
        N = np.exp(self._one_d_eval(x)[:, 1])
        eA = float(np.max(np.abs(A1 - A0) / np.maximum(np.abs(A0), 1e-3 * N)))   # relative, floor 1e-3 E[phi'^2]
        eG = float(np.max(np.abs(G1 - G0) / g0))
        eg = float(np.max(np.abs(g1 - g0) / g0))
        self.stats.update({"max_rel_err_A": eA, "max_err_G_over_g": eG, "max_rel_err_g": eg, "n_check": n})
        if not (eA <= _TOL_A and eG <= _TOL_G and eg <= _TOL_G):
            raise ValueError(f"activation {self.name!r}: table check failed (A {eA:.2g}, G/g {eG:.2g}, g {eg:.2g})")

    # ---- evaluation
    def _one_d_eval(self, x, wx=None, ix=None):
        if wx is None:
            ix, ux = _cell((x - self._xs0) / self._hx - (_ORDER // 2 - 1), self._nxc)
            wx = _weights(ux)
        T = self._one_d
        vals = T[ix[:, None] + np.arange(_ORDER)[None, :]]          # (p, ORDER, m)
        return np.einsum("pi,pim->pm", wx, vals)

    def _two_d_eval(self, s, ix, wx, v):
        TA, TR, nv = self._flat[s]
        iv, uv = _cell(v / self._hv + _GHOST - (_ORDER // 2 - 1), self._nvc)
        wv = _weights(uv)
        idx = (ix * nv + iv)[:, None] + self._off[None, :]          # (p, ORDER*ORDER)
        w2 = (wx[:, :, None] * wv[:, None, :]).reshape(wx.shape[0], -1)
        FA = np.einsum("pk,pk->p", w2, np.take(TA, idx))
        FR = np.einsum("pk,pk->p", w2, np.take(TR, idx))
        lA, lR = self._modes[s]
        return (np.exp(FA) if lA else FA), (np.exp(FR) if lR else FR)

    def _eval(self, q, k, x):
        """(G, A, g) for 1-D arrays inside the table's q range."""
        ix, ux = _cell((x - self._xs0) / self._hx - (_ORDER // 2 - 1), self._nxc)
        wx = _weights(ux)
        D = self._one_d_eval(x, wx, ix)
        g = np.exp(D[:, 0])
        N = np.exp(D[:, 1])
        with np.errstate(all="ignore"):
            if self.odd:
                ka = np.abs(k)
                dd = np.maximum(q - ka, 0.0)
                v = _v_of_t(np.sqrt(dd / (q + ka)))
                A, R = self._two_d_eval(1.0, ix, wx, v)
                A, R = A * N, R * N
                G = np.copysign(g - dd * R, k)
                return G, A, g
            d = np.maximum(q - k, 0.0)
            s = np.maximum(q + k, 0.0)
            pos = d <= s
            G, A = np.empty(q.shape), np.empty(q.shape)
            for sgn, sel in ((1.0, pos), (-1.0, ~pos)):
                if not np.any(sel):
                    continue
                allp = bool(np.all(sel))
                idx = slice(None) if allp else np.nonzero(sel)[0]
                a, b = (d, s) if sgn > 0 else (s, d)
                v = _v_of_t(np.sqrt(a[idx] / b[idx]))
                Ah, Rh = self._two_d_eval(sgn, ix[idx], wx[idx], v)
                Nh = N[idx]
                A[idx] = Ah * Nh
                if sgn > 0:
                    G[idx] = g[idx] - a[idx] * (Rh * Nh)
                else:
                    G[idx] = g[idx] * D[idx, 2] + a[idx] * (Rh * Nh)
            return G, A, g

    def _split(self, q):
        x = np.log(np.where(q > 0, q, np.nan)) if np.any(q <= 0) else np.log(q)
        lo, hi = self._x_range
        return x, (x >= lo) & (x <= hi)

    def pair_equal(self, q, k):
        q, k = np.broadcast_arrays(np.asarray(q, dtype=float), np.asarray(k, dtype=float))
        shape = q.shape
        qf, kf = q.ravel(), k.ravel()
        with np.errstate(all="ignore"):
            x, ok = self._split(qf)
            ok &= np.isfinite(kf)
        st = object.__setattr__
        if ok.all():
            G, A, g = self._eval(qf, kf, x)
            st(self, "n_table", self.n_table + qf.size)
        else:
            G, A, g = np.empty(qf.shape), np.empty(qf.shape), np.empty(qf.shape)
            if np.any(ok):
                G[ok], A[ok], g[ok] = self._eval(qf[ok], kf[ok], x[ok])
            bad = ~ok
            big = self._beyond(qf, x) & bad & np.isfinite(kf)
            if np.any(big):
                from . import asymptotic_pairs as ap
                G[big], A[big], g[big] = ap.pair_equal(qf[big], kf[big], self.asym)
                bad &= ~big
                st(self, "n_asymptotic", self.n_asymptotic + int(big.sum()))
            nf = bad & ~(np.isfinite(qf) & np.isfinite(kf))    # non-finite input: NaN (as the quadrature)
            G[nf], A[nf], g[nf] = np.nan, np.nan, np.nan
            bad &= ~nf
            if np.any(bad):
                G[bad], A[bad], g[bad] = (np.asarray(v, dtype=float) for v in self.base.pair_equal(qf[bad], kf[bad]))
            st(self, "n_table", self.n_table + int(ok.sum()))
            st(self, "n_fallback", self.n_fallback + int(bad.sum()))
        return G.reshape(shape), A.reshape(shape), g.reshape(shape)

    def _beyond(self, q, x):
        """Mask of finite q above the table where the homogeneous-limit continuation applies."""
        if self.asym is None:
            return np.zeros(q.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return np.isfinite(q) & (x > self._x_range[1])

    def pair(self, kaa, kbb, kab):
        """G, dG/dkaa, dG/dkbb, dG/dkab: tabulated when kaa == kbb (then dG/dkaa = dG/dkbb = NaN:
        not tabulated, unused by the recursions here); otherwise the quadrature."""
        if np.ndim(kaa) == 0 and np.ndim(kbb) == 0 and np.ndim(kab) == 0 and kaa == kbb:
            one = self._pair_scalar(kaa, kab)          # one point (the continuum flow): compiled, if loaded
            if one is not None:
                return np.float64(one[0]), np.float64(np.nan), np.float64(np.nan), np.float64(one[1])
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        if not np.array_equal(kaa, kbb):
            return self.base.pair(kaa, kbb, kab)
        G, A, _ = self.pair_equal(kaa, kab)
        nan = np.full(G.shape, np.nan)
        return G, nan, nan.copy(), A

    def diag(self, k):
        if np.ndim(k) == 0:
            one = self._diag_scalar(k)
            if one is not None:
                return np.float64(one[0]), np.float64(one[1])
        k = np.asarray(k, dtype=float)
        kf = k.ravel()
        with np.errstate(all="ignore"):
            x, ok = self._split(kf)
        if not ok.all():
            return self._outside(kf, x, ok, "diag", k.shape)
        D, dD = self._one_d_with_derivative(x)
        g = np.exp(D[:, 0])
        return g.reshape(k.shape), (g * dD[:, 0] / kf).reshape(k.shape)

    def mean(self, k):
        k = np.asarray(k, dtype=float)
        if self.odd:
            z = np.zeros_like(k)
            return z, z.copy()
        kf = k.ravel()
        with np.errstate(all="ignore"):
            x, ok = self._split(kf)
        if not ok.all():
            return self._outside(kf, x, ok, "mean", k.shape)
        D, dD = self._one_d_with_derivative(x)
        sg = np.exp(0.5 * D[:, 0])
        mu = sg * D[:, 3]
        dmu = (mu * 0.5 * dD[:, 0] + sg * dD[:, 3]) / kf
        return mu.reshape(k.shape), dmu.reshape(k.shape)

    def _outside(self, kf, x, ok, which, shape):
        """``diag`` / ``mean`` when some k lie outside the table: the base's quadrature for all, except
        that k above it use the homogeneous limit (:mod:`resscale.asymptotic_pairs`) when enabled."""
        big = self._beyond(kf, x)
        if not np.any(big):
            return getattr(self.base, which)(kf.reshape(shape))
        from . import asymptotic_pairs as ap
        v, dv = np.empty(kf.shape), np.empty(kf.shape)
        v[big], dv[big] = getattr(ap, which)(kf[big], self.asym)
        rest = ~big
        if np.any(rest):
            v[rest], dv[rest] = getattr(self, which)(kf[rest])
        return v.reshape(shape), dv.reshape(shape)

    def _one_d_with_derivative(self, x):
        ix, ux = _cell((x - self._xs0) / self._hx - (_ORDER // 2 - 1), self._nxc)
        P = np.power(ux[:, None], _POW)
        dP = np.zeros_like(P)
        dP[:, 1:] = P[:, :-1] * _POW[1:]
        wx, dwx = P @ _LM.T, dP @ _LM.T / self._hx
        vals = self._one_d[ix[:, None] + np.arange(_ORDER)[None, :]]
        return np.einsum("pi,pim->pm", wx, vals), np.einsum("pi,pim->pm", dwx, vals)

    # ---- compiled (numba) path
    def _nb_args(self):
        """(T, D, modes, P) for the compiled functions (:mod:`resscale.tabulated_compiled`): flat
        tables (halves, nx, nv, 2), flat 1-D table (nx, ncol), log/linear flags (halves, 2), grid parameters."""
        args = getattr(self, "_nb_cache", None)
        if args is None:
            halves = (1.0,) if self.odd else (1.0, -1.0)
            T = np.ascontiguousarray(np.stack([self._tabs[s] for s in halves])).ravel()
            modes = np.array([self._modes[s] for s in halves], dtype=np.bool_)
            P = np.array([self._xs0, self._hx, self._hv, self._x_range[0], self._x_range[1],
                          float(self._nxc), float(self._nvc), float(self._tabs[1.0].shape[1]),
                          float(self._tabs[1.0].shape[0]), float(len(halves)),    # P[9]: 1 odd, 2 not
                          float(self._one_d.shape[1]),                            # P[10]
                          1.0 if self.asym is not None else 0.0,                  # P[11]: continuation beyond x_hi
                          *(_asym_coefficients(self.asym))])                     # P[12:15]: a^2, b^2, b
            args = (T, np.ascontiguousarray(self._one_d).ravel(), modes, P)
            object.__setattr__(self, "_nb_cache", args)
        return args

    def compiled_trajectory(self, block, sw2, sb2, L, c0, q0, alphas, load=True):
        """The equal-norm two-input recursion of ``block`` ("full", "reduced", "two_layer") on the
        tables, compiled: dict of arrays q, k, log_dk (log of the product of the one-step factors)
        and ok (False where the trajectory left the table: recompute with the NumPy path); None
        when numba is unavailable (or not loaded and ``load`` is False) or the block is not covered."""
        from .tabulated_compiled import _KINDS
        kind = _KINDS.get(block)
        nb = _compiled(load) if kind is not None else None
        if nb is None:
            return None
        a = np.ascontiguousarray(alphas, dtype=float)
        T, D, modes, P = self._nb_args()
        with np.errstate(all="ignore"):
            q, k, lg, ok = nb[0](kind, float(sw2), float(sb2), int(L), float(c0), float(q0), a, T, D, modes, P)
        object.__setattr__(self, "n_table", self.n_table + int(L) * int(ok.sum()))
        object.__setattr__(self, "n_compiled", getattr(self, "n_compiled", 0) + int(ok.sum()))
        object.__setattr__(self, "n_left", getattr(self, "n_left", 0) + int(ok.size - ok.sum()))
        return {"q": q, "k": k, "log_dk": lg, "ok": ok}

    def _pair_scalar(self, z, zk):
        """(G, A, g) at one point by the compiled evaluator when it is loaded, else None."""
        nb = _compiled(load=False)
        if nb is None:
            return None
        T, D, modes, P = self._nb_args()
        ok, G, A, g = nb[1](float(z), float(zk), T, D, modes, P)
        if not ok:
            return None
        object.__setattr__(self, "n_table", self.n_table + 1)
        return G, A, g

    def _diag_scalar(self, k):
        """(g, dg/dk) at one point by the compiled evaluator when it is loaded (or the homogeneous
        limit beyond the table), else None."""
        nb = _compiled(load=False)
        k = float(k)
        if nb is None or not (k > 0.0):
            return None
        x = math.log(k)
        if self.asym is not None and x > self._x_range[1] and math.isfinite(k):
            a2, b2, _ = _asym_coefficients(self.asym)
            return (a2 + b2) * k, a2 + b2
        if not (self._x_range[0] <= x <= self._x_range[1]):
            return None
        T, D, modes, P = self._nb_args()
        lg, dlg = nb[2](x, D, P)
        g = math.exp(lg)
        return g, g * dlg / k

    def __repr__(self):
        return f"TabulatedActivation({self.name!r})"


def _asym_coefficients(sl):
    """(a^2, b^2, b) of the homogeneous limit a x + b |x| (zeros when ``sl`` is None)."""
    if sl is None:
        return 0.0, 0.0, 0.0
    from .asymptotic_pairs import coefficients
    return coefficients(sl)


# ------------------------------------------------------------------ compiled path (numba)
_COMP = []


def _compiled(load=True):
    """The numba-compiled evaluators (:func:`resscale.tabulated_compiled._compiled`), or None
    (the import once: this is called twice per step of the continuum flow)."""
    if not _COMP:
        from .tabulated_compiled import _compiled as comp
        _COMP.append(comp)
    return _COMP[0](load)
