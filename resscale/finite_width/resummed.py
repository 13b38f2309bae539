"""Resummed (non-perturbative) finite-width prediction of the closed chains (docs/theory.md Sec. 4.12.3,
Eq. 4.99-4.102; issue 10).

The chain s^l = f(s^{l-1}) + xi^l (Sec. 4.12) is propagated at the given width N by a third-order
cumulant closure evaluated with a cubature rule: the law of s^{l-1} is represented by its mean mu,
covariance Sigma and third cumulant kappa through the Edgeworth-weighted Gaussian cubature

    E g(s) ~= sum_j w_j (1 + 1/6 kt_abc He_abc(z_j)) g(mu + A z_j),   A A^T = Sigma,
    kt = kappa contracted with A^-1 on every slot, He_abc(z) = z_a z_b z_c - z_a d_bc - z_b d_ac - z_c d_ab

(z_j, w_j: the 4-point Gauss-Hermite tensor product, degree 7, so that the Edgeworth term
E[z_a z_b z_c He_abc] (degree 6) is exact; n <= 6 state coordinates), and one layer is, with the
*full nonlinear* drift f and the
state-dependent noise Q(s) evaluated at every cubature point,

    mu'    = E f(s)                                                              (4.99)
    Sigma' = Cov f(s) + (E Q(s) + R/N) / N                                        (4.100)
    kappa' = kappa3 f(s) + sum_3 slots Cov(f(s), Q(s)) / N + T / N^2              (4.101)

(R, T at the mean-field point, as in Eq. 4.83). Exact initial law moments at layer 0 (Wishart).
Expanding (4.99-4.101) in 1/N reproduces Eq. 4.84-4.88 to O(1/N^2) (the rule integrates the
Taylor terms that enter at O(1/N^2) exactly); the neglected pieces are the fourth and higher cumulants of s
beyond their Gaussian part and the cubature error of the degree >= 6 terms.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..kernel_maps import pair_matrix
from .chains import RESUMMED_BLOCKS, _ENGINES

__all__ = ["resummed_theory", "cubature"]


MAX_STATE_DIM = 6     # degree-7 tensor rule: 4^n points (n = 5: 1024, n = 6: 4096)


def cubature(n, degree=7):
    """Gaussian rule for N(0, I_n): (points (m, n), weights (m,)). degree 7: the 4-point Gauss-Hermite
    tensor product (needed with the Edgeworth weights: E[z^3 He_3(z)] is a degree-6 integrand);
    degree 5: the 3-point tensor product for n <= 6, the 2 n^2 + 1 point rule above."""
    if degree == 7 or n <= 6:
        x, w = np.polynomial.hermite_e.hermegauss(4 if degree == 7 else 3)
        w = w / w.sum()
        pts = np.array(list(itertools.product(x, repeat=n)))
        wts = np.prod(np.array(list(itertools.product(w, repeat=n))), axis=1)
        return pts, wts
    # degree-5 rule with 2 n^2 + 1 points (Stroud; the "fifth-degree cubature Kalman filter")
    r = np.sqrt(n + 2.0)
    e = np.eye(n)
    pts = [np.zeros(n)]
    wts = [2.0 / (n + 2)]
    for i in range(n):
        for s in (1, -1):
            pts.append(s * r * e[i])
            wts.append((4.0 - n) / (2.0 * (n + 2) ** 2))
    for i, j in itertools.combinations(range(n), 2):
        for s1, s2 in itertools.product((1, -1), (1, -1)):
            pts.append(r / np.sqrt(2.0) * (s1 * e[i] + s2 * e[j]))
            wts.append(1.0 / (n + 2) ** 2)
    return np.array(pts), np.array(wts)


def _drift(eng, X):
    """f(s) at a batch of states X (B, n): the exact conditional mean (Eq. 4.42 / 4.70)."""
    net, co = eng.net, eng.co
    a, sw2, sb2, phi = net.alpha, net.sigma_w2, net.sigma_b2, net.phi
    K = co.K_of(X)
    Z = sw2 * K + sb2
    G = pair_matrix(phi, Z)
    if net.block == "two_layer":
        return co.x_of(K + a * a * (sw2 * G + sb2))
    m = X[:, co.nk:]
    if phi.odd:
        return co.x_of(K + a * a * G, m)
    mu = np.asarray(phi.mean(np.diagonal(Z, axis1=1, axis2=2).reshape(-1))[0]).reshape(m.shape)
    cross = m[:, :, None] * mu[:, None, :]
    return co.x_of(K + a * (cross + np.swapaxes(cross, 1, 2)) + a * a * G, m + a * mu)


def _project(co, X, tiny=1e-12):
    """Cubature points outside the domain of the chain (K_aa <= 0 or |c_ab| >= 1, reachable at small N,
    where the fluctuations are as large as the kernel) are projected back pairwise onto it: K_aa >= tiny
    max K_aa, |K_ab| <= (1 - 1e-9) sqrt(K_aa K_bb)."""
    X = X.copy()
    dg = [co.idx[a, a] for a in range(co.P)]
    scale = max(float(np.max(np.abs(X[:, dg]))), 1e-300)
    X[:, dg] = np.maximum(X[:, dg], tiny * scale)
    for p, (a, b) in enumerate(co.pairs):
        if a != b:
            r = (1 - 1e-9) * np.sqrt(X[:, co.idx[a, a]] * X[:, co.idx[b, b]])
            X[:, p] = np.clip(X[:, p], -r, r)
    return X


def _sqrt_and_inv(S):
    lam, U = np.linalg.eigh(0.5 * (S + S.T))
    lmax = max(float(np.max(lam)), 1e-300)
    lam = np.maximum(lam, 0.0)
    A = U * np.sqrt(lam)
    inv = np.where(lam > 1e-12 * lmax, 1.0 / np.sqrt(np.where(lam > 0, lam, 1.0)), 0.0)
    Ainv = (U * inv).T
    return A, Ainv


def _he3(z):
    """He_abc(z) (m, n, n, n)."""
    n = z.shape[1]
    d = np.eye(n)
    return (np.einsum("ja,jb,jc->jabc", z, z, z) - np.einsum("ja,bc->jabc", z, d)
            - np.einsum("jb,ac->jabc", z, d) - np.einsum("jc,ab->jabc", z, d))


def resummed_theory(net, K0, width, n_r=12, n_t=8, third=True):
    """Resummed prediction at width N (Eq. 4.99-4.102): N Cov(Khat^L) (P,P,P,P) and E Khat^L (P,P).

    Returns dict(cov=N Cov(Khat^L), mean=E Khat^L, mean_m=E mhat^L (reduced), stats=(mu, Sigma, kappa)
    in x-coordinates). ``third=False``: Gaussian closure (kappa = 0 throughout, T dropped)."""
    if net.block not in RESUMMED_BLOCKS:
        raise NotImplementedError(f"order='resummed' exists for the closed-chain blocks {RESUMMED_BLOCKS}; "
                                  f"got block={net.block!r}")
    if width is None:
        raise ValueError("order='resummed' needs the width N (the prediction is not a series in 1/N)")
    N = float(width)
    K0 = np.asarray(K0, dtype=float)
    P = K0.shape[0]
    if P > 4:
        raise NotImplementedError(f"order='resummed' needs P <= 4 inputs (got P={P} rows of K0/X): its "
                                  "state-dependent noise Q uses moments of up to 4 distinct inputs")
    eng = _ENGINES[net.block](net, K0, n_r, n_t)
    co = eng.co
    n = co.n
    if third and n > MAX_STATE_DIM:
        raise NotImplementedError(
            f"order='resummed' needs at most {MAX_STATE_DIM} state coordinates (its degree-7 cubature has "
            f"4^n points); this net and K0 give n = {n} (P = {P} inputs, block {net.block!r}): use order=2")
    z, w = cubature(n, 7 if third else 5)
    He = _he3(z) if third else None
    c1, t2 = eng.initial()
    mu = eng.point(0).astype(float)
    Sig = c1 / N
    kap = t2 / N ** 2 if third else np.zeros((n, n, n))
    for l in range(net.depth):
        A, Ainv = _sqrt_and_inv(Sig)
        X = _project(co, mu[None] + z @ A.T)
        if third:
            kt = np.einsum("abc,ia,jb,kc->ijk", kap, Ainv, Ainv, Ainv)
            wt = w * (1.0 + np.einsum("ijk,mijk->m", kt, He) / 6.0)
        else:
            wt = w
        F = _drift(eng, X)
        Q = eng.Q(X)
        mu_n = wt @ F
        D = F - mu_n
        Sig_n = np.einsum("m,ma,mb->ab", wt, D, D) + np.einsum("m,mab->ab", wt, Q) / N
        if third or net.block == "two_layer":
            R, T = eng.RT(l)
            Sig_n = Sig_n + R / N ** 2
        if third:
            C = np.einsum("m,ma,mbc->abc", wt, D, Q) / N          # special slot a
            kap = (np.einsum("m,ma,mb,mc->abc", wt, D, D, D) + C + np.transpose(C, (1, 0, 2))
                   + np.transpose(C, (2, 1, 0)) + T / N ** 2)
        mu, Sig = mu_n, 0.5 * (Sig_n + Sig_n.T)
    nk = co.nk
    out = dict(cov=co.full4(N * Sig[:nk, :nk]), mean=co.full2(mu[:nk]), stats=(mu, Sig, kap))
    if n > nk:
        out["mean_m"] = mu[nk:]
    return out
