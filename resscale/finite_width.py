"""Systematic 1/N finite-width theory of the kernel (docs/theory.md Sec. 4, Eq. 4.1-4.32).

For a network of width N the empirical kernel Khat^L_ab = (1/N) sum_i h^L_ia h^L_ib obeys

    E[Khat^L]                  = K^L + M^L / N + O(1/N^2)        (Eq. 4.1)
    N Cov(Khat^L_ab, Khat^L_cd) = V^L_abcd + O(1/N)               (Eq. 4.2)

Derivation (docs/theory.md Sec. 4): conditionally on layer l-1 the N neurons
receive i.i.d. Gaussian increments whose covariance is an *empirical average*
over the neurons (full block: C^l = sigma_w2 Ghat^{l-1} + sigma_b2; reduced:
Cz^l = sigma_w2 Khat^{l-1} + sigma_b2). So Khat^L = T(P_N) is a smooth
functional of the empirical measure P_N of N i.i.d. "seeds"
omega_i = (h^0_i, e^1_i, ..., e^L_i), and the von Mises expansion gives

    V = Var_omega[ IF(omega) ],        M = 1/2 E_omega[ T2(omega, omega) ]  (Eq. 4.5-4.6)

with IF the first and T2 the second Gateaux derivative of T in the direction
delta_omega - P. IF is the single-neuron additive functional (Eq. 4.9)

    IF = h^L h^L^T + sum_{m<L} A_m [ f(h^m) ]  - E[...],   f = phi phi^T (full block)

along the mean-field random walk (Cov(h^k, h^m) = K^min(k,m)): the cross-layer
terms k != m that an independent-noise closure drops are what makes V right.
M collects (i) the curvature of the kernel map contracted with the covariance
of the first-order driver fluctuation and (ii) the *self-interaction* of a
neuron with its own past through the driver (Eq. 4.14-4.18 full block,
Eq. 4.20-4.27 reduced block).

Gaussian four-point functions: :mod:`resscale.gaussian_quadrature`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .gaussian_quadrature import gaussian_expectation, make_inner
from .inputs import check_scalar, input_kernel
from .kernel_recursion import mean_field_kernel, pair_matrix

__all__ = ["finite_width", "FiniteWidthResult", "sensitivity_finite_width", "sensitivity_correction",
           "optimal_alpha_finite_width"]


# ============================================================ small linear algebra on P x P
def _sym_pairs(P):
    return [(a, b) for a in range(P) for b in range(a, P)]


def _jac_G(phi, K):
    """G(K) and its Jacobian J (P^2, P^2) acting on flattened symmetric dK (Eq. 4.3).

    Convention: dG.ravel() = J @ dK.ravel() for symmetric dK.
    """
    P = K.shape[0]
    G, A, Ba, Bb = pair_matrix(phi, K, grad=True)
    J = np.zeros((P, P, P, P))
    for a in range(P):
        for b in range(P):
            if a == b:
                J[a, a, a, a] = A[a, a]
            else:
                J[a, b, a, b] += 0.5 * A[a, b]
                J[a, b, b, a] += 0.5 * A[a, b]
                J[a, b, a, a] += Ba[a, b]
                J[a, b, b, b] += Bb[a, b]
    return G, J.reshape(P * P, P * P)


def _hess_G(phi, K, rel=1e-4):
    """Second derivative H (P^2, P^2, P^2) of G at K by central differences of the
    closed-form gradient (step 1e-4 of the kernel scale; Eq. 4.16)."""
    P = K.shape[0]
    h = rel * max(float(np.max(np.abs(np.diag(K)))), 1e-3)
    H = np.zeros((P * P, P * P, P * P))
    for c in range(P):
        for d in range(P):
            E = np.zeros((P, P))
            E[c, d] += 0.5
            E[d, c] += 0.5
            Jp = _jac_G(phi, K + h * E)[1]
            Jm = _jac_G(phi, K - h * E)[1]
            H[:, :, c * P + d] = (Jp - Jm) / (2 * h)
    return 0.5 * (H + np.swapaxes(H, 1, 2))


def _outer_hh(K):
    """Cov(x x^T) for x ~ N(0, K) as (P^2, P^2): K_ac K_bd + K_ad K_bc."""
    P = K.shape[0]
    return (np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K)).reshape(P * P, P * P)


# ============================================================ Gaussian pair tables (full / feedforward)
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
        from .gaussian_quadrature import (_chol2, _outer_points_1d_split, _outer_points_2d_split,
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


# ============================================================ result container
@dataclass
class FiniteWidthResult:
    """Output of :func:`finite_width` (docs/theory.md Sec. 4).

    Attributes
    ----------
    kernel : (P, P)        mean-field K^L
    mean_shift : (P, P)    M^L, E[Khat^L] = K^L + M^L/N + O(1/N^2)        (Eq. 4.1)
    covariance : (P,P,P,P) V^L, N Cov(Khat_ab, Khat_cd) = V_abcd + O(1/N)  (Eq. 4.2)
    covariance_independent : (P,P,P,P) the independent-noise (FFNet-style) closure
        of V for comparison (drops all cross-layer terms, Eq. 4.11)
    width : int or None
    """

    net: object
    K0: np.ndarray
    kernel: np.ndarray
    mean_shift: np.ndarray
    covariance: np.ndarray
    covariance_independent: np.ndarray
    width: int | None = None
    extras: dict = field(default_factory=dict, repr=False)

    @property
    def expected_kernel(self):
        """K^L + M^L / N (needs ``width``)."""
        if self.width is None:
            raise ValueError("width is required for expected_kernel")
        return self.kernel + self.mean_shift / self.width

    @property
    def kernel_covariance(self):
        """Cov(Khat_ab, Khat_cd) = V / N to leading order (needs ``width``)."""
        if self.width is None:
            raise ValueError("width is required for kernel_covariance")
        return self.covariance / self.width

    @property
    def response(self):
        """Finite-width response d E[Khat^L]_ab / dK^0_cd = chi + dM/dK0 / N (P,P,P,P), Eq. 4.28."""
        if "response" not in self.extras:
            self.extras["response"] = finite_width_response(self.net, self.width, K0=self.K0)
        return self.extras["response"]

    def to_dict(self):
        return dict(kernel=self.kernel.tolist(), mean_shift=self.mean_shift.tolist(),
                    covariance=self.covariance.tolist(), width=self.width,
                    covariance_independent=self.covariance_independent.tolist(),
                    net=self.net.to_dict())


# ============================================================ full block and feedforward
def _full_or_ff(net, K0, compute_mean=True, n_r=12, n_t=8):
    """V, V_indep and M for the full block (walk) or the feedforward baseline."""
    phi = net.phi
    L, P = net.depth, K0.shape[0]
    P2 = P * P
    walk = net.block == "full"
    Ks = mean_field_kernel(net, K0=K0, all_layers=True)
    a2, sw2 = net.alpha ** 2, net.sigma_w2
    s = a2 * sw2 if walk else sw2
    Gs, Js = [], []
    for k in range(L + 1):
        G, J = _jac_G(phi, Ks[k])
        Gs.append(G)
        Js.append(J)
    Gs = np.array(Gs)
    eye = np.eye(P2)
    # one-step tangent T^j: full  I + s Psi'^j ; feedforward  sigma_w2 Psi'^j   (Eq. 4.10)
    T = [eye + s * J if walk else s * J for J in Js]
    # A_m = s * T^{L-1} ... T^{m+1}   (propagator of a driver fluctuation at layer m to K^L)
    A = np.zeros((L, P2, P2))
    A[L - 1] = s * eye
    for m in range(L - 1, 0, -1):
        A[m - 1] = A[m] @ T[m]
    pi = _PairIntegrals(phi, Ks, walk=walk, n_r=n_r, n_t=n_t)
    pi.need_deriv = compute_mean          # V alone needs no mean-derivative tables
    sp = _sym_pairs(P)

    def full_idx(a, b):
        return [(a, b)] if a == b else [(a, b), (b, a)]

    # --- same-layer covariances Cov(f(h^k), f(h^k)), k = 0..L-1
    kk = np.arange(L)
    Cdiag = np.zeros((L, P2, P2))
    for (a, b), (c, d) in itertools.product(sp, sp):
        if (c, d) < (a, b):
            continue
        val = pi.same(kk, (a, b, c, d)) - Gs[:L, a, b] * Gs[:L, c, d]
        for i, j in full_idx(a, b):
            for k2, l2 in full_idx(c, d):
                Cdiag[:, i * P + j, k2 * P + l2] = val
                Cdiag[:, k2 * P + l2, i * P + j] = val
    # --- cross-layer covariances Cov(f(h^k), f(h^m)), k < m < L  (walk only)
    Ccross = None
    if walk and L > 1:
        kk, mm = np.triu_indices(L, 1)
        Ccross = np.zeros((kk.size, P2, P2))
        for (a, b), (c, d) in itertools.product(sp, sp):
            val = pi.cross(kk, mm, (a, b), (c, d)) - Gs[kk, a, b] * Gs[mm, c, d]
            for i, j in full_idx(a, b):
                for k2, l2 in full_idx(c, d):
                    Ccross[:, i * P + j, k2 * P + l2] = val
    # --- Cov(f(h^k), h^L h^L^T), k < L (walk only): E[f(x) y_c y_d] - G^k K^L
    CfK = np.zeros((L, P2, P2))
    if walk:
        kk = np.arange(L)
        mm = np.full(L, L)
        for (a, b), (c, d) in itertools.product(sp, sp):
            val = pi.cross(kk, mm, (a, b), (c, d), inner_kind="lin") - Gs[:L, a, b] * Ks[L, c, d]
            for i, j in full_idx(a, b):
                for k2, l2 in full_idx(c, d):
                    CfK[:, i * P + j, k2 * P + l2] = val
    CKK = _outer_hh(Ks[L])
    # --- assemble V (Eq. 4.9-4.10)
    diag_part = np.einsum("kij,kjl,kml->im", A, Cdiag, A)
    V_ind = CKK + diag_part
    V = V_ind.copy()
    if walk:
        t = np.einsum("kij,kjl->il", A, CfK)
        V = V + t + t.T
        if Ccross is not None:
            kk, mm = np.triu_indices(L, 1)
            t = np.einsum("bij,bjl,bml->im", A[kk], Ccross, A[mm])
            V = V + t + t.T
    V = 0.5 * (V + V.T)
    out = dict(V=V.reshape(P, P, P, P), V_ind=V_ind.reshape(P, P, P, P), Ks=Ks, A=A, G=Gs)
    if not compute_mean:
        return out

    # --- mean shift M (Eq. 4.14-4.18)
    # k1^l = sum_{k<l} B^{l,k} nu^k with B^{l,k} = s T^{l-1}...T^{k+1} (feedforward: same with T)
    # Sigma^l = Cov(k1^l) ; curvature source Psi''^l : Sigma^l
    def cov_nu(k, m):
        if k == m:
            return Cdiag[k]
        if not walk:
            return np.zeros((P2, P2))
        kk_, mm_ = min(k, m), max(k, m)
        idx = kk_ * L - kk_ * (kk_ + 1) // 2 + (mm_ - kk_ - 1)
        return Ccross[idx] if k < m else Ccross[idx].T

    selfs = _self_full(pi, net, Js, T, s, Gs, P) if walk else None
    Bs = {}  # B^{l,k} for k<l<=L-1 computed on the fly
    Msrc = np.zeros((L, P2))
    Ek2 = np.zeros(P2)
    Sig = np.zeros((P2, P2))  # Cov(k1^l)
    # Cov(k1^l, nu^j) for j >= l needed: Ck1nu[j] = sum_{k<l} B^{l,k} Cov(nu^k, nu^j)
    for l in range(L):
        # source at layer l: s * (Psi''^l : Sig^l + 2 self^l); then Ek2^{l+1} = T^l Ek2^l + source
        H = _hess_G(phi, Ks[l])
        curv = np.einsum("gef,ef->g", H, Sig)
        selfterm = selfs[l] if walk else np.zeros(P2)
        Msrc[l] = curv + 2.0 * selfterm
        Ek2 = T[l] @ Ek2 + s * Msrc[l]
        # update Sig to Cov(k1^{l+1}), k1^{l+1} = T^l k1^l + s nu^l  (B^{l,k} = s T^{l-1}..T^{k+1})
        if l + 1 < L:
            cross = np.zeros((P2, P2))          # Cov(k1^l, nu^l)
            for k in Bs:
                cross += Bs[k] @ cov_nu(k, l)
            Sig = T[l] @ Sig @ T[l].T + s * (T[l] @ cross + cross.T @ T[l].T) + s * s * cov_nu(l, l)
            Bs = {k: T[l] @ Bs[k] for k in Bs} if walk else {}
            Bs[l] = s * eye
    M = 0.5 * Ek2
    out["M"] = M.reshape(P, P)
    return out


def _self_full(pi, net, Js, T, s, Gs, P):
    """Self-interaction sources E[Df(h^m)[dh^m/deps]] for all m (full block, Eq. 4.17-4.18).

    self^m_ab = (alpha^2 sigma_w2 / 2) sum_{k<m} sum_{pq,cd} R^{m,k}_{ab,pq,cd} Xi^{m,k}_{pq,cd},
    R^{m,k} = Cov(d_p d_q f_ab(h^m), f_cd(h^k)),  Xi^{m,k} = sum_{i=k}^{m-1} Pi^{i,k},
    Pi^{i,i} = I, Pi^{i,k} = Psi'^i s T^{i-1}...T^{k+1}.   Returns (L, P^2).
    """
    L = len(Js) - 1
    P2 = P * P
    out = np.zeros((L, P, P))
    if L < 2:
        return out.reshape(L, P2)
    a2sw2 = net.alpha ** 2 * net.sigma_w2
    eye = np.eye(P2)
    kk, mm = np.triu_indices(L, 1)
    Xi = np.zeros((kk.size, P2, P2))
    pos = {}
    for n, (k, m) in enumerate(zip(kk, mm)):
        pos[(k, m)] = n
    for k in range(L - 1):
        chi = eye.copy()
        acc = eye.copy()
        for m in range(k + 1, L):
            Xi[pos[(k, m)]] = acc        # sum_{i=k}^{m-1} Pi^{i,k}
            acc = acc + Js[m] @ (s * chi)
            chi = T[m] @ chi
    sp = _sym_pairs(P)
    phi = pi.phi
    for (a, b) in sp:
        if a == b:
            terms = [((a, a), (2, 0), 1.0)]
        else:
            terms = [((a, a), (2, 0), 1.0), ((b, b), (0, 2), 1.0), ((a, b), (1, 1), 2.0)]
        acc = np.zeros(kk.size)
        for (p, q), dord, mult in terms:
            for (c, d) in sp:
                val = pi.cross(kk, mm, (c, d), (a, b), d=dord)
                mean_d2 = np.array([_d2f_mean(phi, pi.Ks[m], (a, b), dord) for m in range(L)])
                val = val - mean_d2[mm] * Gs[kk, c, d]
                w = Xi[:, p * P + q, c * P + d] + (Xi[:, p * P + q, d * P + c] if c != d else 0.0)
                if p != q:
                    w = 0.5 * (w + Xi[:, q * P + p, c * P + d] + (Xi[:, q * P + p, d * P + c] if c != d else 0.0))
                acc += mult * val * w
        tot = np.bincount(mm, weights=acc, minlength=L)
        out[:, a, b] = out[:, b, a] = 0.5 * a2sw2 * tot
    return out.reshape(L, P2)


def _d2f_mean(phi, K, cd, dord):
    """E[D^dord (phi(y_c) phi(y_d))] for y ~ N(0, K) (Price: derivatives of G)."""
    c, d = cd
    G, A, Ba, Bb = pair_matrix(phi, K, grad=True)
    if c == d:
        # E[(phi^2)''(y)] = 2 g'(K_cc)
        return 2.0 * A[c, c]
    if dord == (1, 1):
        return A[c, d]
    if dord == (2, 0):
        return 2.0 * Ba[c, d]
    return 2.0 * Bb[c, d]


# ============================================================ public API
def _check_width(width, required=False):
    if width is None:
        if required:
            raise ValueError("width is required (an integer >= 1)")
        return None
    if isinstance(width, bool) or not float(width).is_integer() or int(width) < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    return int(width)


def finite_width(net, width=None, X=None, K0=None, mean_shift=True, n_r=12, n_t=8) -> FiniteWidthResult:
    """1/N theory of the output kernel: K^L, M^L and V^L (docs/theory.md Sec. 4).

    Parameters
    ----------
    net : ResNet (block "full", "reduced" or "feedforward")
    width : int >= 1, optional
        Network width N (only used by the convenience properties
        ``expected_kernel`` / ``kernel_covariance``; M and V are N-independent).
    X, K0 : data (P, d) or layer-0 kernel (P, P); exactly one.
    mean_shift : bool
        Also compute M (costlier than V for the full block).
    n_r, n_t : radial / angular quadrature orders of the outer integrals
        (docs/theory.md Sec. 4.6; defaults give relative accuracy ~1e-4).

    Returns
    -------
    FiniteWidthResult with ``kernel`` K^L, ``mean_shift`` M^L (Eq. 4.1),
    ``covariance`` V^L (Eq. 4.2) and ``covariance_independent`` (Eq. 4.11).
    """
    width = _check_width(width)
    K0 = input_kernel(net, X=X, K0=K0)
    n_r = int(check_scalar("n_r", n_r, lo=4))
    n_t = int(check_scalar("n_t", n_t, lo=2))
    if net.block in ("full", "feedforward"):
        out = _full_or_ff(net, K0, compute_mean=mean_shift, n_r=n_r, n_t=n_t)
    else:
        from .finite_width_reduced import reduced_block_theory  # Sec. 4.8, Eq. 4.40-4.52
        out = reduced_block_theory(net, K0, compute_mean=mean_shift, n_r=n_r, n_t=n_t)
    P = K0.shape[0]
    M = out.get("M", np.full((P, P), np.nan))
    return FiniteWidthResult(net=net, K0=K0, kernel=out["Ks"][-1], mean_shift=M,
                             covariance=out["V"], covariance_independent=out["V_ind"], width=width,
                             extras={k: v for k, v in out.items() if k not in ("V", "V_ind", "M")})


# ============================================================ sensitivity at finite width
def _corr_correction(K, M, V, a=0, b=1):
    """N (E[c_hat] - c) to O(1) by the delta method (Eq. 4.29): grad c . M + 1/2 Hess c : V,
    c_hat = Khat_ab / sqrt(Khat_aa Khat_bb)."""
    kaa, kbb, kab = K[a, a], K[b, b], K[a, b]
    r = np.sqrt(kaa * kbb)
    g = kab / r
    grad = {"ab": 1.0 / r, "aa": -g / (2 * kaa), "bb": -g / (2 * kbb)}
    hess = {("aa", "aa"): 3 * g / (4 * kaa ** 2), ("bb", "bb"): 3 * g / (4 * kbb ** 2),
            ("aa", "bb"): g / (4 * kaa * kbb), ("ab", "aa"): -1.0 / (2 * kaa * r),
            ("ab", "bb"): -1.0 / (2 * kbb * r), ("ab", "ab"): 0.0}
    ix = {"aa": (a, a), "bb": (b, b), "ab": (a, b)}
    lin = sum(grad[k] * M[ix[k]] for k in grad)
    quad = 0.0
    for (u, v), h in hess.items():
        cov = V[ix[u] + ix[v]]
        quad += h * cov * (1.0 if u == v else 2.0)
    return lin + 0.5 * quad


def _mean_corr(K, M, V, width, a=0, b=1):
    """E[c_hat] to O(1/N) by the delta method (Eq. 4.29): c_hat = Khat_ab / sqrt(Khat_aa Khat_bb)."""
    return K[a, b] / np.sqrt(K[a, a] * K[b, b]) + _corr_correction(K, M, V, a, b) / width


def _check_sens_args(c0, q0, alphas, net, dc):
    c0 = check_scalar("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_scalar("q0", q0, lo=0.0, strict_lo=True)
    scalar = alphas is None
    alphas = np.atleast_1d(np.asarray(net.alpha if alphas is None else alphas, dtype=float))
    if alphas.ndim != 1 or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
        raise ValueError("alphas must be a 1-D array of finite values >= 0")
    lo, hi = max(c0 - dc, -1.0), min(c0 + dc, 1.0)
    if hi - lo <= 0:
        raise ValueError("c0 leaves no room for the finite difference")
    return c0, q0, alphas, scalar, lo, hi


def sensitivity_correction(net, c0, q0=1.0, alphas=None, dc=1e-4, **kw):
    """delta(alpha) = N (S_N - S_inf) to leading order: the width-independent 1/N coefficient
    of the finite-width sensitivity (docs/theory.md Eq. 4.29).

    delta = d/dc0 [grad c . M + 1/2 Hess c : V] by a central difference in c0 (step ``dc``);
    two :func:`finite_width` evaluations per alpha (``kw``: n_r, n_t). S_N = S_inf + delta/N
    for every N, so one delta serves all widths.
    """
    from .inputs import two_input_kernel
    c0, q0, alphas, scalar, lo, hi = _check_sens_args(c0, q0, alphas, net, dc)
    out = np.empty(alphas.shape)
    for i, al in enumerate(alphas):
        nn = net.replace(alpha=float(al))
        vals = []
        for c in (lo, hi):
            fw = finite_width(nn, K0=two_input_kernel(c, q0), **kw)
            vals.append(_corr_correction(fw.kernel, fw.mean_shift, fw.covariance))
        out[i] = (vals[1] - vals[0]) / (hi - lo)
    return float(out[0]) if scalar else out


def sensitivity_finite_width(net, c0, q0=1.0, width=None, alphas=None, dc=1e-4, **kw):
    """Finite-width sensitivity S_N(alpha) = d/dc0 E[c_hat^L] to O(1/N) (docs/theory.md Eq. 4.29).

    c_hat^L = Khat^L_12 / sqrt(Khat^L_11 Khat^L_22) for two inputs of norm q0 and
    correlation c0; E[c_hat] = c + (grad c . M + 1/2 Hess c : V)/N (delta method), so
    S_N = S_inf + delta/N with the exact mean-field S_inf (:func:`resscale.sensitivity.sensitivity`)
    and delta from :func:`sensitivity_correction` (central difference in c0, step ``dc``).
    Matches the simulation estimator (the average over networks of d c_hat^L / d c^0);
    validated in scripts/validate_sensitivity_finite_width.py.

    Cost: two :func:`finite_width` calls per alpha (P = 2; ~0.1 s at L = 20, a few s at
    L = 100). For an argmax over alpha use :func:`optimal_alpha_finite_width`.
    Returns an array like ``alphas`` (default: net.alpha).
    """
    from .sensitivity import sensitivity
    width = _check_width(width, required=True)
    c0, q0, alphas, scalar, lo, hi = _check_sens_args(c0, q0, alphas, net, dc)
    s_inf = np.atleast_1d(sensitivity(net, c0, q0, alphas=alphas))
    out = s_inf + np.atleast_1d(sensitivity_correction(net, c0, q0, alphas=alphas, dc=dc, **kw)) / width
    return float(out[0]) if scalar else out


def optimal_alpha_finite_width(net, c0, q0=1.0, width=None, alpha_inf=None, span=2.5, n_points=7,
                               n_r=8, n_t=6, xatol=1e-7, check=True):
    """alpha*(N) = argmax_alpha S_N(alpha), S_N = S_inf + delta/N (Eq. 4.29), at modest cost.

    The 1/N coefficient delta(alpha) is smooth in log alpha on the scale of alpha* itself,
    while S_inf is exact and cheap. So: (1) alpha_inf = mean-field argmax (given, or from
    :func:`resscale.optimal_alpha`); (2) delta on ``n_points`` log-spaced nodes in
    [alpha_inf/span, alpha_inf*span] (2 :func:`finite_width` calls each, orders n_r, n_t:
    delta to ~1e-2 relative, i.e. S_N to ~1e-2/N); (3) cubic spline of delta in log alpha;
    (4) bounded Brent on log(S_inf + delta/N) inside the bracket. If the maximum sits on the
    bracket edge the bracket is widened (once) by ``span``. With ``check`` the spline is
    checked by one extra exact delta at the optimum (``interp_error``).

    Returns a dict: alpha, sensitivity (S_N there), alpha_inf, delta (at alpha), nodes,
    deltas, interp_error, interior (bool).
    """
    from scipy.interpolate import CubicSpline
    from scipy.optimize import minimize_scalar
    from .sensitivity import sensitivity
    width = _check_width(width, required=True)
    if alpha_inf is None:
        from .optimal_alpha import optimal_alpha
        alpha_inf = optimal_alpha(net, c0, q0).alpha
    if not np.isfinite(alpha_inf) or alpha_inf <= 0:
        raise ValueError("the mean-field S(alpha) has no interior maximum; no finite-width alpha* either")
    kw = dict(n_r=n_r, n_t=n_t)
    lo_f, hi_f = np.log(alpha_inf / span), np.log(alpha_inf * span)
    nodes = np.exp(np.linspace(lo_f, hi_f, int(n_points)))
    deltas = np.asarray(sensitivity_correction(net, c0, q0, alphas=nodes, **kw), float)
    for _ in range(2):
        spl = CubicSpline(np.log(nodes), deltas)
        lo, hi = np.log(nodes[0]), np.log(nodes[-1])

        def negS(t):
            a = float(np.exp(t))
            s_inf = float(np.atleast_1d(sensitivity(net, c0, q0, alphas=[a]))[0])
            return -(s_inf + float(spl(t)) / width)
        grid = np.linspace(lo, hi, 81)
        vals = np.array([negS(t) for t in grid])
        i = int(np.argmin(vals))
        interior = 0 < i < grid.size - 1
        if interior:
            break
        # widen the bracket on the side of the maximum
        step = np.log(span)
        extra = np.exp(np.linspace(hi, hi + step, 4)[1:]) if i > 0 else np.exp(np.linspace(lo - step, lo, 4)[:-1])
        dx = np.asarray(sensitivity_correction(net, c0, q0, alphas=extra, **kw), float)
        nodes, deltas = np.concatenate([nodes, extra]), np.concatenate([deltas, dx])
        order = np.argsort(nodes)
        nodes, deltas = nodes[order], deltas[order]
    res = minimize_scalar(negS, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]),
                          method="bounded", options={"xatol": xatol})
    a_star = float(np.exp(res.x))
    d_star = float(spl(res.x))
    err = float("nan")
    if check:
        err = float(sensitivity_correction(net, c0, q0, alphas=[a_star], **kw)[0]) - d_star
    return dict(alpha=a_star, sensitivity=-float(res.fun), alpha_inf=float(alpha_inf), delta=d_star,
                nodes=nodes, deltas=deltas, interp_error=err, interior=bool(interior), width=width)


def finite_width_response(net, width, X=None, K0=None, rel=1e-4, **kw):
    """d E[Khat^L]_ab / dK^0_cd = chi + (dM/dK^0)/N to O(1/N), shape (P,P,P,P) (Eq. 4.28).

    M is differentiated by central differences along symmetric unit perturbations of
    K^0 (step rel * max K^0_aa); the mean-field part uses the exact chi of
    :func:`resscale.response.response_function`.
    """
    from .response import response_function
    width = _check_width(width, required=True)
    K0 = input_kernel(net, X=X, K0=K0)
    P = K0.shape[0]
    chi = response_function(net, K0=K0)
    h = rel * float(np.max(np.diag(K0)))
    dM = np.zeros((P, P, P, P))
    for c in range(P):
        for d in range(c, P):
            E = np.zeros((P, P))
            E[c, d] = E[d, c] = 1.0
            Mp = finite_width(net, K0=K0 + h * E, **kw).mean_shift
            Mm = finite_width(net, K0=K0 - h * E, **kw).mean_shift
            g = (Mp - Mm) / (2 * h)
            if c == d:
                dM[:, :, c, c] = g
            else:
                dM[:, :, c, d] = dM[:, :, d, c] = 0.5 * g
    return chi + dM / width
