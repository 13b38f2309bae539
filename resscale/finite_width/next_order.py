"""Next order in 1/N for the closed-chain blocks (docs/theory.md Sec. 4.12, Eq. 4.80-4.92).

For a Markov chain s^l = f(s^{l-1}) + xi^l in R^n with E[xi^l | F_{l-1}] = 0 exactly and
conditional cumulants

    N   Cov(xi | s)   = Q(s) + R(s)/N          (exact for both blocks: R = 0 reduced)
    N^2 kappa3(xi | s) = T(s) + O(1/N)          kappa4(xi | s) = O(1/N^3)

the deviation delta = s - s_mf from the mean-field path has moments

    E delta    = a1/N + a2/N^2,   N Cov delta = c1 + c2/N,   N^2 kappa3(delta) = t2   (+ higher orders)

obeying the layer recursions (Eq. 4.84-4.88; J, H, T3, T4 the 1st..4th derivatives of f at
the mean-field point, Q', Q'' those of Q)

    a1' = J a1 + 1/2 H:c1
    c1' = J c1 J^T + Q
    a2' = J a2 + 1/2 H:(c2 + a1 a1) + 1/6 T3:t2 + 1/2 T3[a1, c1] + 1/8 T4[c1, c1]
    c2' = J c2 J^T + sym[J H:(t2 + 2 a1 c1)] + 1/2 H c1 c1 H^T + sym[J T3[c1, c1]]
          + Q'.a1 + 1/2 Q'':c1 + R
    t2' = J J J t2 + sym3[J J H c1 c1] + sym3[J c1 Q'] + T

V1 = c2, M2 = a2 restricted to the kernel coordinates. The state lives in "x-coordinates":
the upper triangle of Khat (a <= b), followed by mhat for the reduced block.

Derivatives of f: finite differences of the closed-form Jacobian (_jac_G / jac_G_batch):
H central (step 1e-4 of the kernel scale, error ~1e-8), T3 mixed second differences (step
1e-3: ~1e-6), T4 mixed third differences (step 2e-3: ~1e-5 relative; measured h^2 convergence,
M2 within 1e-4 relative of the step -> 0 extrapolation for relu/gelu, P = 2, L = 4). Q' central (1e-4),
1/2 Q'':c1 second differences along the eigen-directions of c1 (step 1e-3: ~1e-6).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..kernel_recursion import mean_field_kernel, mean_field_mean
from .linalg import jac_G_batch
from .walk_integrals import _PairIntegrals

__all__ = ["next_order_theory", "NEXT_ORDER_BLOCKS", "feature_cumulants", "gaussian_moment", "estimate_seconds"]

NEXT_ORDER_BLOCKS = ("two_layer", "reduced")


# ---------------------------------------------------------------- coordinates
class _Coords:
    """x-coordinates: upper triangle of K (pairs a <= b), then (optionally) the P means."""

    def __init__(self, P, with_mean):
        self.P = P
        self.pairs = [(a, b) for a in range(P) for b in range(a, P)]
        self.nk = len(self.pairs)
        self.n = self.nk + (P if with_mean else 0)
        self.idx = np.zeros((P, P), dtype=int)
        for p, (a, b) in enumerate(self.pairs):
            self.idx[a, b] = self.idx[b, a] = p
        # vec(K) (P^2) = B @ x_K ;  x_K = R @ vec(K)
        self.B = np.zeros((P * P, self.nk))
        self.R = np.zeros((self.nk, P * P))
        for p, (a, b) in enumerate(self.pairs):
            self.B[a * P + b, p] = 1.0
            self.B[b * P + a, p] = 1.0
            self.R[p, a * P + b] = 1.0

    def K_of(self, X):
        """(B, n) -> K (B, P, P)."""
        return (X[:, :self.nk] @ self.B.T).reshape(-1, self.P, self.P)

    def x_of(self, K, m=None):
        x = K.reshape(K.shape[:-2] + (self.P * self.P,)) @ self.R.T
        if m is not None:
            x = np.concatenate([x, m], axis=-1)
        return x

    def full4(self, C):
        """(n, n) covariance in x-coordinates -> (P, P, P, P) kernel block."""
        i = self.idx
        return C[i[:, :, None, None], i[None, None, :, :]]

    def full2(self, a):
        return a[self.idx]


# ---------------------------------------------------------------- moments and feature cumulants
def gaussian_moment(S, idx):
    """E[x_{i1} ... x_{ik}] for x ~ N(0, S) (Isserlis); S (..., P, P)."""
    idx = tuple(idx)
    if len(idx) == 0:
        return np.ones(S.shape[:-2])
    if len(idx) % 2:
        return np.zeros(S.shape[:-2])
    first, rest = idx[0], idx[1:]
    out = np.zeros(S.shape[:-2])
    for j in range(len(rest)):
        out = out + S[..., first, rest[j]] * gaussian_moment(S, rest[:j] + rest[j + 1:])
    return out


def phi_moment_table(phi, Zs, max_order, n_r=12, n_t=8):
    """{sorted index tuple: (B,) E[prod phi(z_i)]}, z ~ N(0, Zs[b]), all multisets of size
    1..max_order (P <= 4: the same-layer rule of Sec. 4.7 handles at most 4 distinct inputs, Sec. 4.12.2)."""
    B, P = Zs.shape[0], Zs.shape[1]
    if P > 4 and max_order > 2:
        raise NotImplementedError("phi_moment_table: moments of more than 2 activations need P <= 4 inputs "
                                  "(the same-layer rule integrates at most 4 distinct inputs); larger P goes "
                                  "through 4-input sub-kernels (next_order_theory)")
    pi = _PairIntegrals(phi, Zs, walk=False, n_r=n_r, n_t=n_t)
    kk = np.arange(B)
    tab = {(): np.ones(B)}
    for k in range(1, max_order + 1):
        for idx in itertools.combinations_with_replacement(range(P), k):
            if phi.odd and k % 2:
                tab[idx] = np.zeros(B)
            elif len(set(idx)) == 1:
                tab[idx] = _moment_1d(phi, Zs[:, idx[0], idx[0]], k)
            else:
                tab[idx] = np.asarray(pi.same(kk, idx), dtype=float)
    return tab


def _moment_1d(phi, q, k, n=160, cut=12.0):
    """E[phi(sqrt(q) x)^k], x ~ N(0,1), Gauss-Legendre on each half-line [0, cut] (kink at 0
    exact). The same-layer rule's 1-D path (Laguerre in x^2/2 on both half-lines) integrates
    phi(r)^k + phi(-r)^k, which is not smooth in r^2 for relu and odd k: measured error 1.4e-3
    relative for E relu(z), so single-input moments are taken from this rule instead."""
    x, w = np.polynomial.legendre.leggauss(n)
    r = 0.5 * cut * (x + 1.0)
    w = 0.5 * cut * w * np.exp(-0.5 * r * r) / np.sqrt(2.0 * np.pi)
    sd = np.sqrt(np.maximum(np.asarray(q, dtype=float), 0.0))[:, None]
    return (phi.fn(sd * r) ** k + phi.fn(-sd * r) ** k) @ w


def _features(P):
    """Features u = (y_a, y_a y_b) as index tuples (singles then all ordered pairs)."""
    return [(a,) for a in range(P)] + [(a, b) for a in range(P) for b in range(P)]


def feature_cumulants(moment, P, third=True):
    """Mean, covariance and third cumulant of u = (y, vec(y y^T)) from moments of y.

    moment : callable(sorted index tuple) -> (B,) array. Returns mean (B, F), cov (B, F, F),
    k3 (B, F, F, F) (or None), F = P + P^2.
    """
    feats = _features(P)
    F = len(feats)
    cache = {}

    def mom(*fs):
        key = tuple(sorted(sum(fs, ())))
        if key not in cache:
            cache[key] = np.asarray(moment(key), dtype=float)
        return cache[key]

    E1 = np.stack([mom(f) for f in feats], axis=-1)
    B = E1.shape[0]
    E2 = np.zeros((B, F, F))
    for r, t in itertools.combinations_with_replacement(range(F), 2):
        E2[:, r, t] = E2[:, t, r] = mom(feats[r], feats[t])
    cov = E2 - E1[:, :, None] * E1[:, None, :]
    if not third:
        return E1, cov, None
    E3 = np.zeros((B, F, F, F))
    for r, t, v in itertools.combinations_with_replacement(range(F), 3):
        val = mom(feats[r], feats[t], feats[v])
        for perm in set(itertools.permutations((r, t, v))):
            E3[(slice(None),) + perm] = val
    k3 = (E3 - np.einsum("br,btv->brtv", E1, E2) - np.einsum("bt,brv->brtv", E1, E2)
          - np.einsum("bv,brt->brtv", E1, E2) + 2 * np.einsum("br,bt,bv->brtv", E1, E1, E1))
    return E1, cov, k3


def _sym3_special_last(Z):
    """Z[a,b,c] symmetric in (a,b), c the 'special' slot: sum over the 3 choices of special slot."""
    return Z + np.transpose(Z, (0, 2, 1)) + np.transpose(Z, (2, 1, 0))


def _sym3_special_first(Z):
    """Z[a,b,c] symmetric in (b,c), a the special slot."""
    return Z + np.transpose(Z, (1, 0, 2)) + np.transpose(Z, (2, 1, 0))


# ---------------------------------------------------------------- finite differences of f
def _stencil(n, h2, h3, h4):
    """Points (offsets) and bookkeeping for H, T3, T4 from a Jacobian function."""
    pts = [np.zeros(n)]
    e = np.eye(n)
    for j in range(n):
        pts += [h2 * e[j], -h2 * e[j]]
    pairs = list(itertools.combinations_with_replacement(range(n), 2))
    for j, k in pairs:
        for s1, s2 in itertools.product((1, -1), (1, -1)):
            pts.append(h3 * (s1 * e[j] + s2 * e[k]))
    triples = list(itertools.combinations_with_replacement(range(n), 3))
    for j, k, l in triples:
        for s in itertools.product((1, -1), repeat=3):
            pts.append(h4 * (s[0] * e[j] + s[1] * e[k] + s[2] * e[l]))
    return np.array(pts), pairs, triples


def _derivs_from_jac(jac, x, scale, n_k):
    """J, H, T3, T4 of f at x from a batched Jacobian function jac(X (B, n)) -> (B, n, n)."""
    n = x.shape[0]
    h2, h3, h4 = 1e-4 * scale, 1e-3 * scale, 2e-3 * scale
    off, pairs, triples = _stencil(n, h2, h3, h4)
    Js = jac(x[None, :] + off)
    J = Js[0]
    i = 1
    H = np.zeros((n, n, n))
    for j in range(n):
        H[:, :, j] = (Js[i] - Js[i + 1]) / (2 * h2)
        i += 2
    T3 = np.zeros((n, n, n, n))
    for j, k in pairs:
        d = (Js[i] - Js[i + 1] - Js[i + 2] + Js[i + 3]) / (4 * h3 * h3)
        T3[:, :, j, k] = T3[:, :, k, j] = d
        i += 4
    T4 = np.zeros((n, n, n, n, n))
    signs = list(itertools.product((1, -1), repeat=3))
    for j, k, l in triples:
        d = sum(s[0] * s[1] * s[2] * Js[i + q] for q, s in enumerate(signs)) / (8 * h4 ** 3)
        for perm in set(itertools.permutations((j, k, l))):
            T4[(slice(None), slice(None)) + perm] = d
        i += 8
    # symmetrise over the derivative slots (f is smooth; averages the difference errors)
    H = 0.5 * (H + np.swapaxes(H, 1, 2))
    T3 = sum(np.transpose(T3, (0,) + p) for p in itertools.permutations((1, 2, 3))) / 6.0
    T4 = sum(np.transpose(T4, (0,) + p) for p in itertools.permutations((1, 2, 3, 4))) / 24.0
    return J, H, T3, T4


def _dQ(Qfun, x, scale):
    """Q'[p, q, r] = dQ_pq / dx_r (central, step 1e-4 of the kernel scale)."""
    n = x.shape[0]
    h = 1e-4 * scale
    e = np.eye(n)
    Qs = Qfun(np.concatenate([x[None] + h * e, x[None] - h * e]))
    return np.moveaxis((Qs[:n] - Qs[n:]) / (2 * h), 0, 2)


def _half_Q2(Qfun, x, c1, scale, Q0):
    """1/2 Q'':c1 from second differences along the eigen-directions of c1 (step 1e-3)."""
    lam, U = np.linalg.eigh(0.5 * (c1 + c1.T))
    keep = lam > 1e-14 * max(float(np.max(np.abs(lam))), 1e-300)
    lam, U = lam[keep], U[:, keep]
    if lam.size == 0:
        return np.zeros_like(Q0)
    h = 1e-3 * scale
    k = lam.size
    Qs = Qfun(np.concatenate([x[None] + h * U.T, x[None] - h * U.T]))
    d2 = (Qs[:k] + Qs[k:] - 2 * Q0[None]) / (h * h)
    return 0.5 * np.einsum("i,ipq->pq", lam, d2)


# ---------------------------------------------------------------- the generic recursion
def _step(st, J, H, T3, T4, Q, dQ, hQ2, R, T):
    """One layer of Eq. 4.84-4.88 (all inputs in x-coordinates, at the mean-field point)."""
    a1, c1, a2, c2, t2 = st["a1"], st["c1"], st["a2"], st["c2"], st["t2"]
    na1 = J @ a1 + 0.5 * np.einsum("pij,ij->p", H, c1)
    nc1 = J @ c1 @ J.T + Q
    na2 = (J @ a2 + 0.5 * np.einsum("pij,ij->p", H, c2 + np.outer(a1, a1))
           + np.einsum("pijk,ijk->p", T3, t2) / 6.0
           + 0.5 * np.einsum("pijk,i,jk->p", T3, a1, c1)
           + 0.125 * np.einsum("pijkl,ij,kl->p", T4, c1, c1))
    X = np.einsum("ai,bjk,ijk->ab", J, H, t2 + 2 * np.einsum("j,ik->ijk", a1, c1))
    Y = np.einsum("ai,bjkl,ij,kl->ab", J, T3, c1, c1)
    HH = 0.5 * np.einsum("ajk,blm,jl,km->ab", H, H, c1, c1)
    nc2 = (J @ c2 @ J.T + 0.5 * (X + X.T) + HH + 0.5 * (Y + Y.T)
           + np.einsum("pqj,j->pq", dQ, a1) + hQ2 + R)
    JC = J @ c1
    Z1 = np.einsum("ai,bj,ckl,ik,jl->abc", J, J, H, c1, c1)       # special slot c
    Z2 = np.einsum("aj,bcj->abc", JC, dQ)                          # special slot a
    nt2 = (np.einsum("ai,bj,ck,ijk->abc", J, J, J, t2) + _sym3_special_last(Z1)
           + _sym3_special_first(Z2) + T)
    sym = lambda A: 0.5 * (A + A.T)                                 # noqa: E731
    return dict(a1=na1, c1=sym(nc1), a2=na2, c2=sym(nc2), t2=nt2)


# ---------------------------------------------------------------- blocks
class _TwoLayer:
    """Khat' = Khat + C + C^T + D (Eq. 4.70); state x = upper triangle of Khat."""

    def __init__(self, net, K0, n_r, n_t):
        self.net, self.K0, self.n_r, self.n_t = net, K0, n_r, n_t
        self.P = K0.shape[0]
        self.co = _Coords(self.P, with_mean=False)
        self.Ks = mean_field_kernel(net, K0=K0, all_layers=True)

    def initial(self):
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
        B = K.shape[0]
        G = np.zeros((B, P, P))
        E4 = np.zeros((B, P, P, P, P))
        for a, b in itertools.product(range(P), range(P)):
            G[:, a, b] = tab[tuple(sorted((a, b)))]
        for idx in itertools.product(range(P), repeat=4):
            E4[(slice(None),) + idx] = tab[tuple(sorted(idx))]
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


_ENGINES = {"two_layer": _TwoLayer, "reduced": _Reduced}


# Measured range of validity (docs/validation.md, "Next order in 1/N (issue 10)",
# scripts/validate_next_order.py; erf/relu/gelu, two_layer and reduced, N = 8..128):
#   order=1: the leading-order N Cov is within 5% of Monte-Carlo at every point with eps < 0.051
#            (its error is ~ eps: e.g. 17% at eps = 0.18);
#   order=2: V + V1/N within 5% at every point with eps^2 < 0.0605 (eps < 0.25); above, 4 of 6 rows
#            fail (5.5-15%: the series is asymptotic-like, error ~ 0.3-1 x eps^2, at N = 8-12).
VALIDITY = {1: 0.05, 2: 0.06}


def validity_warning(fw):
    """A one-line warning when the width is outside the measured range of validity, else None."""
    if fw.width is None:
        return None
    eps = fw.expansion_ratio
    if not np.isfinite(eps):
        return None
    o = 1 if fw.order == 1 else 2
    par = eps ** o
    lim = VALIDITY[o]
    if par <= lim:
        return None
    if o == 1:
        return (f"warning: width N={fw.width} is outside the measured range of the leading-order theory "
                f"(expansion parameter {par:.3f} > {lim}: expect ~{100 * par:.0f}% error in N Cov); "
                "use --order 2 (next order in 1/N)")
    return (f"warning: width N={fw.width} is outside the measured range of the next-order theory "
            f"(expansion parameter eps^2 = {par:.3f} > {lim}, eps = {eps:.2f}): the 1/N series is not "
            "validated here; increase the width")


def check_next_order(net, order, resummed=False):
    """Validate ``order`` (1 or 2; with ``resummed`` also "resummed"); order=2 / "resummed" only for the
    closed-chain blocks."""
    if isinstance(order, str) and resummed and order == "resummed":
        if net.block not in _ENGINES:
            raise NotImplementedError(
                f"order='resummed' (docs/theory.md Sec. 4.12.3) is implemented for the blocks "
                f"{NEXT_ORDER_BLOCKS} (closed chains); block={net.block!r}: use order=1")
        return order
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, np.integer)) or order not in (1, 2):
        extra = ' or "resummed" (Sec. 4.12.3)' if resummed else ""
        raise ValueError(f"order must be 1 (leading 1/N theory) or 2 (next order, docs/theory.md "
                         f"Sec. 4.12){extra}, got order={order!r}")
    if order == 2 and net.block not in _ENGINES:
        raise NotImplementedError(
            f"order=2 (the next order in 1/N, docs/theory.md Sec. 4.12) is implemented for the blocks "
            f"{NEXT_ORDER_BLOCKS} (closed Markov chains of the kernel); block={net.block!r} is not "
            "closed (its next order needs the walk's six/eight-point functions): use order=1")
    return int(order)


def expansion_ratio(V, V1, M, M2, N):
    """eps = max(eps_V, eps_M): the size of the next-order term relative to the leading one at width N
    (Eq. 4.92). eps_V = max_{ab,cd} |V1_abcd| / (N sqrt(V_abab V_cdcd)) (normalised like a
    correlation, so near-zero cross entries do not blow it up); eps_M = max |M2| / (N max |M|)
    (0 where M = 0, e.g. linear phi)."""
    P = V.shape[0]
    d = np.sqrt(np.abs(np.einsum("abab->ab", V)))
    den = d[:, :, None, None] * d[None, None, :, :]
    eV = float(np.max(np.abs(V1) / np.maximum(den, 1e-300))) / N
    mM = float(np.max(np.abs(M)))
    eM = float(np.max(np.abs(M2))) / (N * mM) if mM > 1e-12 * float(np.max(np.abs(d))) else 0.0
    del P
    return max(eV, eM)


# measured seconds per layer of one next-order run with p inputs (2-core machine, loaded; erf/relu;
# gelu ~1.5x): the T4 stencil (n^3/6 x 8 Jacobians, n = p(p+1)/2 (+p)) and the n^5 contractions dominate
_SECONDS_PER_LAYER = {1: 0.03, 2: 0.12, 3: 0.55, 4: 5.5}
SUBSET = 4                  # every entry of V1 / M2 involves at most 4 inputs (Eq. 4.98)
MAX_SECONDS = 900.0         # refuse (ValueError) above this estimate; env RESSCALE_NEXT_ORDER_MAX_S


def _subsets(P):
    return [tuple(range(P))] if P <= SUBSET else list(itertools.combinations(range(P), SUBSET))


def estimate_seconds(P, depth):
    """Estimated run time of :func:`next_order_theory` for P inputs (Eq. 4.98: one run for P <= 4,
    C(P, 4) four-input sub-kernel runs above)."""
    p = min(P, SUBSET)
    return len(_subsets(P)) * depth * _SECONDS_PER_LAYER[p]


def check_cost(P, depth, what="K0"):
    """ValueError when the next-order run for P inputs is estimated above the limit."""
    import os
    lim = float(os.environ.get("RESSCALE_NEXT_ORDER_MAX_S", MAX_SECONDS))
    est = estimate_seconds(P, depth)
    if est > lim:
        n = len(_subsets(P))
        raise ValueError(
            f"order=2 with P={P} inputs (rows of {what}) needs {n} four-input sub-kernel runs of "
            f"{depth} layers (Eq. 4.98), estimated ~{est:.3g} s > the limit {lim:g} s "
            "(RESSCALE_NEXT_ORDER_MAX_S): use fewer inputs (rows of X / K0), a shallower net, order=1, "
            "or raise the limit")
    return est


def next_order_theory(net, K0, n_r=12, n_t=8):
    """V, V1, M, M2 (and the state statistics) of the closed-chain blocks (Eq. 4.84-4.90).

    Returns a dict with V, V1 (P,P,P,P), M, M2 (P,P) and, for the reduced block, the mean
    channel M_mean, M2_mean (P,); ``stats``: the final x-coordinate moments (a1, c1, a2, c2, t2)
    (P <= 4; None above). P > 4: sub-kernel exactness (Eq. 4.98): the chain restricted to a
    subset of the inputs is the chain of that subset, so every entry (at most 4 distinct inputs)
    is taken from the run on a 4-input sub-kernel containing its inputs (C(P, 4) runs).
    """
    if net.block not in _ENGINES:
        raise NotImplementedError(
            f"order=2 (the next order in 1/N, docs/theory.md Sec. 4.12) is implemented for the blocks "
            f"{NEXT_ORDER_BLOCKS} (closed chains); got block={net.block!r}: use order=1")
    K0 = np.asarray(K0, dtype=float)
    P = K0.shape[0]
    if P <= SUBSET:
        return _next_order_single(net, K0, n_r, n_t)
    out = dict(V=np.zeros((P,) * 4), V1=np.zeros((P,) * 4), M=np.zeros((P, P)), M2=np.zeros((P, P)),
               stats=None, Ks=mean_field_kernel(net, K0=K0, all_layers=True))
    if net.block == "reduced":
        out["M_mean"], out["M2_mean"] = np.zeros(P), np.zeros(P)
    for sub in _subsets(P):
        s = np.array(sub)
        r = _next_order_single(net, K0[np.ix_(s, s)], n_r, n_t)
        ix4 = np.ix_(s, s, s, s)
        out["V"][ix4], out["V1"][ix4] = r["V"], r["V1"]
        out["M"][np.ix_(s, s)], out["M2"][np.ix_(s, s)] = r["M"], r["M2"]
        if "M_mean" in out:
            out["M_mean"][s], out["M2_mean"][s] = r["M_mean"], r["M2_mean"]
    return out


def _next_order_single(net, K0, n_r, n_t):
    eng = _ENGINES[net.block](net, np.asarray(K0, dtype=float), n_r, n_t)
    co = eng.co
    n = co.n
    c1, t2 = eng.initial()
    st = dict(a1=np.zeros(n), c1=c1, a2=np.zeros(n), c2=np.zeros((n, n)), t2=t2)
    for l in range(net.depth):
        x, sc = eng.point(l), eng.scale(l)
        J, H, T3, T4 = _derivs_from_jac(eng.jac, x, sc, co.nk)
        Q0 = eng.Q(x[None])[0]
        dQ = _dQ(eng.Q, x, sc)
        hQ2 = _half_Q2(eng.Q, x, st["c1"], sc, Q0)
        R, T = eng.RT(l)
        st = _step(st, J, H, T3, T4, Q0, dQ, hQ2, R, T)
    nk = co.nk
    out = dict(V=co.full4(st["c1"][:nk, :nk]), V1=co.full4(st["c2"][:nk, :nk]),
               M=co.full2(st["a1"][:nk]), M2=co.full2(st["a2"][:nk]), stats=st, Ks=eng.Ks)
    if n > nk:
        out["M_mean"], out["M2_mean"] = st["a1"][nk:], st["a2"][nk:]
    return out
