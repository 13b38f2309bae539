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


# ---------------------------------------------------------------- symmetric-pair coordinates (Sec. 4.10)
def sym_pairs_index(P):
    """(list of (a, b), a <= b; (P, P) position map; nbr (Q, 3); mask (Q, 3)).

    Q = P(P+1)/2 coordinates of a symmetric matrix. A kernel-map Jacobian couples the entry ab only to
    ab, aa, bb (Eq. 4.3), so every propagator (products of tangents) keeps that pattern: the pair block
    of x = ab is nbr[x] = (ab, aa, bb) (diagonal x = aa: (aa, aa, aa) with mask (1, 0, 0))."""
    sp = _sym_pairs(P)
    idx = np.empty((P, P), dtype=int)
    for n, (a, b) in enumerate(sp):
        idx[a, b] = idx[b, a] = n
    nbr = np.array([[idx[a, b], idx[a, a], idx[b, b]] for a, b in sp], dtype=int).reshape(-1, 3)
    mask = np.array([[1.0, float(a != b), float(a != b)] for a, b in sp]).reshape(-1, 3)
    return sp, idx, nbr, mask


def jac_sym_batch(phi, Ks):
    """G (B, P, P) and the Jacobian in symmetric-pair coordinates J (B, Q, Q): dG_x = sum_y J_xy dK_y
    with dK_y the entry y = cd (both K_cd and K_dc moved): J[ab, ab] = A_ab, J[ab, aa] = Ba_ab,
    J[ab, bb] = Bb_ab, J[aa, aa] = A_aa (Eq. 4.3). Same as :func:`jac_G_batch` with the two copies of an
    off-diagonal column added, without the (P^2, P^2) intermediate."""
    B, P = Ks.shape[0], Ks.shape[1]
    sp, idx, _, _ = sym_pairs_index(P)
    G, A, Ba, Bb = pair_matrix(phi, Ks, grad=True)
    Q = len(sp)
    J = np.zeros((B, Q, Q))
    for x, (a, b) in enumerate(sp):
        J[:, x, x] = A[:, a, b]
        if a != b:
            J[:, x, idx[a, a]] = Ba[:, a, b]
            J[:, x, idx[b, b]] = Bb[:, a, b]
    return G, J


def outer_hh_sym(K):
    """Cov(x_a x_b, x_c x_d) = K_ac K_bd + K_ad K_bc for x ~ N(0, K), (Q, Q) over symmetric pairs."""
    sp = _sym_pairs(K.shape[0])
    a = np.array([p[0] for p in sp])
    b = np.array([p[1] for p in sp])
    return K[a[:, None], a[None]] * K[b[:, None], b[None]] + K[a[:, None], b[None]] * K[b[:, None], a[None]]


def pair_hessian_blocks(phi, Ks, rel=1e-4):
    """Second derivatives of G_ab with respect to its own pair block (K_ab, K_aa, K_bb): (B, Q, 3, 3)
    (diagonal x = aa: only [0, 0] = g''(K_aa)); central differences of the closed-form gradient with the
    step of :func:`curvature_batch` (1e-4 of the largest kernel entry). The curvature source of Eq. 4.16
    is (Psi'':Sigma)_x = sum_ij H[x, i, j] Sigma[nbr_x,i, nbr_x,j] (G_ab depends on its block only)."""
    B, P = Ks.shape[0], Ks.shape[1]
    sp, idx, _, _ = sym_pairs_index(P)
    Q = len(sp)
    h = rel * np.maximum(np.max(np.abs(np.diagonal(Ks, axis1=1, axis2=2)), axis=1), 1e-3)     # (B,)
    H = np.zeros((B, Q, 3, 3))
    off = [(a, b) for a, b in sp if a != b]
    E = np.array([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    if off:
        aa = np.array([p[0] for p in off])
        bb = np.array([p[1] for p in off])
        K2 = np.stack([np.stack([Ks[:, aa, aa], Ks[:, aa, bb]], -1), np.stack([Ks[:, bb, aa], Ks[:, bb, bb]], -1)], -2)
        for y in range(3):
            d = h[:, None, None, None] * E[y]
            _, Ap, Bap, Bbp = pair_matrix(phi, K2 + d, grad=True)
            _, Am, Bam, Bbm = pair_matrix(phi, K2 - d, grad=True)
            g = np.stack([Ap[..., 0, 1] - Am[..., 0, 1], Bap[..., 0, 1] - Bam[..., 0, 1],
                          Bbp[..., 0, 1] - Bbm[..., 0, 1]], -1) / (2 * h[:, None, None])   # (B, n_off, 3)
            Hy = H[..., y]                                                            # view (B, Q, 3)
            Hy[:, [idx[a, b] for a, b in off], :] = g
    dg = np.diagonal(Ks, axis1=1, axis2=2)                                                    # (B, P)
    K2 = np.zeros((B, P, 2, 2))
    K2[..., 0, 0] = K2[..., 1, 1] = dg
    d = np.zeros((B, 1, 2, 2))
    d[:, 0, 0, 0] = h
    _, Ap, _, _ = pair_matrix(phi, K2 + d, grad=True)
    _, Am, _, _ = pair_matrix(phi, K2 - d, grad=True)
    H[:, [idx[a, a] for a in range(P)], 0, 0] = (Ap[..., 0, 0] - Am[..., 0, 0]) / (2 * h[:, None])
    return 0.5 * (H + np.swapaxes(H, 2, 3))
