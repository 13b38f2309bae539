"""1/N theory of the FULL block (walk) and the feed-forward baseline, exact discrete layer sums (docs/theory.md Sec. 4.2-4.5, Eq. 4.8-4.18)."""
from __future__ import annotations

import itertools

import numpy as np

from ..kernel_recursion import mean_field_kernel, pair_matrix
from .linalg import _hess_G, _jac_G, _outer_hh, _sym_pairs
from .walk_integrals import _PairIntegrals


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
    Cdiag, Ccross, CfK = _covariance_tables(pi, Gs, Ks, walk)
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


def _covariance_tables(pi, Gs, Ks, walk):
    """Covariances of the drivers f = phi phi^T along the walk (Eq. 4.9-4.10), layers 0..L-1
    of ``Ks`` (L+1, P, P) (any increasing subset of the network's layers, last = output):

    Cdiag (L, P2, P2)        Cov(f(h^k), f(h^k))
    Ccross (L(L-1)/2, ...)   Cov(f(h^k), f(h^m)), k < m < L, in np.triu_indices(L, 1) order (walk only)
    CfK (L, P2, P2)          Cov(f(h^k), h^L h^L^T) (walk only)
    """
    L, P = Ks.shape[0] - 1, Ks.shape[1]
    P2 = P * P
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
    return Cdiag, Ccross, CfK


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


def _d2f_mean(phi, K, cd, dord, pm=None):
    """E[D^dord (phi(y_c) phi(y_d))] for y ~ N(0, K) (Price: derivatives of G).
    ``pm``: the precomputed ``pair_matrix(phi, K, grad=True)`` (one 2-D quadrature per K for
    quadrature activations: callers with several (cd, dord) at the same K pass it)."""
    c, d = cd
    G, A, Ba, Bb = pair_matrix(phi, K, grad=True) if pm is None else pm
    if c == d:
        # E[(phi^2)''(y)] = 2 g'(K_cc)
        return 2.0 * A[c, c]
    if dord == (1, 1):
        return A[c, d]
    if dord == (2, 0):
        return 2.0 * Ba[c, d]
    return 2.0 * Bb[c, d]
