"""Small linear algebra on P x P kernels shared by the finite-width blocks (docs/theory.md Eq. 4.3, 4.16)."""
from __future__ import annotations

import numpy as np

from ..kernel_recursion import pair_matrix


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


def jac_G_batch(phi, Ks):
    """Batched :func:`_jac_G`: G (B, P, P) and J (B, P^2, P^2) for kernels Ks (B, P, P) (Eq. 4.3).

    Same convention, dG.ravel() = J @ dK.ravel() for symmetric dK; one vectorised
    :func:`pair_matrix` call instead of a Python loop per kernel.
    """
    B, P = Ks.shape[0], Ks.shape[1]
    G, A, Ba, Bb = pair_matrix(phi, Ks, grad=True)
    J = np.zeros((B, P, P, P, P))
    for a in range(P):
        J[:, a, a, a, a] = A[:, a, a]
        for b in range(P):
            if a != b:
                J[:, a, b, a, b] += 0.5 * A[:, a, b]
                J[:, a, b, b, a] += 0.5 * A[:, a, b]
                J[:, a, b, a, a] += Ba[:, a, b]
                J[:, a, b, b, b] += Bb[:, a, b]
    return G, J.reshape(B, P * P, P * P)


def curvature_batch(phi, Ks, Sigs, rel=1e-4):
    """Psi'' : Sigma for each layer, (B, P^2): sum_{ef,gh} d^2 G / dK_ef dK_gh Sigma_{ef,gh} (Eq. 4.16).

    Sigma (B, P^2, P^2) symmetric = sum_i lam_i v_i v_i^T, so Psi'':Sigma = sum_i lam_i D^2G[v_i, v_i]
    with D^2G[v, v] = (J(K + h v) - J(K - h v)) v / (2h) (central difference of the closed-form
    gradient along v, as :func:`_hess_G`; v reshaped to a symmetric P x P direction).
    """
    B, P = Ks.shape[0], Ks.shape[1]
    P2 = P * P
    Sigs = 0.5 * (Sigs + np.swapaxes(Sigs, 1, 2))
    lam, vec = np.linalg.eigh(Sigs)                              # (B, P2), (B, P2, P2)
    V = np.swapaxes(vec, 1, 2).reshape(B, P2, P, P)             # v_i as P x P
    V = 0.5 * (V + np.swapaxes(V, 2, 3))
    h = rel * np.maximum(np.max(np.abs(np.diagonal(Ks, axis1=1, axis2=2)), axis=1), 1e-3)   # (B,)
    Kp = Ks[:, None] + h[:, None, None, None] * V
    Km = Ks[:, None] - h[:, None, None, None] * V
    _, Jp = jac_G_batch(phi, Kp.reshape(B * P2, P, P))
    _, Jm = jac_G_batch(phi, Km.reshape(B * P2, P, P))
    dJ = ((Jp - Jm).reshape(B, P2, P2, P2)) / (2 * h[:, None, None, None])
    d2 = np.einsum("bigh,bih->big", dJ, V.reshape(B, P2, P2))     # D^2G[v_i, v_i], (B, P2, P2-out)
    return np.einsum("bi,big->bg", lam, d2)
