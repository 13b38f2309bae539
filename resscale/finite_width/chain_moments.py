"""Coordinates and Gaussian moments for the closed-chain next order (docs/theory.md Sec. 4.12).

* :class:`_Coords`: the x-coordinates of a chain state (upper triangle of a P x P kernel, then
  optionally the P means) and the maps between them and (P,P) / (P,P,P,P) arrays;
* :func:`gaussian_moment`: E[x_i1 ... x_ik] for x ~ N(0, S) (Isserlis);
* :func:`phi_moment_table`: E[prod phi(z_i)] up to the sixth order (the same-layer rule, Sec. 4.7);
* :func:`feature_cumulants`: mean, covariance, third cumulant of the features u = (y, y y^T).
"""
from __future__ import annotations

import itertools

import numpy as np

from .walk_integrals import _PairIntegrals

__all__ = ["gaussian_moment", "phi_moment_table", "feature_cumulants"]


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
