"""Local Gaussian kernel maps and their tangents (docs/theory.md Sec. 2 and Eq. 7.1).

``pair_matrix`` evaluates G(K)_ab = E[phi(u_a) phi(u_b)], u ~ N(0, K), for a whole
(..., P, P) kernel, optionally with its local derivatives; ``tangent_G`` pushes a
tangent dK through G. Both are used by every block (:mod:`resscale.blocks`), the
mean-field recursion, the response function and the finite-width theory.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pair_matrix", "tangent_G"]


def pair_matrix(phi, K, grad=False):
    """G(K) for a (..., P, P) kernel, optionally with its local derivatives (Eq. 2.1-2.3).

    Returns G, or (G, A, Ba, Bb) where for a != b
        A_ab = dG_ab/dK_ab, Ba_ab = dG_ab/dK_aa, Bb_ab = dG_ab/dK_bb,
    and on the diagonal A_aa = g'(K_aa) (the total derivative of G_aa = g(K_aa)),
    Ba_aa = Bb_aa = 0. So the tangent is dG = tangent_G(dK, A, Ba, Bb).
    """
    d = np.diagonal(K, axis1=-2, axis2=-1)
    kaa, kbb = d[..., :, None], d[..., None, :]
    P = K.shape[-1]
    idx = np.arange(P)
    sym = not phi.closed_form  # quadrature is exact only up to rounding in a <-> b: symmetrise
    if not grad:
        G = phi.kernel(kaa, kbb, K)
        if sym:
            G = 0.5 * (G + np.swapaxes(G, -1, -2))
        G[..., idx, idx] = phi.diag(d)[0]
        return G
    G, Ba, Bb, A = (np.array(x) for x in phi.pair(kaa, kbb, K))
    if sym:
        G = 0.5 * (G + np.swapaxes(G, -1, -2))
        A = 0.5 * (A + np.swapaxes(A, -1, -2))
        Ba = 0.5 * (Ba + np.swapaxes(Bb, -1, -2))
        Bb = np.swapaxes(Ba, -1, -2).copy()
    g, dg = phi.diag(d)
    G[..., idx, idx] = g
    A[..., idx, idx] = dg
    Ba[..., idx, idx] = 0.0
    Bb[..., idx, idx] = 0.0
    return G, A, Ba, Bb


def tangent_G(J, A, Ba, Bb):
    """dG for a tangent J of shape (P, P, *T) (Eq. 7.1); A, Ba, Bb from pair_matrix(grad=True)."""
    P = A.shape[0]
    idx = np.arange(P)
    Jd = J[idx, idx]  # (P, *T): dK_aa
    extra = (None,) * (J.ndim - 2)
    ex = (slice(None), slice(None)) + extra
    return A[ex] * J + Ba[ex] * Jd[:, None] + Bb[ex] * Jd[None, :]
