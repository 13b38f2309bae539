"""relu in the full block's next order: the closed-form population part and the kink terms (docs/theory.md Sec. 4.12.6).

For relu the per-seed-pair map of Sec. 4.12.5 is evaluated pointwise (relu'' = relu''' = 0 almost
everywhere), but the expectations over the seeds need the distributional derivatives
relu'' = delta, relu''' = delta' at the tagged neuron. In the coefficients that V1, M2 use
(Eq. 4.107-4.108) these enter affinely, with one kink at a time (Eq. 4.111):

    E[I] = E[I_pointwise] + sum_{tagged n, layer l, component a} { p_la E[g_la | x^l_a = 0] - p_la m_la'(0) },
    m_la(s) = E[h_la | x^l_a = s],   p_la = 1 / sqrt(2 pi K^l_aa),

where g_la, h_la are the coefficients of delta(x^l_a) and delta'(x^l_a) in the integrand I. At
t = u = 0 the tagged trajectory is linear in its seeds, x^l_a = w_la . omega with |w_la|^2 = K^l_aa, so
conditioning on x^l_a = s is a projection of the Sobol-normal seeds (Eq. 4.112). One pair of rows at
s = +/- eps sqrt(K^l_aa) with the markers relu'' -> 1, relu''' -> -/+ 1 / (eps sqrt(K^l_aa)) gives both
terms: (D_+ + D_-) / 2 = (g_+ + g_-)/2 - (h_+ - h_-) / (2 eps sqrt K), with D = I(markers) - I(pointwise),
error O(eps^2) (h is continuous in the seeds). The diagonal phi_a^2 of the tagged neuron is composed as
relu^2 (derivatives 2 relu, 2 H, 2 delta, 2 delta'), since products of distributions at the same
point are not defined. Only the x-neuron is marked: the V1 and f4 integrands are symmetric under
x <-> y (t <-> u), so their y-kinks equal their x-kinks; f3(x, x, x) has x-kinks only.
"""
from __future__ import annotations

import math

import numpy as np

from . import jets as J

__all__ = ["relu_G_jet", "kink_cells", "kink_rows", "KINK_EPS"]

KINK_EPS = 1e-3          # the finite-difference half-step of m'(0), in units of sqrt(K^l_aa)


def _arccos_kernel_derivatives(rho, kmax=J.KMAX):
    """d^k/drho^k of J(rho) = sqrt(1 - rho^2) + (pi - arccos rho) rho, k = 0..kmax (array (kmax+1,) + rho.shape).

    J' = pi - arccos rho, J'' = g = (1 - rho^2)^(-1/2), and g^(n+1) = [(2n+1) rho g^(n) + n^2 g^(n-1)] / (1 - rho^2)
    (Leibniz on (1 - rho^2) g' = rho g)."""
    rho = np.asarray(rho, dtype=float)
    s = 1.0 - rho * rho
    if np.any(s <= 1e-12):
        raise ValueError("order=2 for block='full' needs distinct inputs: a 2x2 kernel of relu's arc-cosine map "
                         "is singular at some layer (|correlation| = 1); drop duplicate inputs")
    out = np.zeros((kmax + 1,) + rho.shape)
    out[0] = np.sqrt(s) + (math.pi - np.arccos(rho)) * rho
    if kmax >= 1:
        out[1] = math.pi - np.arccos(rho)
    g = [1.0 / np.sqrt(s)]
    if kmax >= 3:
        g.append(rho * g[0] / s)
    for n in range(1, kmax - 2):
        g.append(((2 * n + 1) * rho * g[n] + n * n * g[n - 1]) / s)
    for k in range(2, kmax + 1):
        out[k] = g[k - 2]
    return out


def relu_G_jet(Kj, P):
    """E[relu(u) relu(v)^T] at the jet kernel Kj (B, P, P, NC): the arc-cosine kernel (Eq. 2.5),
    G_aa = K_aa / 2, G_ab = sqrt(K_aa K_bb) J(rho) / (2 pi), rho = K_ab / sqrt(K_aa K_bb), in jets."""
    G = np.zeros_like(Kj)
    for a in range(P):
        G[:, a, a] = 0.5 * Kj[:, a, a]
        for b in range(a + 1, P):
            s = J.sqrt(J.mul(Kj[:, a, a], Kj[:, b, b]))
            rho = J.mul(Kj[:, a, b], J.recip(s))
            Jr = J.compose(_arccos_kernel_derivatives(rho[..., 0]), rho)
            G[:, a, b] = G[:, b, a] = J.mul(s, Jr) / (2.0 * math.pi)
    return G


def tagged_outer(xj, layer, kink=None):
    """relu(x) relu(x)^T of a tagged neuron's jet xj (B, P, NC) at ``layer`` (x = x^layer), with the
    diagonal composed as relu^2 and, on the rows of ``kink`` whose layer matches, the markers
    relu''(x_a) -> m1, relu'''(x_a) -> m2 at component a (Eq. 4.111)."""
    d = J.phi_derivatives("relu", xj[..., 0], J.KMAX)          # (K+1, B, P)
    if kink is not None:
        r = np.nonzero(kink["layer"] == layer)[0]
        if r.size:
            a = kink["comp"][r]
            d[2, r, a] = kink["m1"][r]
            d[3, r, a] = kink["m2"][r]
    px = J.compose(d, xj)
    out = J.outer(px, px)
    sq = np.zeros_like(d)                                      # derivatives of relu^2
    sq[0] = d[0] * d[0]
    sq[1] = 2.0 * d[0]
    sq[2] = 2.0 * d[1]
    sq[3] = 2.0 * d[2]
    sq[4] = 2.0 * d[3]
    diag = J.compose(sq, xj)
    for p in range(xj.shape[1]):
        out[:, p, p] = diag[:, p]
    return out


def kink_cells(net, Ks):
    """The kinks of the tagged x-neuron that reach the used coefficients: x^l_a, l = 1..L-1 (x^0 does not
    move with (t, u); phi(x^L) is not used). Per cell (l, a): the seed direction w (L+1, P) with
    x^l_a = w . omega at t = u = 0 and its variance |w|^2 = K^l_aa (Eq. 4.112)."""
    L = net.depth
    P = Ks.shape[-1]
    chols = [np.linalg.cholesky(Ks[0])]
    for m in range(1, L):
        chols.append(net.alpha * np.linalg.cholesky((Ks[m] - Ks[m - 1]) / net.alpha ** 2))
    cells = []
    for l in range(1, L):
        for a in range(P):
            w = np.zeros((L + 1, P))
            for m in range(l + 1):
                w[m] = chols[m][a]
            cells.append((l, a, w, float(np.sum(w * w))))
    return cells


def kink_rows(Z, cells, eps=KINK_EPS):
    """Rows for the kink estimator from standard-normal seed pairs Z (n, 2, L+1, P): for every cell and
    point, the x-seeds projected onto x^l_a = +eps sqrt(K^l_aa) and -eps sqrt(K^l_aa) (common random
    numbers; y-seeds free). Returns (seeds_x, seeds_y, kink spec, weights) with sum(weights * D) the
    cell sum of Eq. 4.111 (weights p_la / (2 n))."""
    n = Z.shape[0]
    zx = Z[:, 0].reshape(n, -1)
    sx, sy, lay, comp, m1, m2, wt = [], [], [], [], [], [], []
    for (l, a, w, var) in cells:
        wf = w.ravel()
        perp = zx - np.outer(zx @ wf, wf) / var
        h = eps * math.sqrt(var)
        p0 = 1.0 / math.sqrt(2.0 * math.pi * var)
        for sgn in (1.0, -1.0):
            sx.append((perp + (sgn * h / var) * wf).reshape(Z[:, 0].shape))
            sy.append(Z[:, 1])
            lay.append(np.full(n, l))
            comp.append(np.full(n, a))
            m1.append(np.ones(n))
            m2.append(np.full(n, -sgn / h))
            wt.append(np.full(n, p0 / (2.0 * n)))
    cat = np.concatenate
    spec = dict(layer=cat(lay), comp=cat(comp), m1=cat(m1), m2=cat(m2))
    return cat(sx), cat(sy), spec, cat(wt)
