"""Next order in 1/N for the FULL block: von Mises expansion to fourth order (docs/theory.md Sec. 4.12.5).

The full block is not a closed chain of the kernel (the residual stream keeps per-neuron
memory), but Khat^L is exactly (in law) a functional T of the empirical measure of N i.i.d.
neuron seeds omega_i = (u^0, e^1, ..., e^L) (Sec. 4.2, Eq. 4.104):

    x^0 = chol(K0) u^0,  x^l = x^{l-1} + alpha chol(C^l) e^l,
    C^l = sigma_w2 E_Q[phi(x^{l-1}) phi(x^{l-1})^T] + sigma_b2,   T(Q) = E_Q[x^L x^L^T].

With eps = P_N - P and the canonical (degenerate) kernels f_k = k-th derivative of T at the
seed law P in the directions delta_omega - P, the V-statistic algebra gives (Eq. 4.107-4.108)

    N Cov(Khat_i, Khat_j) = E f1_i f1_j + (1/N) V1_ij + O(1/N^2),
    V1_ij = sym E[f1_i(X) f2_j(X, X)] + 1/2 E[f2_i(X, Y) f2_j(X, Y)] + sym E[f1_i(X) f3_j(X, Y, Y)],
    E Khat = K + M / N + M2 / N^2,   M = 1/2 E f2(X, X),
    M2 = 1/6 E f3(X, X, X) + 1/8 E f4(X, X, Y, Y)

(sym A_ij = (A_ij + A_ji) / 2; X, Y independent seeds). For a pair of seeds (x, y) the map
(t, u) -> T(P + t (delta_x - P) + u (delta_y - P)) is explicit: the P-part of the population
stays a Gaussian walk whose kernel K^l(t, u) follows the mean-field map with the mixed drivers,
and the two tagged neurons are propagated by hand. It is evaluated in truncated Taylor
arithmetic (:mod:`.jets`, the box t^3 u^2), which gives every f_k above exactly in one pass.
The Gaussian integral G(K^l(t, u)) is expanded about the mean-field K^l in the Cholesky
coordinates of each 2x2 sub-block (Eq. 4.106: moment tensors A_kpq by composite Gauss-Legendre,
once per layer), so the P-part costs no quadrature per seed.

The remaining expectations over the seeds (dimension 2 (L + 1) P) are integrated by randomized
quasi-Monte-Carlo (scrambled Sobol points, R independent scrambles; the spread of the R
estimates gives the standard error reported with V1 and M2). The integrand uses phi up to its
5th derivative at the tagged neuron, pointwise. relu (Sec. 4.12.6, :mod:`.full_kinks`): the
population part in the arc-cosine closed form, and the delta / delta' terms that relu^(2) and
relu^(3) put into f3, f4 added by conditioning the seeds on the kinks (Eq. 4.111-4.112). A smooth
user callable: derivatives 3-5 by central differences (:func:`.jets.callable_derivatives`); callables
with declared kinks are refused.
"""
from __future__ import annotations

import math
import os

import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from ..kernel_recursion import mean_field_kernel
from . import full_kinks as KN
from . import jets as J

__all__ = ["full_next_order", "FULL_NEXT_ORDER_ACTIVATIONS", "estimate_full_seconds", "DEFAULT_SAMPLES"]

FULL_NEXT_ORDER_ACTIVATIONS = J.SMOOTH_BUILTINS + ("relu",)
DEFAULT_SAMPLES = 2 ** 12          # seed pairs per scramble
DEFAULT_SCRAMBLES = 16
_MAX_PANELS = 400                  # composite Gauss-Legendre panels per axis (moment tensors)
# measured seconds per (seed pair x layer) on the 2-core machine, P = 2 / 3 (batch 1024)
_SEC_PER_PAIR_LAYER = {1: 5e-6, 2: 1.3e-5, 3: 3.5e-5}
_SEC_ENSEMBLE_ROW_NEURON_LAYER = 2.7e-6   # the ensemble pass (Eq. 4.113), P = 2; ~ P^2


def _kink_pairs(P, depth, n_pairs):
    """Seed-pair evaluations of relu's kink terms (Eq. 4.111): per scramble and kink cell (layer 1..L-1,
    component a), n / 16 points x 2 (the +/- rows) x 2 (marked and pointwise passes)."""
    return 4 * (max(2, n_pairs // 16) if n_pairs else 0) * max(depth - 1, 0) * P


def estimate_full_seconds(P, depth, n_pairs, activation=None, t3="pairs"):
    """Rough run time of :func:`full_next_order` (seconds) for ``n_pairs`` seed pairs in all;
    ``activation``: :func:`phi_key` of the net ("relu" adds its kink passes, Sec. 4.12.6);
    ``t3="ensemble"`` adds the ensemble pass (Eq. 4.113: nk^2 rows x 2 n_pairs tagged neurons)."""
    pairs = n_pairs + (_kink_pairs(P, depth, n_pairs) if activation == "relu" else 0)
    sec = _SEC_PER_PAIR_LAYER.get(P, 3.5e-5 * (P / 3.0) ** 3) * depth * pairs
    if t3 == "ensemble":
        nk = P * (P + 1) // 2
        sec += _SEC_ENSEMBLE_ROW_NEURON_LAYER * (P / 2.0) ** 2 * nk * nk * 2 * n_pairs * depth
    return sec


def _samples(n_samples):
    n = n_samples if n_samples is not None else int(os.environ.get("RESSCALE_FULL_NO_SAMPLES", DEFAULT_SAMPLES))
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 2 or n & (n - 1):
        raise ValueError(f"next_order_samples must be a power of 2 >= 2 (Sobol points per scramble), got {n!r}")
    return int(n)


def check_full_cost(P, depth, n_samples=None, n_scrambles=DEFAULT_SCRAMBLES, activation=None):
    """ValueError when the full block's order-2 integration is estimated above the limit
    (``next_order.MAX_SECONDS``, env RESSCALE_NEXT_ORDER_MAX_S); returns the estimate in seconds."""
    from .next_order import MAX_SECONDS
    n = _samples(n_samples)
    lim = float(os.environ.get("RESSCALE_NEXT_ORDER_MAX_S", MAX_SECONDS))
    est = estimate_full_seconds(P, depth, n * n_scrambles, activation)
    if est > lim:
        raise ValueError(
            f"order=2 for block='full' with P={P} inputs, depth={depth} and {n} x {n_scrambles} seed pairs "
            f"(Sec. 4.12.5{'-4.12.6, with relu kink terms' if activation == 'relu' else ''}) is estimated at ~{est:.3g} s > the limit {lim:g} s (RESSCALE_NEXT_ORDER_MAX_S): "
            "use fewer inputs, a shallower net, fewer next_order_samples, order=1, or raise the limit")
    return est


def _is_builtin(phi):
    from ..activations import BUILTIN
    return phi.name in BUILTIN and type(phi) is type(BUILTIN[phi.name]())


def phi_key(net):
    """What the jets dispatch on: a built-in's name (closed-form derivatives), else the Activation
    (a smooth user callable: :func:`.jets.callable_derivatives`)."""
    return net.phi.name if _is_builtin(net.phi) else net.phi


def check_full_activation(net):
    """NotImplementedError unless phi has order 2 in the full block: the smooth built-ins (Sec. 4.12.5),
    relu with its kink terms (Sec. 4.12.6), or a smooth user callable (derivatives 3-5 by central
    differences). Kinked callables are refused: their delta terms are not available."""
    phi = net.phi
    if _is_builtin(phi):
        if phi.name in FULL_NEXT_ORDER_ACTIVATIONS:
            return
    elif phi.smooth and phi.supports_finite_width:
        return
    raise NotImplementedError(
        f"order=2 for block='full' (docs/theory.md Sec. 4.12.5-4.12.6) needs phi's derivatives and, at a kink, "
        f"its delta terms at a tagged neuron: built-in activations {FULL_NEXT_ORDER_ACTIVATIONS} or a smooth "
        f"callable; got activation={phi.name!r} (a callable with declared kinks): use order=1, the built-in "
        "'relu', or a closed-chain block ('reduced', 'two_layer', 'feedforward')")


# ------------------------------------------------------------------ P-part: G(K(t,u)) about K*
def _normal_rule(width):
    """Nodes and weights of E[f(z)], z ~ N(0, 1), resolving features of f of size ``width`` in z:
    composite 8-point Gauss-Legendre on [-10, 10] (tail mass 2e-23), panels <= width wide."""
    n_pan = int(min(_MAX_PANELS, max(16, math.ceil(20.0 / max(width, 1e-3)))))
    x, w = np.polynomial.legendre.leggauss(8)
    edges = np.linspace(-10.0, 10.0, n_pan + 1)
    h = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    z = (mid[:, None] + h[:, None] * x[None, :]).ravel()
    wz = (h[:, None] * w[None, :]).ravel() * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z, wz


def _moment_tensors(name, K):
    """Per pair a <= b of the mean-field kernel K: the Taylor coefficients of G_ab in the
    Cholesky coordinates (Eq. 4.106); ``name``: a built-in's name or a smooth Activation (:func:`phi_key`).

    off-diagonal: A[k, p, q] = E[phi^(k)(l11 z1) z1^k phi^(p+q)(l21 z1 + l22 z2) z1^p z2^q] / (k! p! q!),
    diagonal:     B[n] = sum_{k+m=n} E[phi^(k)(l z) phi^(m)(l z) z^n] / (k! m!),   l = sqrt(K_aa).
    """
    P = K.shape[0]
    K5 = J.KMAX
    fact = [math.factorial(k) for k in range(K5 + 1)]
    out = {}
    for a in range(P):
        l = math.sqrt(K[a, a])
        z, w = _normal_rule(1.0 / max(l, 1.0))        # phi's features have size ~1 in u = l z
        d = J.phi_derivatives(name, l * z, K5)
        B = np.zeros(K5 + 1)
        for k in range(K5 + 1):
            for m in range(K5 + 1 - k):
                B[k + m] += np.sum(w * d[k] * d[m] * z ** (k + m)) / (fact[k] * fact[m])
        out[(a, a)] = B
        for b in range(a + 1, P):
            l11 = math.sqrt(K[a, a])
            l21 = K[a, b] / l11
            r = K[b, b] - l21 * l21
            if r <= 1e-12 * K[b, b]:
                raise ValueError(
                    f"order=2 for block='full' needs distinct inputs: rows {a} and {b} of K0 give a "
                    "singular 2x2 kernel at some layer (|correlation| = 1); drop duplicate inputs")
            l22 = math.sqrt(r)
            z1, w1 = _normal_rule(1.0 / max(l11, abs(l21), 1.0))
            z2, w2 = _normal_rule(1.0 / max(l22, 1.0))
            Z1, Z2 = np.meshgrid(z1, z2, indexing="ij")
            W = w1[:, None] * w2[None, :]
            du = J.phi_derivatives(name, l11 * Z1, K5)
            dv = J.phi_derivatives(name, l21 * Z1 + l22 * Z2, K5)
            A = np.zeros((K5 + 1,) * 3)
            for k in range(K5 + 1):
                fu = W * du[k] * Z1 ** k
                for p in range(K5 + 1 - k):
                    for q in range(K5 + 1 - k - p):
                        A[k, p, q] = np.sum(fu * dv[p + q] * Z1 ** p * Z2 ** q) / (fact[k] * fact[p] * fact[q])
            out[(a, b)] = (A, (l11, l21, l22))
    return out


def _G_jet(Kj, tensors, P):
    """E_P[phi phi^T] at the jet kernel Kj (B, P, P, NC) from the moment tensors about its constant term."""
    B = Kj.shape[0]
    G = np.zeros((B, P, P, J.NC))
    K5 = J.KMAX
    for a in range(P):
        l = J.sqrt(Kj[:, a, a])
        dl = l.copy()
        dl[..., 0] = 0.0
        pw = J.powers(dl)
        co = tensors[(a, a)]
        G[:, a, a] = sum(co[n] * pw[n] for n in range(K5 + 1))
        for b in range(a + 1, P):
            A, _ = tensors[(a, b)]
            l21 = J.mul(Kj[:, a, b], J.recip(l))      # l11 = l = sqrt(K_aa): its powers are pw
            l22 = J.sqrt(Kj[:, b, b] - J.mul(l21, l21))
            d = [pw]
            for x in (l21, l22):
                x = x.copy()
                x[..., 0] = 0.0
                d.append(J.powers(x))
            acc = np.zeros((B, J.NC))
            for k in range(K5 + 1):
                for p in range(K5 + 1 - k):
                    inner = sum(A[k, p, q] * d[2][q] for q in range(K5 + 1 - k - p))
                    y = d[0][k] if p == 0 else (d[1][p] if k == 0 else J.mul(d[0][k], d[1][p]))
                    acc = acc + J.mul(y, inner)
            G[:, a, b] = acc
            G[:, b, a] = acc
    return G


# ------------------------------------------------------------------ the jet of T along two seeds
def _phi_jet(name, xj):
    return J.compose(J.phi_derivatives(name, xj[..., 0], J.KMAX), xj)


def _jet_setup(net, K0, Ks=None, tensors=None):
    """(phi key, kinked, Ks, tensors): what every jet pass shares: the mean-field kernels and, for a smooth
    phi, the moment tensors of each layer (relu's population part is the arc-cosine closed form)."""
    name = phi_key(net)
    kinked = name == "relu"
    if Ks is None:
        Ks = mean_field_kernel(net, K0=K0, all_layers=True)
    if tensors is None and not kinked:
        tensors = [_moment_tensors(name, Ks[l]) for l in range(net.depth)]
    return name, kinked, Ks, tensors


def _population_G(name, Kj, tensors, layer, P):
    """E_P[phi phi^T] at the jet kernel Kj of ``layer`` (x^layer feeds layer + 1)."""
    return KN.relu_G_jet(Kj, P) if name == "relu" else _G_jet(Kj, tensors[layer], P)


def _tagged_outer(name, xj, layer, kink=None):
    """phi(x) phi(x)^T of tagged-neuron jets xj (B, P, NC) at ``layer`` (relu: with its relu^2 diagonal and
    the kink markers, :func:`.full_kinks.tagged_outer`)."""
    if name == "relu":
        return KN.tagged_outer(xj, layer, kink)
    p = _phi_jet(name, xj)
    return J.outer(p, p)


def kernel_jet(net, K0, seeds_x, seeds_y, tensors=None, Ks=None, kink=None):
    """T(P + t (delta_x - P) + u (delta_y - P)) as a jet (B, P, P, NC) (Eq. 4.104-4.105).

    seeds_*: (B, L + 1, P) standard normals (u^0, e^1, ..., e^L) of the two tagged neurons.
    relu: the arc-cosine population part and the pointwise tagged neurons; ``kink`` (rows' layer,
    comp, m1, m2) puts the delta / delta' markers on the x-neuron (Sec. 4.12.6, Eq. 4.111)."""
    L, P = net.depth, K0.shape[0]
    B = seeds_x.shape[0]
    a, sw2, sb2 = net.alpha, net.sigma_w2, net.sigma_b2
    name, _, Ks, tensors = _jet_setup(net, K0, Ks, tensors)
    t, u = J.var(0, (B,)), J.var(1, (B,))
    wP = J.const(np.ones(B)) - t - u                       # weight of the P-part
    L0 = np.linalg.cholesky(K0)
    x = J.const(seeds_x[:, 0] @ L0.T)                      # (B, P, NC)
    y = J.const(seeds_y[:, 0] @ L0.T)
    Kj = np.broadcast_to(J.const(K0), (B, P, P, J.NC)).copy()
    for l in range(1, L + 1):
        Gp = _population_G(name, Kj, tensors, l - 1, P)
        ox, oy = _tagged_outer(name, x, l - 1, kink), _tagged_outer(name, y, l - 1)
        EQ = J.mul(wP[:, None, None], Gp) + J.mul(t[:, None, None], ox) + J.mul(u[:, None, None], oy)
        C = sw2 * EQ
        C[..., 0] += sb2
        Lc = J.cholesky(C)
        Kj = Kj + a * a * C
        x = x + a * np.einsum("bijc,bj->bic", Lc, seeds_x[:, l])
        y = y + a * np.einsum("bijc,bj->bic", Lc, seeds_y[:, l])
    return (J.mul(wP[:, None, None], Kj) + J.mul(t[:, None, None], J.outer(x, x))
            + J.mul(u[:, None, None], J.outer(y, y)))


def ensemble_kernel_jet(net, K0, seeds_x, wx, seeds_y, wy, tensors=None, Ks=None):
    """T(P + t nu_x + u nu_y) as a jet (C, P, P, NC) along two weighted ensembles of tagged neurons,
    nu_x = (1/n) sum_a wx[c, a] (delta_{x_a} - P) (and nu_y likewise; one row c per weight vector).

    By bilinearity its t u coefficient is the all-pairs average (1/(n m)) sum_ab wx_a wy_b f2(x_a, y_b)
    (Eq. 4.113): one pass over n + m tagged neurons instead of n m pair evaluations of
    :func:`kernel_jet`. seeds_x (n, L + 1, P), wx (C, n); seeds_y (m, L + 1, P), wy (C, m)."""
    L, P = net.depth, K0.shape[0]
    a, sw2, sb2 = net.alpha, net.sigma_w2, net.sigma_b2
    name, _, Ks, tensors = _jet_setup(net, K0, Ks, tensors)
    wx, wy = np.atleast_2d(wx), np.atleast_2d(wy)
    nc, n, m = wx.shape[0], wx.shape[1], wy.shape[1]
    t, u = J.var(0, (nc,)), J.var(1, (nc,))
    wP = J.const(np.ones(nc)) - wx.mean(1)[:, None] * t - wy.mean(1)[:, None] * u
    L0 = np.linalg.cholesky(K0)
    x = np.broadcast_to(J.const(seeds_x[:, 0] @ L0.T), (nc, n, P, J.NC)).copy()
    y = np.broadcast_to(J.const(seeds_y[:, 0] @ L0.T), (nc, m, P, J.NC)).copy()
    Kj = np.broadcast_to(J.const(K0), (nc, P, P, J.NC)).copy()

    def wmean(w, o):                                      # (C, k, P, P, NC) -> (C, P, P, NC)
        return np.einsum("ck,ck...->c...", w, o) / w.shape[1]

    def outer_phi(z, layer):                              # (C, k, P, NC) -> (C, k, P, P, NC)
        return _tagged_outer(name, z.reshape(-1, P, J.NC), layer).reshape(z.shape[:2] + (P, P, J.NC))

    for l in range(1, L + 1):
        Gp = _population_G(name, Kj, tensors, l - 1, P)
        EQ = (J.mul(wP[:, None, None], Gp) + J.mul(t[:, None, None], wmean(wx, outer_phi(x, l - 1)))
              + J.mul(u[:, None, None], wmean(wy, outer_phi(y, l - 1))))
        C = sw2 * EQ
        C[..., 0] += sb2
        Lc = J.cholesky(C)
        Kj = Kj + a * a * C
        x = x + a * J.matvec(Lc[:, None], J.const(seeds_x[:, l])[None])
        y = y + a * J.matvec(Lc[:, None], J.const(seeds_y[:, l])[None])
    return (J.mul(wP[:, None, None], Kj) + J.mul(t[:, None, None], wmean(wx, J.outer(x, x)))
            + J.mul(u[:, None, None], wmean(wy, J.outer(y, y))))


def ensemble_T3_pairs(net, K0, seeds_x, f1x, seeds_y, f1y, ent, tensors=None, Ks=None):
    """The pair part of N^2 kappa3 (Eq. 4.110), sum over the three slots of E f1_i(X) f1_j(Y) f2_k(X, Y)
    (symmetrized in i, j), as the all-pairs average over two independent seed samples (Eq. 4.113): one
    ensemble pass with a row per weight pair (i, j). f1x (n, nk), f1y (m, nk): f1 at the seeds."""
    P, nk = K0.shape[0], len(ent)
    ij = [(i, j) for i in range(nk) for j in range(nk)]
    group = max(1, int(2e7 // ((len(f1x) + len(f1y)) * P * P * J.NC)))     # rows per pass: <= ~160 MB
    E = np.concatenate([ensemble_kernel_jet(
        net, K0, seeds_x, np.array([f1x[:, i] for i, _ in ij[g:g + group]]), seeds_y,
        np.array([f1y[:, j] for _, j in ij[g:g + group]]), tensors=tensors, Ks=Ks).reshape(-1, P * P, J.NC)
        for g in range(0, len(ij), group)])[:, ent, J.idx(1, 1)].reshape(nk, nk, nk)
    E = 0.5 * (E + E.transpose(1, 0, 2))
    return E + E.transpose(0, 2, 1) + E.transpose(2, 1, 0)


def _pair_terms(F, ent, kinked=False, t3_pairs=True):
    """Per seed pair: the integrands of V, M, V1, M2 (Eq. 4.107-4.108) on the kernel entries ``ent``
    (flat indices a P + b, a <= b), and the zero-mean controls (Eq. 4.109; ``kinked``: without
    f3(x,y,y), f3(y,x,x), whose pointwise parts are not mean-zero for relu, Sec. 4.12.6). ``t3_pairs=False``:
    T3 without its pair part (added by :func:`ensemble_T3_pairs`); f1x, f1y are returned for it."""
    B, P = F.shape[0], F.shape[1]
    c = F.reshape(B, P * P, J.NC)[:, ent]
    g = lambda i, j: c[:, :, J.idx(i, j)]                               # noqa: E731
    f1x, f1y = g(1, 0), g(0, 1)
    f2xx, f2yy, f2xy = 2 * g(2, 0), 2 * g(0, 2), g(1, 1)
    f3xxx, f3xyy, f3yxx = 6 * g(3, 0), 2 * g(1, 2), 2 * g(2, 1)
    f4 = 4 * g(2, 2)
    o = lambda p, q: p[:, :, None] * q[:, None, :]                      # noqa: E731
    sym = lambda A: 0.5 * (A + np.swapaxes(A, -1, -2))                  # noqa: E731
    V = 0.5 * (o(f1x, f1x) + o(f1y, f1y))
    M = 0.25 * (f2xx + f2yy)
    V1 = (sym(0.5 * (o(f1x, f2xx) + o(f1y, f2yy))) + 0.5 * o(f2xy, f2xy)
          + sym(0.5 * (o(f1x, f3xyy) + o(f1y, f3yxx))))
    M2 = f3xxx / 6.0 + f4 / 8.0
    # N^2 kappa3(Khat_i, Khat_j, Khat_k) = E f1 f1 f1 + sum_3 E f1_i(X) f1_j(Y) f2_k(X, Y)   (Eq. 4.110)
    o3 = lambda p, q, r: p[:, :, None, None] * q[:, None, :, None] * r[:, None, None, :]   # noqa: E731
    T3 = 0.5 * (o3(f1x, f1x, f1x) + o3(f1y, f1y, f1y))
    if t3_pairs:
        pair = 0.5 * (o3(f1x, f1y, f2xy) + o3(f1y, f1x, f2xy))
        T3 = T3 + pair + pair.transpose(0, 1, 3, 2) + pair.transpose(0, 3, 2, 1)
    # controls with known mean: E f1 = E f2(X, Y) = E_X f3(X, Y, Y) = 0 (degenerate kernels); V, M: known
    # exactly. (Products of degenerate factors, e.g. f1(x) f1(y), also have mean 0, but as controls they
    # bias the pooled-regression estimate of V1 at P = 3 by -1% to -8% for a few % of variance: measured
    # on the exact linear case, docs/theory.md Sec. 4.12.5.)
    zero = [f1x, f1y, f2xy] + ([] if kinked else [f3xyy, f3yxx])
    return dict(V=V, M=M, V1=V1, M2=M2, T3=T3, f3xxx=f3xxx, f4=f4, zero=np.concatenate(zero, 1), f1x=f1x, f1y=f1y)


def _kink_sums(net, K0, Ks, cells, ent, iu, n_kink, rng, batch):
    """One scramble of the kink terms of V1, M2 for relu (Eq. 4.111-4.112): sum over the cells of
    p_la E[(D_+ + D_-) / 2] on n_kink Sobol seed pairs, the x-kinks doubled where the integrand is
    x <-> y symmetric (V1, f4), as a vector in the layout [V1 (upper entries), M2 (entries)]."""
    L, P = net.depth, K0.shape[0]
    sob = qmc.Sobol(d=2 * (L + 1) * P, scramble=True, seed=rng)
    Z = ndtri(np.clip(sob.random(n_kink), 1e-16, 1 - 1e-16)).reshape(n_kink, 2, L + 1, P)
    sx, sy, spec, wt = KN.kink_rows(Z, cells)
    out = 0.0
    for s0 in range(0, sx.shape[0], batch):
        sl = slice(s0, s0 + batch)
        sp = {k: v[sl] for k, v in spec.items()}
        t1 = _pair_terms(kernel_jet(net, K0, sx[sl], sy[sl], Ks=Ks, kink=sp), ent, kinked=True)
        t0 = _pair_terms(kernel_jet(net, K0, sx[sl], sy[sl], Ks=Ks), ent, kinked=True)
        d = np.concatenate([2.0 * (t1["V1"] - t0["V1"])[:, iu[0], iu[1]],
                            (t1["f3xxx"] - t0["f3xxx"]) / 6.0 + (t1["f4"] - t0["f4"]) / 4.0], 1)
        out = out + wt[sl] @ d
    return out


def full_next_order(net, K0, V=None, M=None, n_samples=None, n_scrambles=None, seed=0, batch=1024,
                    progress=None, kink_samples=None, t3="pairs"):
    """V1, M2 of the full block by the fourth-order von Mises expansion (Eq. 4.107-4.109).

    ``V``, ``M``: the exact leading-order covariance and mean shift (``finite_width``), used as
    control variates (Eq. 4.109); without them only the zero-mean controls are used.
    Returns dict(V1 (P,P,P,P), M2 (P,P), V1_se, M2_se (integration standard errors over
    scrambles, after the control variates), V_mc, M_mc, V_mc_se, M_mc_se (the leading order
    from the same seeds without controls: a built-in check against the walk theory), n_pairs,
    per_scramble (a list of dict(V1, M2, T3), one per scramble: their mean is V1, M2, T3)).
    ``n_samples``: seed pairs per scramble (a power of 2, default 2^12, env
    RESSCALE_FULL_NO_SAMPLES); ``n_scrambles``: independent Sobol scrambles (default 16).
    relu: the pointwise integrand plus the kink terms (Sec. 4.12.6, Eq. 4.111) on ``kink_samples``
    Sobol pairs per scramble and kink cell (a power of 2, default n_samples / 16).
    ``t3``: how the pair part of T3 = N^2 kappa3 (Eq. 4.110) is integrated: "pairs" (the seed pairs, as V1
    and M2) or "ensemble" (the all-pairs average over the scramble's x- and y-seeds, Eq. 4.113: 5-40 times
    less variance for ~6 times the cost at P = 2; what the next-order sensitivity uses, Sec. 4.12.7).
    """
    check_full_activation(net)
    if t3 not in ("pairs", "ensemble"):
        raise ValueError(f"t3 must be 'pairs' or 'ensemble', got {t3!r}")
    K0 = np.asarray(K0, dtype=float)
    L, P = net.depth, K0.shape[0]
    n = _samples(n_samples)
    R = int(n_scrambles or DEFAULT_SCRAMBLES)
    if R < 2:
        raise ValueError(f"n_scrambles must be >= 2 (the standard error needs the spread), got {R}")
    _, kinked, Ks, tensors = _jet_setup(net, K0)
    if kinked:
        cells = KN.kink_cells(net, Ks)
        n_kink = _samples(kink_samples if kink_samples is not None else max(2, n // 16))
    pairs = [(a, b) for a in range(P) for b in range(a, P)]
    ent = np.array([a * P + b for a, b in pairs])
    nk = len(pairs)
    iu = np.triu_indices(nk)
    known = []
    if V is not None:
        known.append(np.asarray(V, dtype=float).reshape(P * P, P * P)[np.ix_(ent, ent)][iu])
    if M is not None:
        known.append(np.asarray(M, dtype=float).reshape(-1)[ent])
    dim = 2 * (L + 1) * P
    stats = []          # per scramble: sums of y, x and of the raw V, M integrands
    kinks = []          # per scramble (relu): the kink terms of V1, M2
    t3_ens = []         # per scramble (t3="ensemble"): the pair part of T3
    ss = np.random.SeedSequence(seed)
    for r, child in enumerate(ss.spawn(R)):
        c_main, c_kink = child.spawn(2) if kinked else (child, None)
        sob = qmc.Sobol(d=dim, scramble=True, seed=np.random.default_rng(c_main))
        acc = None
        done = 0
        keep = []       # t3="ensemble": the scramble's seeds and f1
        while done < n:
            m = min(batch, n - done)
            pts = sob.random(m)
            Z = ndtri(np.clip(pts, 1e-16, 1 - 1e-16)).reshape(m, 2, L + 1, P)
            t = _pair_terms(kernel_jet(net, K0, Z[:, 0], Z[:, 1], tensors=tensors, Ks=Ks), ent, kinked,
                            t3_pairs=t3 == "pairs")
            if t3 == "ensemble":
                keep.append((Z, t["f1x"], t["f1y"]))
            y = np.concatenate([t["V1"][:, iu[0], iu[1]], t["M2"], t["T3"].reshape(m, -1)], 1)
            raw = np.concatenate([t["V"][:, iu[0], iu[1]], t["M"]], 1)
            ctl = [t["zero"]]
            if V is not None:
                ctl.append(t["V"][:, iu[0], iu[1]] - known[0])
            if M is not None:
                ctl.append(t["M"] - known[-1])
            x = np.concatenate(ctl, 1)
            part = dict(y=y.sum(0), x=x.sum(0), xx=x.T @ x, xy=x.T @ y, raw=raw.sum(0), raw2=(raw * raw).sum(0))
            acc = part if acc is None else {k: acc[k] + part[k] for k in acc}
            done += m
            if progress is not None:
                progress((r * n + done) / (R * n))
        stats.append(acc)
        if t3 == "ensemble":
            Z, f1x, f1y = (np.concatenate(v, 0) for v in zip(*keep))
            t3_ens.append(ensemble_T3_pairs(net, K0, Z[:, 0], f1x, Z[:, 1], f1y, ent, tensors=tensors, Ks=Ks).ravel())
        if kinked:
            kinks.append(_kink_sums(net, K0, Ks, cells, ent, iu, n_kink, np.random.default_rng(c_kink), batch))
    # pooled regression of y on the controls (all of known mean 0), then per-scramble estimates
    N_all = n * R
    sx = sum(a["x"] for a in stats)
    sy = sum(a["y"] for a in stats)
    Sxx = sum(a["xx"] for a in stats) - np.outer(sx, sx) / N_all
    Sxy = sum(a["xy"] for a in stats) - np.outer(sx, sy) / N_all
    scale = np.sqrt(np.maximum(np.diag(Sxx), 1e-300))
    beta = (np.linalg.pinv(Sxx / np.outer(scale, scale), rcond=1e-10) @ (Sxy / scale[:, None])) / scale[:, None]
    est = np.array([a["y"] / n - (a["x"] / n) @ beta for a in stats])
    if kinked:
        est[:, :len(iu[0]) + nk] += np.array(kinks)
    if t3 == "ensemble":
        est[:, len(iu[0]) + nk:] += np.array(t3_ens)
    mean, se = est.mean(0), est.std(0, ddof=1) / math.sqrt(R)
    raw = np.array([a["raw"] / n for a in stats])
    nv = len(iu[0])

    def unpack4(v):
        T = np.zeros((nk, nk))
        T[iu] = v
        T = T + T.T - np.diag(np.diag(T))
        out = np.zeros((P,) * 4)
        for i, (a, b) in enumerate(pairs):
            for j, (c, d) in enumerate(pairs):
                for (p, q) in {(a, b), (b, a)}:
                    for (r_, s_) in {(c, d), (d, c)}:
                        out[p, q, r_, s_] = T[i, j]
        return out

    def unpack2(v):
        out = np.zeros((P, P))
        for i, (a, b) in enumerate(pairs):
            out[a, b] = out[b, a] = v[i]
        return out

    nm = nv + nk
    return dict(V1=unpack4(mean[:nv]), V1_se=unpack4(se[:nv]), M2=unpack2(mean[nv:nm]), M2_se=unpack2(se[nv:nm]),
                T3=mean[nm:].reshape(nk, nk, nk), T3_se=se[nm:].reshape(nk, nk, nk), entries=pairs,
                V_mc=unpack4(raw.mean(0)[:nv]), V_mc_se=unpack4(raw.std(0, ddof=1)[:nv] / math.sqrt(R)),
                M_mc=unpack2(raw.mean(0)[nv:]), M_mc_se=unpack2(raw.std(0, ddof=1)[nv:] / math.sqrt(R)),
                n_pairs=N_all, per_scramble=[dict(V1=unpack4(e[:nv]), M2=unpack2(e[nv:nm]),
                                                  T3=e[nm:].reshape(nk, nk, nk)) for e in est])


def full_chain_stats(net, K0, V, M, n_samples=None, seed=0, n_scrambles=None):
    """The moments of Khat^L in the x-coordinates (Khat_ab, a <= b) that the next-order sensitivity
    (Eq. 4.96) needs, in the layout of ``next_order_theory(...)["stats"]``: a1 = M, c1 = V, a2 = M2,
    c2 = V1, t2 = N^2 kappa3 (Eq. 4.110, its pair part by the ensemble pass, Eq. 4.113); the same Sobol
    seeds for every K0 (common random numbers, so that finite differences in c0 stay smooth).
    ``per_scramble``: the same dict per Sobol scramble (their mean is a2, c2, t2), for standard errors
    of anything linear in them."""
    r = full_next_order(net, K0, V=V, M=M, n_samples=n_samples, n_scrambles=n_scrambles, seed=seed, t3="ensemble")
    pairs = r["entries"]
    vec = lambda A: np.array([A[a, b] for a, b in pairs])                                   # noqa: E731
    mat = lambda A: np.array([[A[a, b, c, d] for c, d in pairs] for a, b in pairs])         # noqa: E731
    one = lambda e: dict(a1=vec(M), c1=mat(V), a2=vec(e["M2"]), c2=mat(e["V1"]), t2=e["T3"])   # noqa: E731
    return dict(one(r), per_scramble=[one(e) for e in r["per_scramble"]])
