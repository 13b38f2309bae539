"""Four-point functions of the per-neuron Gaussian walk, Cov(h^k, h^m) = K^min(k,m) (docs/theory.md Sec. 4.6-4.7, Eq. 4.8, 4.30)."""
from __future__ import annotations

import numpy as np

from ..gaussian_quadrature import gaussian_expectation, make_inner


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
        from ..gaussian_quadrature import (_chol2, _outer_points_1d_split, _outer_points_2d_split,
                                          inner_bundle)
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
            vals = inner_bundle(phi, uk[sel], S[sel], want=tuple(pp_keys)) if np.any(sel) else {}
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
                vals = inner_bundle(phi, y[..., None] * beta[:, None, :], Sx, want=("pp", "sq0", "sq1"))
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
            return gaussian_expectation(S, len(outer), ofn, None, 3 * self.n_r, 2 * self.n_t)
        kind = "sq" if (len(inner) == 1 and inner[0][1] == 2) else ("p" if len(inner) == 1 else "pp")
        return gaussian_expectation(S, len(outer), ofn, make_inner(self.phi, kind), 3 * self.n_r, 2 * self.n_t)
