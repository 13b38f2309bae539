"""Finite-width sensitivity S_N = S_inf + delta/N (+ delta2/N^2) by the delta method
(docs/theory.md Eq. 4.29; next order Sec. 4.12.1, Eq. 4.94-4.97)."""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..inputs import Q0_MIN, check_scalar, two_input_kernel
from ..sensitivity import sensitivity
from .core import _check_width, finite_width


def _corr_correction(K, M, V, a=0, b=1):
    """N (E[c_hat] - c) to O(1) by the delta method (Eq. 4.29): grad c . M + 1/2 Hess c : V,
    c_hat = Khat_ab / sqrt(Khat_aa Khat_bb)."""
    kaa, kbb, kab = K[a, a], K[b, b], K[a, b]
    r = np.sqrt(kaa * kbb)
    g = kab / r
    grad = {"ab": 1.0 / r, "aa": -g / (2 * kaa), "bb": -g / (2 * kbb)}
    hess = {("aa", "aa"): 3 * g / (4 * kaa ** 2), ("bb", "bb"): 3 * g / (4 * kbb ** 2),
            ("aa", "bb"): g / (4 * kaa * kbb), ("ab", "aa"): -1.0 / (2 * kaa * r),
            ("ab", "bb"): -1.0 / (2 * kbb * r), ("ab", "ab"): 0.0}
    ix = {"aa": (a, a), "bb": (b, b), "ab": (a, b)}
    lin = sum(grad[k] * M[ix[k]] for k in grad)
    quad = 0.0
    for (u, v), h in hess.items():
        cov = V[ix[u] + ix[v]]
        quad += h * cov * (1.0 if u == v else 2.0)
    return lin + 0.5 * quad


def _corr_derivs(K, a=0, b=1):
    """Derivatives D1..D4 of c = k / sqrt(p q) in the x-coordinates (p, k, q) = (K_aa, K_ab, K_bb)
    (Eq. 4.95): c = k g(p) g(q), g(x) = x^(-1/2), so the mixed derivative with n_p, n_k, n_q
    differentiations is [n_k <= 1] k^(1 - n_k) g^(n_p)(p) g^(n_q)(q), g^(j) = (-1/2)_j x^(-1/2-j)."""
    p, k, q = float(K[a, a]), float(K[a, b]), float(K[b, b])

    def g(x, j):
        return math.prod(-0.5 - i for i in range(j)) * x ** (-0.5 - j)

    out = []
    for order in (1, 2, 3, 4):
        D = np.zeros((3,) * order)
        for idx in itertools.product(range(3), repeat=order):
            n = [idx.count(0), idx.count(1), idx.count(2)]
            if n[1] <= 1:
                D[idx] = (k if n[1] == 0 else 1.0) * g(p, n[0]) * g(q, n[2])
        out.append(D)
    return out


def _corr_correction2(K, st, a=0, b=1):
    """The 1/N^2 coefficient of E[c_hat] (Eq. 4.96) from the chain moments of Sec. 4.12 (x-coordinates
    of a two-input run, ``next_order_theory(...)["stats"]``; kernel coordinates (0,0), (0,1), (1,1)):

        D1.a2 + 1/2 D2:(c2 + a1 a1) + 1/6 D3:t2 + 1/2 D3[a1, c1] + 1/8 D4:(c1 c1)

    (the third moment of delta = Khat - K about the mean-field point is kappa3 + 3 sym(E delta Cov delta)
    = (t2 + 3 sym(a1 c1)) / N^2: both O(1/N^2))."""
    D1, D2, D3, D4 = _corr_derivs(K, a, b)
    s = slice(0, 3)
    a1, a2 = st["a1"][s], st["a2"][s]
    c1, c2, t2 = st["c1"][s, s], st["c2"][s, s], st["t2"][s, s, s]
    return float(D1 @ a2 + 0.5 * np.einsum("ij,ij->", D2, c2 + np.outer(a1, a1))
                 + np.einsum("ijk,ijk->", D3, t2) / 6.0 + 0.5 * np.einsum("ijk,i,jk->", D3, a1, c1)
                 + 0.125 * np.einsum("ijkl,ij,kl->", D4, c1, c1))


def _mean_corr(K, M, V, width, a=0, b=1):
    """E[c_hat] to O(1/N) by the delta method (Eq. 4.29): c_hat = Khat_ab / sqrt(Khat_aa Khat_bb)."""
    return K[a, b] / np.sqrt(K[a, a] * K[b, b]) + _corr_correction(K, M, V, a, b) / width


def _check_sens_args(c0, q0, alphas, net, dc):
    c0 = check_scalar("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_scalar("q0", q0, lo=Q0_MIN)
    scalar = alphas is None
    alphas = np.atleast_1d(np.asarray(net.alpha if alphas is None else alphas, dtype=float))
    if alphas.ndim != 1 or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
        raise ValueError("alphas must be a 1-D array of finite values >= 0")
    lo, hi = max(c0 - dc, -1.0), min(c0 + dc, 1.0)
    if hi - lo <= 0:
        raise ValueError("c0 leaves no room for the finite difference")
    return c0, q0, alphas, scalar, lo, hi


def _d_dc0(coefficient, net, c0, q0, alphas, dc):
    """d/dc0 of ``coefficient(net at alpha, K0(c0, q0))`` by a central difference in c0 (step ``dc``,
    clipped to [-1, 1]), for every alpha of the grid; a float for a scalar ``alphas``."""
    c0, q0, alphas, scalar, lo, hi = _check_sens_args(c0, q0, alphas, net, dc)
    out = np.empty(alphas.shape)
    for i, al in enumerate(alphas):
        nn = net.replace(alpha=float(al))
        vals = [coefficient(nn, two_input_kernel(c, q0)) for c in (lo, hi)]
        out[i] = (vals[1] - vals[0]) / (hi - lo)
    return float(out[0]) if scalar else out


FULL_KINKED_DC = 0.05     # c0 step of delta2 for a kinked phi in the full block (Sec. 4.12.7)


def sensitivity_correction2(net, c0, q0=1.0, alphas=None, dc=None, n_r=12, n_t=8, n_samples=None,
                            n_scrambles=None, return_se=False, seed=0):
    """delta2(alpha): the width-independent 1/N^2 coefficient of the finite-width sensitivity,
    S_N = S_inf + delta/N + delta2/N^2 + O(1/N^3) (docs/theory.md Eq. 4.97; blocks two_layer, feedforward and
    reduced, whose chain moments a2, c2, t2 come from :func:`next_order_theory`, Sec. 4.12).

    delta2 = d/dc0 of Eq. 4.96 by a central difference in c0 (step ``dc``, default 2e-3; the finite-difference
    derivatives of the drift inside the recursion are smooth in c0, measured change of delta2
    below 1e-4 relative between dc = 1e-3 and 4e-3). Two next-order runs per alpha.
    Full block (Sec. 4.12.5, relu Sec. 4.12.6-4.12.7): the moments a2, c2, t2 come from the quasi-Monte-Carlo
    von Mises integration (``n_samples`` seed pairs per scramble, ``n_scrambles`` scrambles; the pair part of
    t2 by the ensemble pass, Eq. 4.113) with the same seeds at both c0; its integration standard error is the
    spread of the per-scramble differences (``seed``: the Sobol scrambles' seed). relu: default ``dc`` = 0.05 (``FULL_KINKED_DC``: the seeds whose
    Heaviside factors flip between the two c0 make the difference's variance grow like 1/dc). ``return_se=True``: (delta2, se) (se = 0 for the deterministic closed-chain
    blocks). A UserWarning names ``n_samples`` when the full block's delta2 is not resolved to 25% (se > |delta2| / 4).
    """
    from .next_order import check_next_order, next_order_theory
    check_next_order(net, 2, full=True)
    if dc is None:
        dc = FULL_KINKED_DC if net.block == "full" and not net.phi.smooth else 2e-3
    if net.block == "full":   # Sec. 4.12.5: moments by quasi-Monte-Carlo, the same seeds at both c0
        return _full_correction2(net, c0, q0, alphas, dc, n_r, n_t, n_samples, n_scrambles, return_se, seed)

    def coefficient(nn, K0):
        r = next_order_theory(nn, K0, n_r=n_r, n_t=n_t)
        return _corr_correction2(r["Ks"][-1], r["stats"])
    d2 = _d_dc0(coefficient, net, c0, q0, alphas, dc)
    return (d2, np.zeros_like(d2) if np.ndim(d2) else 0.0) if return_se else d2


def _full_correction2(net, c0, q0, alphas, dc, n_r, n_t, n_samples, n_scrambles, return_se, seed):
    """delta2 of the full block (Sec. 4.12.7): per Sobol scramble r, the c0-difference of Eq. 4.96 on the
    same seeds; delta2 = mean over r, se = std / sqrt(R)."""
    import os
    import warnings

    from .full_next_order import DEFAULT_SCRAMBLES, _samples, estimate_full_seconds, full_chain_stats, phi_key
    from .next_order import MAX_SECONDS
    c0, q0, al, scalar, lo, hi = _check_sens_args(c0, q0, alphas, net, dc)
    R = int(n_scrambles or DEFAULT_SCRAMBLES)
    est = 2 * al.size * estimate_full_seconds(2, net.depth, _samples(n_samples) * R, phi_key(net), t3="ensemble")
    lim = float(os.environ.get("RESSCALE_NEXT_ORDER_MAX_S", MAX_SECONDS))
    if est > lim:
        raise ValueError(f"S_N at order 2 for block='full' with depth={net.depth} and {al.size} alphas needs "
                         f"{2 * al.size} quasi-Monte-Carlo runs (Sec. 4.12.5), estimated ~{est:.3g} s > the "
                         f"limit {lim:g} s (RESSCALE_NEXT_ORDER_MAX_S): use fewer alphas, a shallower net, "
                         "fewer n_samples, order=1, or raise the limit")
    d2, se = np.empty(al.shape), np.empty(al.shape)
    for i, a in enumerate(al):
        nn = net.replace(alpha=float(a))
        per = []
        for c in (lo, hi):
            K0 = two_input_kernel(c, q0)
            fw = finite_width(nn, K0=K0, n_r=n_r, n_t=n_t, method="exact")
            st = full_chain_stats(nn, K0, fw.covariance, fw.mean_shift, n_samples=n_samples, n_scrambles=R,
                                  seed=seed)
            per.append(np.array([_corr_correction2(fw.kernel, e) for e in st["per_scramble"]]))
        d = (per[1] - per[0]) / (hi - lo)
        d2[i], se[i] = d.mean(), d.std(ddof=1) / math.sqrt(d.size)
    bad = se > 0.25 * np.abs(d2)
    if np.any(bad):
        warnings.warn(f"S_N at order 2, block='full', activation={net.phi.name!r}: delta2 = {d2[bad][0]:.3g} +- "
                      f"{se[bad][0]:.2g} (integration SE) is not resolved to 25% at alpha = {al[bad][0]:g}; raise n_samples "
                      "(the SE falls like n_samples^-1/2, docs/theory.md Sec. 4.12.7)", UserWarning, stacklevel=3)
    if scalar:
        return (float(d2[0]), float(se[0])) if return_se else float(d2[0])
    return (d2, se) if return_se else d2


def sensitivity_correction(net, c0, q0=1.0, alphas=None, dc=1e-4, order=1, width=None, **kw):
    """delta(alpha) = N (S_N - S_inf) to leading order: the width-independent 1/N coefficient
    of the finite-width sensitivity (docs/theory.md Eq. 4.29).

    delta = d/dc0 [grad c . M + 1/2 Hess c : V] by a central difference in c0 (step ``dc``);
    two :func:`finite_width` evaluations per alpha (``kw``: n_r, n_t). S_N = S_inf + delta/N
    for every N, so one delta serves all widths.

    ``order=2`` (blocks two_layer / reduced / feedforward, full: Sec. 4.12.7; needs ``width``): the width-dependent effective
    coefficient delta + delta2/N, so that S_N = S_inf + (delta + delta2/N)/N to O(1/N^2)
    (Eq. 4.97, :func:`sensitivity_correction2`).
    """
    from .next_order import check_next_order
    order = check_next_order(net, order, full=True)
    if order == 2:
        width = _check_width(width, required=True)
        d1 = sensitivity_correction(net, c0, q0, alphas=alphas, dc=dc, **{k: v for k, v in kw.items()
                                                                           if k not in ("n_samples", "n_scrambles")})
        d2 = sensitivity_correction2(net, c0, q0, alphas=alphas, **{k: v for k, v in kw.items()
                                                                     if k in ("n_r", "n_t", "n_samples", "n_scrambles")})
        return d1 + d2 / width
    def coefficient(nn, K0):
        fw = finite_width(nn, K0=K0, **kw)
        return _corr_correction(fw.kernel, fw.mean_shift, fw.covariance)
    return _d_dc0(coefficient, net, c0, q0, alphas, dc)


def sensitivity_finite_width(net, c0, q0=1.0, width=None, alphas=None, dc=1e-4, order=1, **kw):
    """Finite-width sensitivity S_N(alpha) = d/dc0 E[c_hat^L] to O(1/N) (docs/theory.md Eq. 4.29),
    or to O(1/N^2) with ``order=2`` (every block; the full one by quasi-Monte-Carlo, Sec. 4.12.5 and 4.12.7,
    Eq. 4.110, 4.113): S_N = S_inf + delta/N + delta2/N^2 (Eq. 4.97, delta2 from :func:`sensitivity_correction2`,
    which also gives its integration SE; ``n_samples``, ``n_scrambles`` pass through to it). A kinked user
    callable in the full block raises NotImplementedError (its delta terms are not available).

    c_hat^L = Khat^L_12 / sqrt(Khat^L_11 Khat^L_22) for two inputs of norm q0 and
    correlation c0; E[c_hat] = c + (grad c . M + 1/2 Hess c : V)/N (delta method), so
    S_N = S_inf + delta/N with the exact mean-field S_inf (:func:`resscale.sensitivity.sensitivity`)
    and delta from :func:`sensitivity_correction` (central difference in c0, step ``dc``).
    Matches the simulation estimator (the average over networks of d c_hat^L / d c^0);
    validated in scripts/validate_sensitivity_finite_width.py.

    Cost: two :func:`finite_width` calls per alpha (P = 2; ~0.1 s at L = 20, a few s at
    L = 100). For an argmax over alpha use :func:`optimal_alpha_finite_width`.
    Returns an array like ``alphas`` (default: net.alpha).
    """
    from .next_order import check_next_order
    order = check_next_order(net, order, full=True)
    width = _check_width(width, required=True)
    c0, q0, alphas, scalar, lo, hi = _check_sens_args(c0, q0, alphas, net, dc)
    s_inf = np.atleast_1d(sensitivity(net, c0, q0, alphas=alphas))
    d = sensitivity_correction(net, c0, q0, alphas=alphas, dc=dc, order=order, width=width, **kw)
    out = s_inf + np.atleast_1d(d) / width
    return float(out[0]) if scalar else out
