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
