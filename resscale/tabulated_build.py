"""Construction of the tabulated equal-norm pair functions (issue 9; docs/theory.md Sec. 5.1).

Split from :mod:`resscale.tabulated_pairs` (which keeps the mode / cache policy, the build-time
acceptance check and the evaluation, and re-exports the names here). Here: the grid parameters, the
angle variable v = asinh(t / EPS) + 2 BETA t (t = tan(theta/2)) and its inverse, the Lagrange weights
of order ``_ORDER`` on the uniform grids, and :func:`build_tables`, which fills the tables of a
:class:`resscale.tabulated_pairs.TabulatedActivation` from its base activation's quadrature: A / N and
R = (g - G) / (q - k) on the (x = log q, v) grid (R by Gauss-Legendre integration of the interpolated
A along theta), the c < 0 half anchored at G(q, -1) and shifted to continuity at c = 0 (odd phi: R
normalised so that G(q, 0) = 0), and the 1-D columns log g, log N[, G(q, -1)/g, E[phi]/sqrt(g)].
"""
from __future__ import annotations

import math

import numpy as np

# ---------------------------------------------------------------- grid parameters
EPS = 5e-10                  # v = asinh(t/EPS) + 2 BETA t, t = tan(theta/2)
BETA = 1.6                   # (the linear term refines the grid at theta ~ 1, where dv/dtheta ~ 1/sin(theta) alone;
#                              linear in t rather than BETA theta = 2 BETA atan(t): one atan less per evaluation)
_HX = 0.25                   # grid step in log q
_NV_HALF = 200               # grid steps in v from theta = 0 to theta = pi/2
_TH_EXT = 0.45               # the v grid extends to theta = pi/2 + _TH_EXT (overlap of the halves)
_ORDER = 8                   # Lagrange points per axis
_GHOST = _ORDER // 2         # ghost nodes beyond each end


# ------------------------------------------------------------------ angle variable
def _v_of_t(t):
    """v(theta) from t = tan(theta/2) >= 0."""
    return np.arcsinh(t / EPS) + (2.0 * BETA) * t


def _theta_of_v(v):
    """Inverse of v(theta) on theta in [0, pi) (bisection in log-safe form; build time only)."""
    v = np.asarray(v, dtype=float)
    lo, hi = np.zeros_like(v), np.full_like(v, math.pi * 0.999999)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        big = _v_of_t(np.tan(mid / 2.0)) > v
        hi = np.where(big, mid, hi)
        lo = np.where(big, lo, mid)
        if np.all(hi - lo <= 1e-17 + 4e-16 * hi):
            break
    return 0.5 * (lo + hi)


def _dtheta_dv(theta):
    t = np.tan(theta / 2.0)
    return 2.0 / ((1.0 + t * t) * (1.0 / np.sqrt(EPS * EPS + t * t) + 2.0 * BETA))


# ------------------------------------------------------------------ interpolation
_OFFS = np.arange(-(_ORDER // 2) + 1, _ORDER // 2 + 1)          # -3..4 for order 8


def _lagrange_matrix():
    """M with w(u) = M @ [1, u, ..., u^(n-1)]: Lagrange basis at nodes _OFFS."""
    n = _ORDER
    M = np.zeros((n, n))
    for m, xm in enumerate(_OFFS):
        others = [xn for xn in _OFFS if xn != xm]
        poly = np.poly1d([1.0])
        for xn in others:
            poly = poly * np.poly1d([1.0, -float(xn)]) / float(xm - xn)
        M[m] = poly.coeffs[::-1]
    return M


_LM = _lagrange_matrix()
_POW = np.arange(_ORDER)


def _weights(u):
    """(p, ORDER) Lagrange weights at fractional positions u (p,) in [0, 1]."""
    return np.power(u[:, None], _POW) @ _LM.T


def _cell(t, n_cells):
    """Integer cell i (node index of the left node, ghost-shifted) and fraction u for grid coordinate t."""
    i = np.floor(t)
    i = np.clip(i, 0, n_cells - 1)
    return i.astype(np.intp), t - i


# ------------------------------------------------------------------ construction
def build_tables(self, q_lo, q_hi, tol_g):
    """Fill the tables of ``self`` (a TabulatedActivation: ``base``, ``odd``, ``name``) for q in [q_lo, q_hi]
    from ``self.base``'s quadrature (attributes _xs0, _hx, _hv, _x_range, _nxc, _nvc, _tabs, _modes,
    _one_d, _flat, _off, grid_shape, stats); ValueError when the quadrature's values are not finite or
    its G(q, 0) and the integral of A disagree by more than 10 tol_g (relative)."""
    base, st = self.base, object.__setattr__
    x_lo, x_hi = math.log(q_lo), math.log(q_hi)
    nx = int(math.ceil((x_hi - x_lo) / _HX))
    hx = (x_hi - x_lo) / nx
    xs = x_lo + hx * np.arange(-_GHOST, nx + _GHOST + 1)
    v_half = float(_v_of_t(1.0))
    hv = v_half / _NV_HALF
    v_top = float(_v_of_t(math.tan((math.pi / 2 + _TH_EXT) / 2)))
    n_top = int(math.ceil(v_top / hv))
    j = np.arange(0, n_top + _GHOST + 1)
    vs_pos = hv * j
    th = _theta_of_v(vs_pos)
    th[_NV_HALF] = math.pi / 2
    q = np.exp(xs)
    Q = np.broadcast_to(q[None, :], (th.size, q.size))
    halves = (1.0,) if self.odd else (1.0, -1.0)
    with np.errstate(all="ignore"):
        g = np.asarray(base.diag(q)[0], dtype=float)
        raw = {}
        for s in halves:
            cth = np.cos(th)
            G, _, _, A = base.pair(Q, Q, s * Q * cth[:, None])
            raw[s] = (np.asarray(G, dtype=float), np.asarray(A, dtype=float))
    N = raw[1.0][1][0]                       # A(q, c = 1) = E[phi'^2]
    if not (np.all(np.isfinite(g)) and np.all(g > 0) and np.all(np.isfinite(N)) and np.all(N > 0)):
        raise ValueError(f"activation {self.name!r}: E[phi^2] or E[phi'^2] not finite and positive on the table")
    # integrals I(theta) = int_0^theta A sin(t) dt along v (per column), Gauss-Legendre on the interpolant
    gl_x, gl_w = np.polynomial.legendre.leggauss(8)
    uu = 0.5 * (gl_x + 1.0)
    Wg = _weights(uu)                                   # (8 nodes, ORDER)
    tabs, modes, Rs = {}, {}, {}
    for s in halves:
        An = raw[s][1] / N[None, :]
        if not np.all(np.isfinite(An)):
            raise ValueError(f"activation {self.name!r}: E[phi' phi'] not finite on the table")
        Ae = np.concatenate([An[_GHOST:0:-1], An], axis=0)       # even mirror: rows -GHOST..n
        # interval [v_m, v_m+1] for m = 0..n_top-1: stencil rows m-3..m+4 in Ae (offset _GHOST)
        nint = n_top + _GHOST - (_ORDER // 2)
        m = np.arange(nint)
        rows = (m[:, None] + _GHOST + _OFFS[None, :])              # (nint, ORDER)
        vals = Ae[rows]                                            # (nint, ORDER, ncol)
        Aq = np.einsum("gk,ikc->igc", Wg, vals)                    # (nint, 8, ncol) A/N at GL nodes
        vq = hv * (m[:, None] + uu[None, :])                       # (nint, 8)
        thq = _theta_of_v(vq)
        dth = _dtheta_dv(thq)
        J = Aq * (np.sin(thq) * dth * (0.5 * hv) * gl_w[None, :])[..., None]
        I = np.concatenate([np.zeros((1, An.shape[1])), np.cumsum(J.sum(axis=1), axis=0)], axis=0)
        rowsI = I.shape[0]
        one_m_cos = 2.0 * np.sin(th[:rowsI] / 2.0) ** 2
        with np.errstate(all="ignore"):
            Rn = I / one_m_cos[:, None]
        Rn[0] = An[0]
        Rs[s] = (Rn, I)
    # consistency of the two anchors at c = 0 (theta = pi/2 is row _NV_HALF)
    i_half = _NV_HALF
    Iplus = Rs[1.0][1][i_half] * N
    if self.odd:
        fac = g / (q * Iplus)          # enforce G(q, 0) = g - q I = 0
        mismatch = np.abs(fac - 1.0)
        Rs[1.0] = (Rs[1.0][0] * fac[None, :], None)
    else:
        Gm = raw[-1.0][0][0]
        Iminus = Rs[-1.0][1][i_half] * N
        delta = (g - q * Iplus) - (Gm + q * Iminus)
        mismatch = np.abs(delta) / g
        Rs[1.0] = (Rs[1.0][0], None)
        Rs[-1.0] = (Rs[-1.0][0] + (delta / (q * N))[None, :], None)
    inner = slice(_GHOST, xs.size - _GHOST)
    if float(np.max(mismatch[inner])) > 10 * tol_g:
        raise ValueError(f"activation {self.name!r}: the quadrature's G(q, 0) and the integral of A disagree "
                         f"by {float(np.max(mismatch[inner])):.3g} (relative)")
    nrows = min(Rs[s][0].shape[0] for s in halves)
    for s in halves:
        An = (raw[s][1] / N[None, :])[:nrows]
        Rn = Rs[s][0][:nrows]
        fs = []
        for F in (An, Rn):
            lg = bool(np.all(F > 0) and np.all(np.isfinite(F)))
            fs.append((np.log(F) if lg else F, lg))
        modes[s] = (fs[0][1], fs[1][1])
        T = np.stack([fs[0][0], fs[1][0]], axis=-1)        # (nv, nx, 2)
        T = np.concatenate([T[_GHOST:0:-1], T], axis=0)   # even mirror in v
        tabs[s] = np.ascontiguousarray(np.transpose(T, (1, 0, 2)))   # (nx_tot, nv_tot, 2)
    one_d = [np.log(g), np.log(N)]
    if not self.odd:
        mu = np.asarray(base.mean(q)[0], dtype=float)
        one_d += [raw[-1.0][0][0] / g, mu / np.sqrt(g)]
    st(self, "_xs0", float(xs[0]))
    st(self, "_hx", hx)
    st(self, "_hv", hv)
    st(self, "_x_range", (x_lo, x_hi))
    st(self, "_nxc", xs.size - _ORDER + 1)       # number of valid stencil starts in x
    st(self, "_nvc", tabs[1.0].shape[1] - _ORDER + 1)
    st(self, "_tabs", tabs)
    st(self, "_modes", modes)
    st(self, "_one_d", np.ascontiguousarray(np.stack(one_d, axis=-1)))
    nvt = tabs[1.0].shape[1]
    st(self, "_flat", {h: (np.ascontiguousarray(T[..., 0]).ravel(), np.ascontiguousarray(T[..., 1]).ravel(), nvt)
                       for h, T in tabs.items()})
    st(self, "_off", (np.arange(_ORDER)[:, None] * nvt + np.arange(_ORDER)[None, :]).ravel())
    st(self, "grid_shape", (xs.size, tabs[1.0].shape[1], len(halves)))
    st(self, "stats", {"anchor_mismatch": float(np.max(mismatch[inner]))})
