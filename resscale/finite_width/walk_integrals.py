"""Four-point functions of the per-neuron Gaussian walk, Cov(h^k, h^m) = K^min(k,m) (docs/theory.md Sec. 4.6-4.7, Eq. 4.8, 4.30)."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special

from ..gaussian_quadrature import bvn_cdf, gaussian_expectation, inner_bundle, inner_forms, make_inner

# ---------------------------------------------------------------- fast erf inner expectations (Sec. 4.10)
# E[erf(Y1) erf(Y2)] = E1 E2 + 4 [Phi2(-a1, -a2; rho) - Phi(-a1) Phi(-a2)] (Eq. 4.31), with the bivariate
# part as Drezner-Wesolowsky / Genz's integral over theta in [0, asin rho] by Gauss-Legendre, the node count
# by |rho| class (3 / 4 / 6 / 8 / 14 nodes up to |rho| = 0.1 / 0.3 / 0.5 / 0.75 / 0.925: absolute error
# < 2e-11, measured against Owen's T) and Owen's T beyond. rho is one number per row (the conditional
# covariance does not depend on the outer point), so the nodes are per row and the work per point is a few
# exponentials: 3-4x faster than two Owen's T (Sec. 4.10).
_GL_CLASSES = ((0.1, 3), (0.3, 4), (0.5, 6), (0.75, 8), (0.925, 14))


@lru_cache(maxsize=8)
def _gl01(n):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w


def _phi2_excess(a1, a2, rho):
    """4 [Phi2(-a1, -a2; rho) - Phi(-a1) Phi(-a2)] for rows: a1, a2 (R, n), rho (R,)."""
    a1, a2 = np.broadcast_arrays(a1, a2)
    rho = np.asarray(rho, dtype=float).reshape(-1)
    out = np.zeros(a1.shape)
    ar = np.abs(rho)
    done = ar < 1e-300
    for lim, n in _GL_CLASSES:
        sel = np.flatnonzero(~done & (ar < lim))
        done[sel] = True
        if sel.size == 0:
            continue
        t, w = _gl01(n)
        x1, x2 = a1[sel], a2[sel]
        hk = x1 * x2
        hs = 0.5 * (x1 * x1 + x2 * x2)
        asr = np.arcsin(rho[sel])[:, None]
        sn = np.sin(asr * t)                                  # (r, n)
        inv = 1.0 / (1.0 - sn * sn)
        acc = np.zeros(hk.shape)
        tmp = np.empty(hk.shape)
        for j in range(n):
            np.multiply(hk, sn[:, j, None], out=tmp)
            tmp -= hs
            tmp *= inv[:, j, None]
            np.exp(tmp, out=tmp)
            tmp *= w[j]
            acc += tmp
        acc *= (2.0 / math.pi) * asr
        out[sel] = acc
    rest = np.flatnonzero(~done)
    if rest.size:
        x1, x2, r = a1[rest], a2[rest], rho[rest][:, None]
        out[rest] = 4.0 * (bvn_cdf(-x1, -x2, r) - special.ndtr(-x1) * special.ndtr(-x2))
    return out


def erf_pair_fast(m1, m2, v1, v2, c):
    """E[erf(Y1) erf(Y2)], Y ~ N((m1, m2), [[v1, c], [c, v2]]); m (R, n), v1, v2, c (R,) or (R, 1).
    Same value as :func:`resscale.gaussian_quadrature._erf_pair` (to ~1e-15)."""
    v1, v2, c = (np.asarray(x, dtype=float).reshape(-1, 1) for x in (v1, v2, c))
    s1, s2 = np.sqrt(2.0 * v1 + 1.0), np.sqrt(2.0 * v2 + 1.0)
    mu1, mu2 = m1 / s1, m2 / s2
    rho = (2.0 * c / (s1 * s2))[:, 0]
    return special.erf(mu1) * special.erf(mu2) + _phi2_excess(math.sqrt(2.0) * mu1, math.sqrt(2.0) * mu2, rho)


def _erf_bundle_fast(m, S, want):
    """:func:`resscale.gaussian_quadrature.inner_bundle` for erf with the fast bivariate part (pp, sq0, sq1);
    the mean-derivative keys (closed forms without Owen's T) from the original bundle."""
    from ..gaussian_quadrature import _erf_bundle
    want = set(want)
    out = {}
    m1, m2 = m[..., 0], m[..., 1]
    v1, v2, c = S[:, 0, 0], S[:, 1, 1], S[:, 0, 1]
    if "pp" in want:
        out["pp"] = erf_pair_fast(m1, m2, v1, v2, c)
    if "sq0" in want:
        out["sq0"] = erf_pair_fast(m1, m1, v1, v1, v1)
    if "sq1" in want:
        out["sq1"] = erf_pair_fast(m2, m2, v2, v2, v2)
    rest = want - {"pp", "sq0", "sq1"}
    if rest:
        out.update(_erf_bundle(m1, m2, v1[:, None], v2[:, None], c[:, None], rest))
    return out


def _gh_bundle(phi, m, S, want, n_gh=32, block=2_000_000):
    """Quadrature activations (tanh, gelu, callables): all pair keys of :func:`inner_bundle`
    (pp, d11, d20, d02) from ONE Gauss-Hermite pass (order n_gh^2 on the conditional law, as
    ``make_inner``), the mean-derivatives as E[phi' phi'], E[phi'' phi], E[phi phi''] with the
    activation's own derivatives on the same nodes, instead of one pass per key plus central
    differences (3-4 passes each): ~10x fewer activation evaluations."""
    from ..gaussian_quadrature import _gh
    x, w = _gh(n_gh)
    b, n = m.shape[0], m.shape[1]
    v1, v2, c = S[:, 0, 0], S[:, 1, 1], S[:, 0, 1]
    s1 = np.sqrt(np.maximum(v1, 0.0))
    r = c / np.maximum(s1, 1e-300)
    t = np.sqrt(np.maximum(v2 - r * r, 0.0))
    keys = [k for k in ("pp", "d11", "d20", "d02") if k in want]
    out = {k: np.empty((b, n)) for k in keys}
    ww = np.outer(w, w)
    rows = max(1, block // (n * n_gh * n_gh))
    for i0 in range(0, b, rows):
        sl = slice(i0, i0 + rows)
        y1 = m[sl, :, 0, None] + s1[sl, None, None] * x                                  # (r, n, g)
        y2 = (m[sl, :, 1, None, None] + r[sl, None, None, None] * x[:, None]
              + t[sl, None, None, None] * x[None, :])                                     # (r, n, g, g)
        f2 = phi.fn(y2)
        if "pp" in out or "d20" in out:
            g1 = phi.fn(y1)
        if "pp" in out:
            out["pp"][sl] = np.einsum("rni,rnij,ij->rn", g1, f2, ww)
        if "d11" in out:
            out["d11"][sl] = np.einsum("rni,rnij,ij->rn", phi.d1(y1), phi.d1(y2), ww)
        if "d20" in out:
            out["d20"][sl] = np.einsum("rni,rnij,ij->rn", phi.d2(y1), f2, ww)
        if "d02" in out:
            out["d02"][sl] = np.einsum("rni,rnij,ij->rn", phi.fn(y1), phi.d2(y2), ww)
    rest = [k for k in want if k not in out]
    if rest:
        out.update(inner_bundle(phi, m, S, want=tuple(rest)))
    return out


def _bundle(phi, m, S, want):
    """Inner expectations of the walk tables: erf closed forms; relu / linear closed forms; quadrature
    activations from the tabulated smoothed activation (:mod:`.smoothed`, docs/theory.md Sec. 4.10)
    when available (numba, table accepted, RESSCALE_FW_INNER != "quadrature"), else one
    Gauss-Hermite pass (:func:`_gh_bundle`)."""
    name = getattr(phi, "name", "")
    if name == "erf":
        return _erf_bundle_fast(m, S, want)
    if name in ("relu", "linear") or not (hasattr(phi, "d1") and hasattr(phi, "d2")):
        return inner_bundle(phi, m, S, want=want)
    from .smoothed import smoothed_bundle
    out = smoothed_bundle(phi, m, S, want)        # tabulated smoothed activation (Sec. 4.10)
    if out is not None:
        return out
    return _gh_bundle(phi, m, S, want)


class _PairIntegrals:
    """Four-point functions E[F(h^k) H(h^m)] of the mean-field Gaussian walk.

    Ks: (L+1, P, P) mean-field kernels; walk=True: Cov(h^k, h^m) = K^min(k,m)
    (full block, Eq. 4.8); walk=False: independent layers (feedforward).
    """

    def __init__(self, phi, Ks, walk=True, n_r=12, n_t=8, fused=True):
        self.phi, self.Ks, self.walk = phi, Ks, walk
        self.n_r, self.n_t = n_r, n_t
        self.P = Ks.shape[1]
        self.near_threshold = 0.0
        self.fused = fused          # P = 2 walk: shared-grid tables (_walk_tables_p2)
        self.split_c, self.n_in = 3.0, n_r   # composite radial rule (Sec. 4.7)
        self.need_deriv = True
        self._tabs = None

    def _phi_pow(self, p):
        fn = self.phi.fn
        if p == 0:
            return lambda u: np.ones_like(u)
        if p == 1:
            return fn
        return lambda u: fn(u) ** p

    def _sigma(self, lays, idxs):
        """Covariance (B, r, r) of variables (layer array, index)."""
        r = len(lays)
        B = lays[0].shape[0]
        S = np.empty((B, r, r))
        for i in range(r):
            for j in range(r):
                if self.walk:
                    lay = np.minimum(lays[i], lays[j])
                    S[:, i, j] = self.Ks[lay, idxs[i], idxs[j]]
                else:
                    same = lays[i] == lays[j]
                    S[:, i, j] = np.where(same, self.Ks[lays[i], idxs[i], idxs[j]], 0.0)
        return S

    # ---- fused tables for P = 2 (walk): one shared outer grid per layer pair (Sec. 4.7)
    def _walk_tables_p2(self, chunk=250_000):
        """All cross-layer tables E[f_ab(h^k) g(h^m)], k < m <= L, for P = 2 in one pass.

        Given x = h^k the later variable is y = x + z with z ~ N(0, K^m - K^k) independent
        of x (Eq. 4.8). Inner functions of both y's (phi phi, phi' phi', phi'' phi) share one
        polar outer grid in x per layer k and one fused inner call per pair
        (:func:`inner_bundle`); functions of a single y_c (phi^2, (phi^2)'') are integrated
        with y_c outside (1-D) and x | y_c inside (Sec. 4.7). Radial rules are composite
        (Legendre near the origin, Laguerre tail) so the O(1) feature scale of erf is
        resolved at any kernel size. Returns a dict key -> (L+1, L+1) array, upper
        triangle filled; keys as in :meth:`cross`.
        """
        from ..gaussian_quadrature import _chol2, _outer_points_1d_split, _outer_points_2d_split
        Ks, L = self.Ks, self.Ks.shape[0] - 1
        phi = self.phi
        nan = np.full((L + 1, L + 1), np.nan)
        tabs = {}

        def put(key, k_, m_, v):
            tabs.setdefault(key, nan.copy())[k_, m_] = v

        def r_split(lam):
            return self.split_c / np.sqrt(np.maximum(lam, 1.0))

        # ---- 2-D outer x = h^k: inner (phi(y0) phi(y1)) and its mean-derivatives; y y^T at m = L
        A = _chol2(Ks[:L])
        lam = np.linalg.eigvalsh(Ks[:L])[:, -1]
        u, w = _outer_points_2d_split(A, A.copy(), self.n_r, self.n_t, r_split(lam), self.n_in)
        fx = phi.fn(u)
        outer = {(0, 0): fx[..., 0] ** 2 * w, (0, 1): fx[..., 0] * fx[..., 1] * w,
                 (1, 1): fx[..., 1] ** 2 * w}
        pp_keys = {"pp": ((0, 1), (0, 0)), "d11": ((0, 1), (1, 1)), "d20": ((0, 1), (2, 0)),
                   "d02": ((0, 1), (0, 2))}
        if not self.need_deriv:
            pp_keys = {"pp": pp_keys["pp"]}
        kk, mm = np.triu_indices(L + 1, 1)
        step = max(1, chunk // u.shape[1])
        for s0 in range(0, kk.size, step):
            k_, m_ = kk[s0:s0 + step], mm[s0:s0 + step]
            S = Ks[m_] - Ks[k_]
            S = 0.5 * (S + np.swapaxes(S, 1, 2))
            uk = u[k_]
            last = m_ == L
            sel = ~last
            vals = _bundle(phi, uk[sel], S[sel], tuple(pp_keys)) if np.any(sel) else {}
            if np.any(last):
                x0, x1 = uk[last][..., 0], uk[last][..., 1]
                Sl = S[last]
                lin = {(0, 0): x0 * x0 + Sl[:, None, 0, 0], (0, 1): x0 * x1 + Sl[:, None, 0, 1],
                       (1, 1): x1 * x1 + Sl[:, None, 1, 1]}
            for ab, ow in outer.items():
                owk = ow[k_]
                for key, (cd, d) in pp_keys.items():
                    if key in vals:
                        put((ab, cd, "phi", d), k_[sel], m_[sel], np.einsum("bm,bm->b", owk[sel], vals[key]))
                if np.any(last):
                    for cd, v in lin.items():
                        put((ab, cd, "lin", (0, 0)), k_[last], m_[last],
                            np.einsum("bm,bm->b", owk[last], v))
        # ---- 1-D outer y_c = h^m_c (m < L): g(y_c) in {phi^2, (phi^2)''}, inner E[f_ab(x) | y_c]
        if L > 1:
            kk, mm = np.triu_indices(L, 1)
            for c in (0, 1):
                var = Ks[mm, c, c]
                y, wy = _outer_points_1d_split(var, self.n_r, r_split(var))      # (B, n)
                f, f1, f2 = phi.fn(y), phi.d1(y), phi.d2(y)
                g = {(0, 0): f * f * wy}
                if self.need_deriv:
                    g[(2, 0)] = (2.0 * f1 * f1 + 2.0 * f * f2) * wy
                Kk = Ks[kk]
                kc = Kk[:, :, c]                                                     # Cov(x, y_c)
                beta = kc / var[:, None]
                Sx = Kk - np.einsum("bi,bj->bij", kc, beta)
                Sx = 0.5 * (Sx + np.swapaxes(Sx, 1, 2))
                vals = _bundle(phi, y[..., None] * beta[:, None, :], Sx, ("pp", "sq0", "sq1"))
                for key, ab in (("sq0", (0, 0)), ("pp", (0, 1)), ("sq1", (1, 1))):
                    for d, gw in g.items():
                        put((ab, (c, c), "phi", d), kk, mm, np.einsum("bm,bm->b", gw, vals[key]))
        return tabs

    def cross(self, kk, mm, ab, cd, inner_kind="phi", d=(0, 0)):
        """Adaptive wrapper: pairs whose increment K^m - K^k is small compared with K^m
        (sharp conditional laws) get twice the quadrature order (Sec. 4.6)."""
        kk, mm = np.asarray(kk), np.asarray(mm)
        if self.walk and self.P == 2 and self.near_threshold <= 0.0 and self.fused:
            if self._tabs is None:
                self._tabs = self._walk_tables_p2()
            dn = (d[0] + d[1], 0) if cd[0] == cd[1] else tuple(d)
            key = (tuple(sorted(ab)), tuple(cd), inner_kind, dn)
            if key in self._tabs:
                return self._tabs[key][kk, mm]
        dg = np.diagonal(self.Ks, axis1=1, axis2=2)
        rel = np.min((dg[mm] - dg[kk]) / np.maximum(dg[mm], 1e-300), axis=1)
        near = rel < self.near_threshold
        out = np.empty(kk.shape)
        for sel, fac in ((near, 2), (~near, 1)):
            if np.any(sel):
                nr, nt = self.n_r, self.n_t
                self.n_r, self.n_t = nr * fac, nt * fac
                try:
                    out[sel] = self._cross(kk[sel], mm[sel], ab, cd, inner_kind, d)
                finally:
                    self.n_r, self.n_t = nr, nt
        return out

    def _cross(self, kk, mm, ab, cd, inner_kind="phi", d=(0, 0)):
        """E[phi(x_a) phi(x_b) * D^d g(y_c, y_d)] for layer arrays kk < mm (B,).

        inner_kind "phi": g = phi(y_c) phi(y_d) (derivatives d w.r.t. y_c, y_d
        through the conditional mean); "lin": g = y_c y_d.
        """
        a, b = ab
        c, dd = cd
        if a == b:
            outer = [(kk, a, 2)]
        else:
            outer = [(kk, a, 1), (kk, b, 1)]
        if c == dd:
            inner = [(mm, c)]
            kind = "sq" if inner_kind == "phi" else "linsq"
            dd_ = (d[0] + d[1],)
            dorder = (dd_[0], 0)
        else:
            inner = [(mm, c), (mm, dd)]
            kind = "pp" if inner_kind == "phi" else "linlin"
            dorder = d
        if d == (0, 0) and len(outer) == 2 and len(inner) == 1:
            # 1-D outer integral is much cheaper: integrate the later-layer variable
            # outside and the earlier pair inside (the roles are symmetric, Eq. 4.30)
            lays = [inner[0][0], kk, kk]
            idxs = [inner[0][1], a, b]
            S = self._sigma(lays, idxs)
            if inner_kind == "phi":
                ofn = lambda u: self.phi.fn(u[..., 0]) ** 2  # noqa: E731
            else:
                ofn = lambda u: u[..., 0] ** 2  # noqa: E731
            return gaussian_expectation(S, 1, ofn, make_inner(self.phi, "pp"), self.n_r, self.n_t)
        lays = [o[0] for o in outer] + [i[0] for i in inner]
        idxs = [o[1] for o in outer] + [i[1] for i in inner]
        S = self._sigma(lays, idxs)
        pw = [self._phi_pow(o[2]) for o in outer]
        if len(outer) == 1:
            ofn = lambda u: pw[0](u[..., 0])  # noqa: E731
        else:
            ofn = lambda u: pw[0](u[..., 0]) * pw[1](u[..., 1])  # noqa: E731
        inner_fn = make_inner(self.phi, kind, d=dorder)
        return gaussian_expectation(S, len(outer), ofn, inner_fn, self.n_r, self.n_t)

    def same(self, kk, idx4):
        """E[prod_{i in idx4} phi(x_i)] at the layers kk (B,) (same-layer four-point function).

        Only L evaluations: uses 3x the radial and 2x the angular order (this table limited
        the accuracy of V for erf at large kernel values)."""
        counts = {}
        for i in idx4:
            counts[i] = counts.get(i, 0) + 1
        items = sorted(counts.items(), key=lambda t: -t[1])
        if len(items) <= 2:
            outer, inner = items, []
        else:
            outer, inner = items[:2], items[2:]
        lays = [kk] * (len(outer) + len(inner))
        idxs = [o[0] for o in outer] + [i[0] for i in inner]
        S = self._sigma(lays, idxs)
        pw = [self._phi_pow(o[1]) for o in outer]
        if len(outer) == 1:
            ofn = lambda u: pw[0](u[..., 0])  # noqa: E731
        else:
            ofn = lambda u: pw[0](u[..., 0]) * pw[1](u[..., 1])  # noqa: E731
        if not inner:
            if len(outer) == 1 and self.phi.kinks and self.phi.homogeneous:
                return _homogeneous_moment(self.phi, outer[0][1], S[:, 0, 0])
            return gaussian_expectation(S, len(outer), ofn, None, 3 * self.n_r, 2 * self.n_t)
        kind = "sq" if (len(inner) == 1 and inner[0][1] == 2) else ("p" if len(inner) == 1 else "pp")
        return gaussian_expectation(S, len(outer), ofn, make_inner(self.phi, kind), 3 * self.n_r, 2 * self.n_t)


_HOMOGENEOUS_MOMENTS = {}


def _homogeneous_moment(phi, power, q):
    """E[phi(u)^power], u ~ N(0, q), for a positively 1-homogeneous phi with kinks (relu):
    q^{power/2} E[phi(x)^power] with the constant integrated once on each side of the kink
    (scipy quad). Gauss-Hermite rules lose ~1e-3 relative on the kink (E relu(u) was 1.4e-3 off)."""
    key = (phi.name, id(phi.fn), int(power))
    c = _HOMOGENEOUS_MOMENTS.get(key)
    if c is None:
        from scipy.integrate import quad

        f = lambda x: float(phi.fn(np.array([x]))[0]) ** power * math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
        c = quad(f, -np.inf, 0.0, epsabs=1e-14, epsrel=1e-12)[0] + quad(f, 0.0, np.inf, epsabs=1e-14, epsrel=1e-12)[0]
        _HOMOGENEOUS_MOMENTS[key] = c
    return c * np.maximum(q, 0.0) ** (0.5 * power)


# ---------------------------------------------------------------- fused tables for any P (Sec. 4.10)
def _inner_cols(phi, M, S, rc, sc, lin=False):
    """Inner conditional expectations for the column pairs (rc, sc) (ncol,) given the conditional
    means M (b, n_o, P) and covariance S (b, P, P): E[g(y_r) g(y_s)] (b, ncol, n_o), g = phi
    (or the identity, ``lin``). Diagonal columns r = s give E[g(y_r)^2]."""
    b, n_o, _ = M.shape
    MT = np.swapaxes(M, 1, 2)                                             # (b, P, n_o)
    v1, v2, c = S[:, rc, rc], S[:, sc, sc], S[:, rc, sc]                    # (b, ncol)
    if lin:
        return MT[:, rc] * MT[:, sc] + c[..., None]
    name = getattr(phi, "name", "")
    if name == "erf":
        t = np.sqrt(1.0 + 2.0 * np.maximum(np.diagonal(S, axis1=1, axis2=2), 0.0))      # (b, P)
        mu = MT / t[:, :, None]
        E = special.erf(mu)
        rho = 2.0 * c / (t[:, rc] * t[:, sc])
        a1 = math.sqrt(2.0) * mu[:, rc].reshape(-1, n_o)
        a2 = math.sqrt(2.0) * mu[:, sc].reshape(-1, n_o)
        ex = _phi2_excess(a1, a2, rho.reshape(-1)).reshape(b, len(rc), n_o)
        return E[:, rc] * E[:, sc] + ex
    diag = rc == sc
    out = np.empty((b, len(rc), n_o))
    if name not in ("relu", "linear"):
        tab = _smoothed_cols(phi, MT, S, rc, sc, diag, out)      # tabulated smoothed activation (Sec. 4.10)
        if tab is not None:
            return tab
    _, sq, pair = inner_forms(phi)
    if name in ("relu", "linear"):
        if np.any(~diag):
            j = np.flatnonzero(~diag)
            out[:, j] = pair(MT[:, rc[j]], MT[:, sc[j]], v1[:, j, None], v2[:, j, None], c[:, j, None])
        if np.any(diag):
            j = np.flatnonzero(diag)
            out[:, j] = sq(MT[:, rc[j]], v1[:, j, None])
        return out
    for j in range(len(rc)):                   # quadrature activations: Gauss-Hermite inner, one column at a time
        if diag[j]:
            out[:, j] = sq(MT[:, rc[j]], v1[:, j, None])
        else:
            out[:, j] = pair(MT[:, rc[j]], MT[:, sc[j]], v1[:, j, None], v2[:, j, None], c[:, j, None])
    return out


def _smoothed_cols(phi, MT, S, rc, sc, diag, out):
    """:func:`_inner_cols` for quadrature activations from :func:`.smoothed.smoothed_bundle` (all columns
    of a kind in one call); None when the table path is not available."""
    from .smoothed import eligible, smoothed_bundle
    if not eligible(phi):
        return None
    b, _, n_o = MT.shape
    for sel, key in ((np.flatnonzero(~diag), "pp"), (np.flatnonzero(diag), "sq0")):
        if sel.size == 0:
            continue
        r_, s_ = rc[sel], sc[sel]
        m = np.stack([MT[:, r_], MT[:, s_]], axis=-1).reshape(b * sel.size, n_o, 2)
        Sc = np.empty((b, sel.size, 2, 2))
        Sc[..., 0, 0] = S[:, r_, r_]
        Sc[..., 1, 1] = S[:, s_, s_]
        Sc[..., 0, 1] = Sc[..., 1, 0] = S[:, r_, s_]
        vals = smoothed_bundle(phi, m, Sc.reshape(-1, 2, 2), (key,))
        if vals is None:
            return None
        out[:, sel] = vals[key].reshape(b, sel.size, n_o)
    return out


def _pair_grid(phi, Kk, p, q, n_r, n_t, split_c, slots):
    """Shared outer grid of (x_p, x_q) ~ N(0, K^k) per layer (composite radial rule, arcs split at the
    axes, as the P = 2 tables); outer weights f_x(u) w for the rows x in slots (0: pq, 1: pp, 2: qq);
    regression of every x_r on (x_p, x_q) and the conditional covariance. Kk (n, P, P)."""
    from ..gaussian_quadrature import _chol2, _outer_points_2d_split
    K2 = Kk[:, [p, q]][:, :, [p, q]]
    A = _chol2(K2)
    lam = np.linalg.eigvalsh(K2)[:, -1]
    u, w = _outer_points_2d_split(A, A.copy(), n_r, n_t, split_c / np.sqrt(np.maximum(lam, 1.0)), n_r)
    fx = phi.fn(u)
    W3 = np.stack([fx[..., 0] * fx[..., 1] * w, fx[..., 0] ** 2 * w, fx[..., 1] ** 2 * w], axis=-1)[..., slots]
    Kx = Kk[:, :, [p, q]]                                              # (n, P, 2)
    Breg = np.einsum("bri,bij->brj", Kx, np.linalg.pinv(K2, hermitian=True))
    Breg[:, p] = [1.0, 0.0]
    Breg[:, q] = [0.0, 1.0]
    Kc = Kk - np.einsum("brj,bsj->brs", Breg, Kx)
    Kc[:, [p, q], :] = 0.0
    Kc[:, :, [p, q]] = 0.0
    Kc = 0.5 * (Kc + np.swapaxes(Kc, 1, 2))
    return np.einsum("bui,bri->bur", u, Breg), W3, Kc


def walk_tables_general(phi, Ks, n_r=12, n_t=8, split_c=3.0, same=True, chunk=1_000_000):
    """Raw four-point tables of the walk for any P on shared grids (docs/theory.md Sec. 4.10).

    Ks (n+1, P, P): kernels of increasing layers, the last one the output. For every outer pair
    p < q the earlier variables (x_p, x_q) = (h^k_p, h^k_q) get ONE polar grid per layer k (split at
    the axes, composite radial rule as in the P = 2 tables); every later variable y_r = h^m_r is,
    given (x_p, x_q), Gaussian with mean B_r (x_p, x_q) (regression on K^k) and covariance
    K^k_{rs|pq} + K^m_rs - K^k_rs (Eq. 4.8), so every inner column pair rs shares that grid and the
    inner expectations are closed forms (erf: :func:`erf_pair_fast`). Rows x in {pq, pp, qq} come
    from the grid pq (diagonal rows from the first grid holding them): P(P-1)/2 grids, each inner
    evaluation serves three rows.

    Returns, over symmetric-pair coordinates x, y (:func:`resscale.finite_width.linalg.sym_pairs_index`):
      cross (n(n-1)/2, Q, Q) E[f_x(h^k) f_y(h^m)] for k < m < last, np.triu_indices(n, 1) order
      lin   (n, Q, Q)        E[f_x(h^k) h^L_c h^L_d]
      same  (n, Q, Q)        E[f_x(h^k) f_y(h^k)] (same layer: twice the angular order, each
                             distinct index multiset {x, y} evaluated once)
    """
    from .linalg import sym_pairs_index
    n = Ks.shape[0] - 1
    P = Ks.shape[1]
    sp, idx, _, _ = sym_pairs_index(P)
    Q = len(sp)
    rc = np.array([a for a, b in sp])
    sc = np.array([b for a, b in sp])
    kk, mm = np.triu_indices(n, 1)
    cross = np.full((kk.size, Q, Q), np.nan)
    lin = np.full((n, Q, Q), np.nan)
    same_t = np.full((n, Q, Q), np.nan)
    done_diag = np.zeros(P, dtype=bool)
    gen = getattr(phi, "name", "") not in ("erf", "relu", "linear")
    if gen:
        from .smoothed import available
        gen = not available(phi)                 # the tabulated inner path needs no small chunks
    Kk = Ks[:n]
    ka = np.arange(n)
    ms_done = {}
    for p in range(P):
        for q in range(p + 1, P):
            rows, slots = [idx[p, q]], [0]
            for r_, sl in ((p, 1), (q, 2)):
                if not done_diag[r_]:
                    done_diag[r_] = True
                    rows.append(idx[r_, r_])
                    slots.append(sl)
            M_all, W3, Kc = _pair_grid(phi, Kk, p, q, n_r, n_t, split_c, slots)
            n_o = M_all.shape[1]
            step = max(1, chunk // (n_o * Q * (256 if gen else 1)))

            def run(k_, S, lin_=False, cols=slice(None), M=M_all, W=W3):
                vals = _inner_cols(phi, M[k_], S, rc[cols], sc[cols], lin=lin_)      # (b, ncol, n_o)
                return np.einsum("bux,byu->bxy", W[k_], vals)

            for s0 in range(0, kk.size, step):
                k_, m_ = kk[s0:s0 + step], mm[s0:s0 + step]
                S = Kc[k_] + Ks[m_] - Ks[k_]
                cross[s0:s0 + step, rows] = run(k_, 0.5 * (S + np.swapaxes(S, 1, 2)))
            for s0 in range(0, n, step):
                k_ = ka[s0:s0 + step]
                S = Kc[k_] + Ks[n][None] - Ks[k_]
                lin[k_[:, None], rows] = run(k_, 0.5 * (S + np.swapaxes(S, 1, 2)), True)
            if not same:
                continue
            # same layer: only the index multisets not met before, on a finer angular grid
            need = {}
            for x in rows:
                for y in range(Q):
                    key = tuple(sorted(sp[x] + sp[y]))
                    if key not in ms_done and key not in need:
                        need[key] = (x, y)
            if not need:
                continue
            cols = np.array(sorted({y for _, y in need.values()}))
            Ms, Ws, _ = _pair_grid(phi, Kk, p, q, n_r, 2 * n_t, split_c, slots)
            vals = np.concatenate([run(ka[s0:s0 + step], Kc[s0:s0 + step], cols=cols, M=Ms, W=Ws)
                                   for s0 in range(0, n, step)])                 # (n, rows, ncols)
            for key, (x, y) in need.items():
                ms_done[key] = vals[:, rows.index(x), int(np.searchsorted(cols, y))]
    if same:
        for x in range(Q):
            for y in range(Q):
                same_t[:, x, y] = ms_done[tuple(sorted(sp[x] + sp[y]))]
    return cross, lin, same_t
