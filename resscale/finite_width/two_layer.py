"""1/N finite-width theory of the TWO-LAYER block (docs/theory.md Sec. 4.11, Eq. 4.70-4.75).

Block: h^l = h^{l-1} + alpha (V^l phi(W^l h^{l-1} + b^l) + a^l).

Exact structure (Eq. 4.70): conditionally on layer l-1 the pre-activations z_j =
(W h^{l-1} + b)_j are i.i.d. N(0, Z), Z = sigma_w2 Khat^{l-1} + sigma_b2; given z,
the branch outputs d_i = alpha ((V phi(z))_i + a_i) are i.i.d. N(0, Sigma),

    Sigma = alpha^2 (sigma_w2 Ghat + sigma_b2),   Ghat = (1/N) sum_j phi(z_j) phi(z_j)^T,

and independent of h^{l-1} (V and a are centred and fresh). With C = (1/N) sum_i h_i d_i^T
and D = (1/N) sum_i d_i d_i^T,  Khat^l = Khat^{l-1} + C + C^T + D. Hence the kernel
alone is a closed Markov chain (no residual-stream mean, for every phi):

    E[Khat^l | F_{l-1}]     = f(Khat^{l-1}),   f(K) = K + alpha^2 (sigma_w2 G(sigma_w2 K + sigma_b2) + sigma_b2)
    N Cov(Khat^l | F_{l-1}) = Q(Khat^{l-1}) + O(1/N)                                          (Eq. 4.71)

    Q_abcd = K_ac S_bd + K_ad S_bc + K_bc S_ad + K_bd S_ac        (C + C^T: h times branch)
           + S_ac S_bd + S_ad S_bc                                (D: Wishart of the branch)
           + alpha^4 sigma_w2^2 (E[phi_a phi_b phi_c phi_d] - G_ab G_cd)   (Ghat: hidden-layer noise)

with S = alpha^2 (sigma_w2 G(Z) + sigma_b2), all at mean field (Eq. 4.72). The drift is
exactly f (E Ghat = G(Z)), so there is no self-interaction term and the linear-noise
recursion of the reduced block applies (Eq. 4.73-4.74):

    V^l = J^l V^{l-1} J^l^T + Q^l,                  J^l = f'(K^{l-1}) = I + alpha^2 sigma_w2^2 G'(Z^l)
    M^l = J^l M^{l-1} + 1/2 alpha^2 sigma_w2^3 G''(Z^l) : V^{l-1}

with V^0 = K0 (x) K0 symmetrised (Gaussian input layer) and M^0 = 0.
"""
from __future__ import annotations

import numpy as np

from ..kernel_recursion import mean_field_kernel
from .linalg import _hess_G, _jac_G, _outer_hh
from .reduced import _moments, _no_closure

__all__ = ["two_layer_block_theory"]


def two_layer_noise(K, S, E4, G, alpha, sigma_w2):
    """Q (P^2, P^2) = N Cov(Khat^l | F_{l-1}) at mean field (Eq. 4.72)."""
    P = K.shape[0]
    t_cross = (np.einsum("ac,bd->abcd", K, S) + np.einsum("ad,bc->abcd", K, S)
               + np.einsum("bc,ad->abcd", K, S) + np.einsum("bd,ac->abcd", K, S))
    t_wishart = np.einsum("ac,bd->abcd", S, S) + np.einsum("ad,bc->abcd", S, S)
    t_hidden = alpha ** 4 * sigma_w2 ** 2 * (E4 - np.einsum("ab,cd->abcd", G, G))
    return (t_cross + t_wishart + t_hidden).reshape(P * P, P * P)


def two_layer_block_theory(net, K0, compute_mean=True, n_r=12, n_t=8):
    """V and M of the two-layer block (Eq. 4.73-4.74).

    Returns a dict with Ks (L+1,P,P), V (P,P,P,P), M (P,P) (if compute_mean),
    V_ind (NaN: no closure is needed, the recursion is already exact at O(1/N)),
    J (L,P^2,P^2) the per-layer drift Jacobians.
    """
    phi = net.phi
    L, P = net.depth, K0.shape[0]
    P2 = P * P
    a, sw2, sb2 = net.alpha, net.sigma_w2, net.sigma_b2
    Ks = mean_field_kernel(net, K0=K0, all_layers=True)
    Zs = sw2 * Ks[:L] + sb2                          # pre-activation covariance of layers 1..L
    _, E4 = _moments(phi, Zs, n_r, n_t)
    eye = np.eye(P2)
    Sig = _outer_hh(K0)                              # N Cov(Khat^0): Gaussian input layer
    mvec = np.zeros(P2)
    Js = []
    for l in range(L):
        K, Z = Ks[l], Zs[l]
        G, JG = _jac_G(phi, Z)
        S = a * a * (sw2 * G + sb2)
        J = eye + a * a * sw2 * sw2 * JG
        if compute_mean:
            H = _hess_G(phi, Z)
            mvec = J @ mvec + 0.5 * a * a * sw2 ** 3 * np.einsum("gef,ef->g", H, Sig)
        Sig = J @ Sig @ J.T + two_layer_noise(K, S, E4[l], G, a, sw2)
        Sig = 0.5 * (Sig + Sig.T)
        Js.append(J)
    out = dict(Ks=Ks, V=Sig.reshape(P, P, P, P), V_ind=_no_closure(P), J=np.array(Js).reshape(L, P2, P2))
    if compute_mean:
        M = mvec.reshape(P, P)
        out["M"] = 0.5 * (M + M.T)
    return out
