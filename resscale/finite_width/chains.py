"""The closed Markov chains of the kernel, one engine per block (docs/theory.md Sec. 4.12, Eq. 4.81-4.83).

Each engine gives the generic next-order recursion (:func:`next_order.next_order_theory`) its
chain s^l = f(s^{l-1}) + xi^l in x-coordinates (:class:`chain_moments._Coords`):

* ``n_steps``, ``maps(l)`` -> (jac, Q): the drift Jacobian and N Cov(xi | s) of step l, batched;
* ``initial()`` -> (c1, t2) of the first state; ``point(l)``, ``scale(l)``: the mean-field state
  that step l starts from, and its size (finite-difference steps);
* ``RT(l)`` -> (R, T): the O(1/N) part of N Cov(xi | s) and N^2 kappa3(xi | s) at that state.

Engines: :class:`_TwoLayer` (Eq. 4.70, state Khat), :class:`_Reduced` (Eq. 4.40, state (Khat, mhat)),
:class:`_FeedForward` (state Sigma = sigma_w2 Ghat + sigma_b2, the conditional covariance of the
next layer, then one Wishart readout step, Eq. 4.103).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..kernel_recursion import mean_field_kernel, mean_field_mean
from .chain_moments import _Coords, feature_cumulants, gaussian_moment, phi_moment_table
from .linalg import jac_G_batch

def _second_fourth(tab, P, B):
    """G_ab = E[phi_a phi_b] (B,P,P) and E4_abcd = E[phi_a phi_b phi_c phi_d] (B,P,P,P,P) from a moment table."""
    G = np.zeros((B, P, P))
    E4 = np.zeros((B,) + (P,) * 4)
    for a, b in itertools.product(range(P), range(P)):
        G[:, a, b] = tab[tuple(sorted((a, b)))]
    for idx in itertools.product(range(P), repeat=4):
        E4[(slice(None),) + idx] = tab[tuple(sorted(idx))]
    return G, E4


class _TwoLayer:
    """Khat' = Khat + C + C^T + D (Eq. 4.70); state x = upper triangle of Khat."""

    def __init__(self, net, K0, n_r, n_t):
        self.net, self.K0, self.n_r, self.n_t = net, K0, n_r, n_t
        self.P = K0.shape[0]
        self.co = _Coords(self.P, with_mean=False)
        self.Ks = mean_field_kernel(net, K0=K0, all_layers=True)
        self.n_steps = net.depth

    def maps(self, l):
        """(jac, Q): the drift Jacobian and the noise covariance of step l, batched over states."""
        return self.jac, self.Q

    def initial(self):
        """c1, t2 of the input-layer state s^0 (Wishart: h^0 ~ N(0, K0) i.i.d.; Sec. 4.12)."""
        co, P = self.co, self.P
        _, cov, k3 = feature_cumulants(lambda idx: gaussian_moment(self.K0[None], idx), P)
        sel = [P + a * P + b for (a, b) in co.pairs]      # features y_a y_b for pairs a <= b
        return cov[0][np.ix_(sel, sel)], k3[0][np.ix_(sel, sel, sel)]

    def jac(self, X):
        net, co = self.net, self.co
        a2, sw2, sb2 = net.alpha ** 2, net.sigma_w2, net.sigma_b2
        Z = sw2 * co.K_of(X) + sb2
        _, JG = jac_G_batch(net.phi, Z)
        return np.eye(co.n)[None] + a2 * sw2 * sw2 * (co.R @ JG @ co.B)[:, :, :]

    def _parts(self, K, Z, tab):
        """S, G, W = N Cov(Sigma_hat) (P,P,P,P) for each batch element."""
        net, P = self.net, self.P
        a2, sw2, sb2 = net.alpha ** 2, net.sigma_w2, net.sigma_b2
        G, E4 = _second_fourth(tab, P, K.shape[0])
        S = a2 * (sw2 * G + sb2)
        W = a2 * a2 * sw2 * sw2 * (E4 - np.einsum("bij,bkl->bijkl", G, G))
        return S, G, W

    def Q(self, X):
        co = self.co
        K = co.K_of(X)
        Z = self.net.sigma_w2 * K + self.net.sigma_b2
        tab = phi_moment_table(self.net.phi, Z, 4, self.n_r, self.n_t)
        S, G, W = self._parts(K, Z, tab)
        Qf = (np.einsum("eac,ebd->eabcd", K, S) + np.einsum("ead,ebc->eabcd", K, S)
              + np.einsum("ebc,ead->eabcd", K, S) + np.einsum("ebd,eac->eabcd", K, S)
              + np.einsum("eac,ebd->eabcd", S, S) + np.einsum("ead,ebc->eabcd", S, S) + W)
        return self._to_x2(Qf)

    def _to_x2(self, A):
        """(B, P,P,P,P) -> (B, nk, nk)."""
        pr = self.co.pairs
        i = np.array([p[0] for p in pr])
        j = np.array([p[1] for p in pr])
        return A[:, i[:, None], j[:, None], i[None, :], j[None, :]]

    def _to_x3(self, A):
        pr = self.co.pairs
        i = np.array([p[0] for p in pr])
        j = np.array([p[1] for p in pr])
        return A[:, i[:, None, None], j[:, None, None], i[None, :, None], j[None, :, None],
                 i[None, None, :], j[None, None, :]]

    def RT(self, l):
        """R (nk, nk) and T (nk, nk, nk) at the mean-field point of layer l -> l+1 (Eq. 4.81-4.83)."""
        net, P = self.net, self.P
        a2, sw2, sb2 = net.alpha ** 2, net.sigma_w2, net.sigma_b2
        K = self.Ks[l][None]
        Z = sw2 * K + sb2
        tab = phi_moment_table(net.phi, Z, 6, self.n_r, self.n_t)
        S, G, W = self._parts(K, Z, tab)
        # R: O(1/N) part of N Cov(Khat'|F): E[Sig_ac Sig_bd] - S_ac S_bd (Eq. 4.81)
        R = np.transpose(W, (0, 1, 3, 2, 4)) + np.transpose(W, (0, 1, 3, 4, 2))
        # T_a: E_h kappa3 of g = h d^T + d h^T + d d^T, d ~ N(0, S), h ~ N(0, K) (walk: Gaussian)
        F = P + P * P
        _, _, k3d = feature_cumulants(lambda idx: gaussian_moment(S, idx), P)
        Ct = np.zeros((P + 1, P, P, F))        # coefficient of (1, h_e) on the feature u_r, output K_ab
        for a, b in itertools.product(range(P), range(P)):
            Ct[0, a, b, P + a * P + b] = 1.0
            Ct[1 + a, a, b, b] += 1.0
            Ct[1 + b, a, b, a] += 1.0
        M3 = np.zeros((P + 1,) * 3)
        M3[0, 0, 0] = 1.0
        for e, f in itertools.product(range(P), range(P)):   # E[h_e h_f] = K (h centred Gaussian)
            M3[0, 1 + e, 1 + f] = M3[1 + e, 0, 1 + f] = M3[1 + e, 1 + f, 0] = K[0, e, f]
        Ta = np.einsum("efg,eabr,fcdt,ghiv,rtv->abcdhi", M3, Ct, Ct, Ct, k3d[0], optimize=True)
        # T_b: 3 sym Cov(Sigma_hat, Q0(Khat, Sigma_hat)), Q0 = sym(K x Sig) + Sig Sig
        U = K[0] + S[0]
        Wm = W[0]
        Cb = (np.einsum("ac,efbd->efabcd", U, Wm) + np.einsum("ad,efbc->efabcd", U, Wm)
              + np.einsum("bc,efad->efabcd", U, Wm) + np.einsum("bd,efac->efabcd", U, Wm))
        Tb = Cb + np.transpose(Cb, (2, 3, 0, 1, 4, 5)) + np.transpose(Cb, (2, 3, 4, 5, 0, 1))
        # T_c: kappa3 of Sigma_hat = a^2 sw2 Ghat: a^6 sw2^3 kappa3(phi phi^T)
        _, _, k3p = feature_cumulants(lambda idx: tab[idx], P)
        Tc = a2 ** 3 * sw2 ** 3 * k3p[0][P:, P:, P:].reshape((P,) * 6)
        T = self._to_x3((Ta + Tb + Tc)[None])[0]
        return self._to_x2(R)[0], T

    def point(self, l):
        return self.co.x_of(self.Ks[l])

    def scale(self, l):
        return max(float(np.max(np.abs(np.diag(self.Ks[l])))), 1e-3)


class _Reduced(_TwoLayer):
    """h' = h + alpha phi(z) (Eq. 4.40-4.44); state x = (upper triangle of Khat, mhat)."""

    def __init__(self, net, K0, n_r, n_t):
        self.net, self.K0, self.n_r, self.n_t = net, K0, n_r, n_t
        self.P = K0.shape[0]
        self.co = _Coords(self.P, with_mean=True)
        self.Ks = mean_field_kernel(net, K0=K0, all_layers=True)
        self.ms = np.asarray(mean_field_mean(net, K0=K0, all_layers=True), dtype=float)
        self.n_steps = net.depth
        # third moment of the mean-field walk E[h_a h_b h_c] (Eq. 4.83)
        P, a = self.P, net.alpha
        L = net.depth
        Zs = net.sigma_w2 * self.Ks[:L] + net.sigma_b2
        self.m3 = np.zeros((L + 1, P, P, P))
        self._tabs = [None] * L
        if L and not net.phi.odd:
            tab = phi_moment_table(net.phi, Zs, 3, n_r, n_t)
            for l in range(L):
                K, m = self.Ks[l], self.ms[l]
                mu = np.array([tab[(x,)][l] for x in range(P)])
                G = np.array([[tab[tuple(sorted((x, y)))][l] for y in range(P)] for x in range(P)])
                E3 = np.zeros((P, P, P))
                for idx in itertools.product(range(P), repeat=3):
                    E3[idx] = tab[tuple(sorted(idx))][l]
                s3 = lambda A, v: (np.einsum("ab,c->abc", A, v) + np.einsum("ac,b->abc", A, v)  # noqa: E731
                                   + np.einsum("bc,a->abc", A, v))
                self.m3[l + 1] = self.m3[l] + a * s3(K, mu) + a * a * s3(G, m) + a ** 3 * E3

    def _Ct(self):
        """Coefficients of (1, h_e) on the features u = (phi, phi phi^T) for the increment of x."""
        P, co, a = self.P, self.co, self.net.alpha
        F = P + P * P
        Ct = np.zeros((P + 1, co.n, F))
        for p, (x, y) in enumerate(co.pairs):
            Ct[0, p, P + x * P + y] = a * a
            Ct[1 + x, p, y] += a
            Ct[1 + y, p, x] += a
        for c in range(P):
            Ct[0, co.nk + c, c] = a
        return Ct

    def initial(self):
        co, P = self.co, self.P
        _, cov, k3 = feature_cumulants(lambda idx: gaussian_moment(self.K0[None], idx), P)
        sel = [P + a * P + b for (a, b) in co.pairs] + list(range(P))
        return cov[0][np.ix_(sel, sel)], k3[0][np.ix_(sel, sel, sel)]

    def jac(self, X):
        net, co, P = self.net, self.co, self.P
        a, sw2, sb2, phi = net.alpha, net.sigma_w2, net.sigma_b2, net.phi
        K = co.K_of(X)
        m = X[:, co.nk:]
        Z = sw2 * K + sb2
        _, JG = jac_G_batch(phi, Z)
        B = X.shape[0]
        J = np.tile(np.eye(co.n), (B, 1, 1))
        J[:, :co.nk, :co.nk] += a * a * sw2 * (co.R @ JG @ co.B)
        if phi.odd:
            return J
        q = np.diagonal(Z, axis1=1, axis2=2)
        mu, dmu = phi.mean(q.reshape(-1))
        mu, dmu = np.asarray(mu).reshape(B, P), np.asarray(dmu).reshape(B, P)
        ix = co.idx
        for p, (x, y) in enumerate(co.pairs):
            J[:, p, ix[y, y]] += a * sw2 * m[:, x] * dmu[:, y]
            J[:, p, ix[x, x]] += a * sw2 * dmu[:, x] * m[:, y]
            J[:, p, co.nk + x] += a * mu[:, y]
            J[:, p, co.nk + y] += a * mu[:, x]
        for c in range(P):
            J[:, co.nk + c, ix[c, c]] += a * sw2 * dmu[:, c]
        return J

    def Q(self, X):
        co, P = self.co, self.P
        K = co.K_of(X)
        m = X[:, co.nk:]
        Z = self.net.sigma_w2 * K + self.net.sigma_b2
        tab = phi_moment_table(self.net.phi, Z, 4, self.n_r, self.n_t)
        _, cov, _ = feature_cumulants(lambda idx: tab[idx], P, third=False)
        M2 = np.zeros((X.shape[0], P + 1, P + 1))
        M2[:, 0, 0] = 1.0
        M2[:, 0, 1:] = m
        M2[:, 1:, 0] = m
        M2[:, 1:, 1:] = K
        Ct = self._Ct()
        return np.einsum("bef,epr,fqt,brt->bpq", M2, Ct, Ct, cov, optimize=True)

    def RT(self, l):
        net, P = self.net, self.P
        K, m = self.Ks[l], self.ms[l]
        Z = (net.sigma_w2 * K + net.sigma_b2)[None]
        tab = phi_moment_table(net.phi, Z, 6, self.n_r, self.n_t)
        _, _, k3 = feature_cumulants(lambda idx: tab[idx], P)
        M3 = np.zeros((P + 1,) * 3)
        M1 = np.concatenate([[1.0], m])
        M2 = np.zeros((P + 1, P + 1))
        M2[0, 0], M2[0, 1:], M2[1:, 0], M2[1:, 1:] = 1.0, m, m, K
        M3[:, :, 0] = M2
        M3[:, 0, :] = M2
        M3[0, :, :] = M2
        M3[1:, 1:, 1:] = self.m3[l]
        del M1
        Ct = self._Ct()
        T = np.einsum("efg,epr,fqt,gsv,rtv->pqs", M3, Ct, Ct, Ct, k3[0], optimize=True)
        return np.zeros((self.co.n, self.co.n)), T

    def point(self, l):
        return self.co.x_of(self.Ks[l], self.ms[l])


class _FeedForward(_TwoLayer):
    """h^l = W phi(h^{l-1}) + b (Eq. 4.103): given h^{l-1} the rows of h^l are i.i.d. N(0, Sigma^{l-1}),
    Sigma = sigma_w2 Ghat(h) + sigma_b2, so Sigma is a closed chain, started deterministically at
    Sigma^{-1} = K0 (h^0 ~ N(0, K0) i.i.d.). Steps l = 0..L-1: Sigma^l = sigma_w2 Ghat + sigma_b2 of
    N i.i.d. rows z ~ N(0, Sigma^{l-1}): f = sigma_w2 G + sigma_b2, Q = sigma_w2^2 Cov(phi phi^T),
    R = 0, T = sigma_w2^3 kappa3(phi phi^T) (all exact: an i.i.d. average). Step L, the readout
    Khat^L = Wishart(Sigma^{L-1}) / N: f = identity, Q = Wishart, R = 0, T = kappa3(y y^T), y ~ N(0, Sigma).
    Mean-field state of step l: Sigma^{l-1}_mf = K^l."""

    def __init__(self, net, K0, n_r, n_t):
        super().__init__(net, K0, n_r, n_t)
        self.n_steps = net.depth + 1

    def maps(self, l):
        return (self.jac, self.Q) if l < self.net.depth else (self._jac_read, self._Q_read)

    def initial(self):
        n = self.co.n
        return np.zeros((n, n)), np.zeros((n, n, n))

    def jac(self, X):
        co = self.co
        _, JG = jac_G_batch(self.net.phi, co.K_of(X))
        return self.net.sigma_w2 * (co.R @ JG @ co.B)

    def Q(self, X):
        S = self.co.K_of(X)
        tab = phi_moment_table(self.net.phi, S, 4, self.n_r, self.n_t)
        G, E4 = _second_fourth(tab, self.P, S.shape[0])
        return self._to_x2(self.net.sigma_w2 ** 2 * (E4 - np.einsum("bij,bkl->bijkl", G, G)))

    def _jac_read(self, X):
        return np.tile(np.eye(self.co.n), (X.shape[0], 1, 1))

    def _Q_read(self, X):
        S = self.co.K_of(X)
        return self._to_x2(np.einsum("eac,ebd->eabcd", S, S) + np.einsum("ead,ebc->eabcd", S, S))

    def RT(self, l):
        net, P, n = self.net, self.P, self.co.n
        S = self.Ks[l][None]
        if l < net.depth:
            tab = phi_moment_table(net.phi, S, 6, self.n_r, self.n_t)
            _, _, k3 = feature_cumulants(lambda idx: tab[idx], P)
            T = net.sigma_w2 ** 3 * k3[0][P:, P:, P:].reshape((P,) * 6)
        else:
            _, _, k3 = feature_cumulants(lambda idx: gaussian_moment(S, idx), P)
            T = k3[0][P:, P:, P:].reshape((P,) * 6)
        return np.zeros((n, n)), self._to_x3(T[None])[0]


_ENGINES = {"two_layer": _TwoLayer, "reduced": _Reduced, "feedforward": _FeedForward}
NEXT_ORDER_BLOCKS = tuple(_ENGINES)
RESUMMED_BLOCKS = ("two_layer", "reduced")   # Sec. 4.12.3 (its drift is written for these two)
