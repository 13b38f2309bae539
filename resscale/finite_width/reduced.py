"""1/N finite-width theory of the REDUCED block (docs/theory.md Sec. 4.8, Eq. 4.40-4.52).

Block: h^l = h^{l-1} + alpha phi(W^l h^{l-1} + b^l).

Exact structure (Eq. 4.40-4.42): conditionally on layer l-1 the pre-activations
z^l_i are i.i.d. N(0, Cz), Cz = sigma_w2 Khat^{l-1} + sigma_b2, independent of
h^{l-1}_i. Hence, with the state s = (Khat, mhat), mhat = (1/N) sum_i h_i,

    E[s^l | F_{l-1}]        = f(s^{l-1})                        (drift, exact)
    N Cov(s^l | F_{l-1})    = Q(s^{l-1})                        (exact)

f_K(K, m) = K + alpha (m mu(Z)^T + mu(Z) m^T) + alpha^2 G(Z),  f_m = m + alpha mu(Z),
Z = sigma_w2 K + sigma_b2 -- i.e. the mean-field map itself (Eq. 3.2-3.3), and Q
depends only on (K, m) and on moments of phi(z) up to order four. Unlike the
full block (where the driver Ghat is not a function of Khat) the first two
conditional moments close on (Khat, mhat): the 1/N expansion is a linear-noise
(martingale) recursion

    Sigma^l = J^l Sigma^{l-1} J^l^T + Q^l,            V = Sigma^L_KK       (Eq. 4.46)
    mu^l    = J^l mu^{l-1} + 1/2 f''^l : Sigma^{l-1},  M = mu^L_K           (Eq. 4.48)

with J^l = f'(K^{l-1}, m^{l-1}), Sigma^0 = N Cov(Khat^0, mhat^0) (Gaussian input
layer) and mu^0 = 0. No self-interaction term appears: the noise of layer l has
exactly zero conditional mean.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..kernel_recursion import mean_field_kernel, mean_field_mean
from .linalg import _hess_G, _jac_G, _outer_hh
from .walk_integrals import _PairIntegrals

__all__ = ["reduced_block_theory"]


def _mu_derivs(phi, q, rel=1e-4):
    """mu(q), mu'(q), mu''(q) for the variances q (P,): mu(q) = E phi(sqrt(q) x)."""
    mu, d1 = phi.mean(q)
    if phi.odd:
        return mu, d1, np.zeros_like(q)
    h = rel * q
    d2 = (phi.mean(q + h)[1] - phi.mean(q - h)[1]) / (2 * h)
    return np.asarray(mu), np.asarray(d1), d2


def _moments(phi, Zs, n_r, n_t):
    """Same-layer moments of phi(z), z ~ N(0, Z^l): E3[l,b,c,d] = E phi_b phi_c phi_d and
    E4[l,a,b,c,d] = E phi_a phi_b phi_c phi_d for all layers (Zs: (L, P, P))."""
    L, P = Zs.shape[0], Zs.shape[1]
    pi = _PairIntegrals(phi, Zs, walk=False, n_r=n_r, n_t=n_t)
    kk = np.arange(L)
    E3 = np.zeros((L, P, P, P))
    E4 = np.zeros((L, P, P, P, P))
    if not phi.odd:  # odd phi: all odd moments vanish
        for idx in itertools.combinations_with_replacement(range(P), 3):
            val = pi.same(kk, idx)
            for perm in set(itertools.permutations(idx)):
                E3[(slice(None),) + perm] = val
    for idx in itertools.combinations_with_replacement(range(P), 4):
        val = pi.same(kk, idx)
        for perm in set(itertools.permutations(idx)):
            E4[(slice(None),) + perm] = val
    return E3, E4


def _no_closure(P):
    """covariance_independent is not defined for the reduced block: the recursion (Eq. 4.46) is
    already a closed fresh-noise-per-layer recursion and exact at O(1/N); NaN marks 'no closure'."""
    return np.full((P, P, P, P), np.nan)


def reduced_block_theory(net, K0, compute_mean=True, n_r=12, n_t=8):
    """V, M (and the joint (Khat, mhat) statistics) for the reduced block.

    Returns a dict with
      Ks (L+1,P,P), ms (L+1,P)   mean-field kernel and residual-stream mean,
      V (P,P,P,P)                N Cov(Khat^L) (Eq. 4.46),
      M (P,P)                    E Khat^L = K^L + M/N (Eq. 4.48) (if compute_mean),
      M_mean (P,)                E mhat^L = m^L + M_mean/N,
      Sigma (D,D)                N Cov of the state s^L = (Khat^L.ravel(), mhat^L), D = P^2 + P,
      J (L,D,D), mu_z, G_z       per-layer drift Jacobians and branch moments (for control variates).
    """
    phi = net.phi
    L, P = net.depth, K0.shape[0]
    P2, D = P * P, P * P + P
    a, sw2, sb2 = net.alpha, net.sigma_w2, net.sigma_b2
    Ks = mean_field_kernel(net, K0=K0, all_layers=True)
    ms = mean_field_mean(net, K0=K0, all_layers=True)
    if L == 0:
        Sig = np.zeros((D, D))
        Sig[:P2, :P2] = _outer_hh(K0)
        Sig[P2:, P2:] = K0
        return dict(Ks=Ks, ms=ms, V=Sig[:P2, :P2].reshape(P, P, P, P), V_ind=_no_closure(P), M=np.zeros((P, P)),
                    M_mean=np.zeros(P), Sigma=Sig, J=np.zeros((0, D, D)),
                    mu_z=np.zeros((0, P)), G_z=np.zeros((0, P, P)))
    Zs = sw2 * Ks[:L] + sb2                        # Z^l (pre-activation covariance of layer l = 1..L)
    E3, E4 = _moments(phi, Zs, n_r, n_t)
    eyeD = np.eye(D)
    Sig = np.zeros((D, D))
    Sig[:P2, :P2] = _outer_hh(K0)                  # N Cov(Khat^0): Gaussian input layer
    Sig[P2:, P2:] = K0                             # N Cov(mhat^0); Cov(Khat^0, mhat^0) = 0
    mvec = np.zeros(D)                             # N (E s^l - s_mf^l)
    Js, mus, Gz = [], [], []
    iK = lambda x, y: x * P + y                    # noqa: E731  (flat index of K_xy in the state)
    iM = lambda x: P2 + x                          # noqa: E731
    for l in range(L):
        K, m, Z = Ks[l], ms[l], Zs[l]
        q = np.diag(Z).copy()
        mu, dmu, d2mu = _mu_derivs(phi, q)
        G, JG = _jac_G(phi, Z)
        C = G - np.outer(mu, mu)                   # Cov(phi(z))
        T3 = E3[l] - mu[:, None, None] * G[None, :, :]   # T3_bcd = E[(phi_b - mu_b) phi_c phi_d]
        # ---- drift Jacobian J = f'(K, m)  (Eq. 4.45)
        J = eyeD.copy()
        J[:P2, :P2] += a * a * sw2 * JG
        for x, y in itertools.product(range(P), range(P)):
            J[iK(x, y), iK(y, y)] += a * sw2 * m[x] * dmu[y]
            J[iK(x, y), iK(x, x)] += a * sw2 * dmu[x] * m[y]
            J[iK(x, y), iM(x)] += a * mu[y]
            J[iK(x, y), iM(y)] += a * mu[x]
        for x in range(P):
            J[iM(x), iK(x, x)] += a * sw2 * dmu[x]
        # ---- noise covariance Q = N Cov(s^l | F_{l-1}) at mean field (Eq. 4.44)
        t1 = (np.einsum("ac,bd->abcd", K, C) + np.einsum("ad,bc->abcd", K, C)
              + np.einsum("bc,ad->abcd", K, C) + np.einsum("bd,ac->abcd", K, C))
        t3 = (np.einsum("a,bcd->abcd", m, T3) + np.einsum("b,acd->abcd", m, T3))
        t3 = t3 + np.transpose(t3, (2, 3, 0, 1))
        t4 = E4[l] - np.einsum("ab,cd->abcd", G, G)
        Q = np.zeros((D, D))
        Q[:P2, :P2] = (a ** 2 * t1 + a ** 3 * t3 + a ** 4 * t4).reshape(P2, P2)
        QKm = a ** 2 * (np.einsum("a,bc->abc", m, C) + np.einsum("b,ac->abc", m, C)) \
            + a ** 3 * np.transpose(T3, (1, 2, 0))   # [a,b,c] = T3_cab
        Q[:P2, P2:] = QKm.reshape(P2, P)
        Q[P2:, :P2] = Q[:P2, P2:].T
        Q[P2:, P2:] = a ** 2 * C
        # ---- mean source 1/2 f'' : Sigma^{l-1}  (Eq. 4.47)
        if compute_mean:
            src = np.zeros(D)
            H = _hess_G(phi, Z)
            src[:P2] = 0.5 * a * a * sw2 * sw2 * np.einsum("gef,ef->g", H, Sig[:P2, :P2])
            vdiag = np.array([Sig[iK(x, x), iK(x, x)] for x in range(P)])
            for x, y in itertools.product(range(P), range(P)):
                src[iK(x, y)] += a * (sw2 * dmu[y] * Sig[iM(x), iK(y, y)] + 0.5 * sw2 ** 2 * m[x] * d2mu[y] * vdiag[y]
                                      + sw2 * dmu[x] * Sig[iM(y), iK(x, x)] + 0.5 * sw2 ** 2 * m[y] * d2mu[x] * vdiag[x])
            src[P2:] = 0.5 * a * sw2 ** 2 * d2mu * vdiag
            mvec = J @ mvec + src
        Sig = J @ Sig @ J.T + Q
        Sig = 0.5 * (Sig + Sig.T)
        Js.append(J)
        mus.append(mu)
        Gz.append(G)
    out = dict(Ks=Ks, ms=ms, V=Sig[:P2, :P2].reshape(P, P, P, P), V_ind=_no_closure(P), Sigma=Sig, J=np.array(Js),
               mu_z=np.array(mus), G_z=np.array(Gz))
    if compute_mean:
        out["M"] = mvec[:P2].reshape(P, P)
        out["M"] = 0.5 * (out["M"] + out["M"].T)
        out["M_mean"] = mvec[P2:]
    return out
