"""Finite-width sensitivity S_N = S_inf + delta/N by the delta method (docs/theory.md Eq. 4.29)."""
from __future__ import annotations

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


def sensitivity_correction(net, c0, q0=1.0, alphas=None, dc=1e-4, **kw):
    """delta(alpha) = N (S_N - S_inf) to leading order: the width-independent 1/N coefficient
    of the finite-width sensitivity (docs/theory.md Eq. 4.29).

    delta = d/dc0 [grad c . M + 1/2 Hess c : V] by a central difference in c0 (step ``dc``);
    two :func:`finite_width` evaluations per alpha (``kw``: n_r, n_t). S_N = S_inf + delta/N
    for every N, so one delta serves all widths.
    """
    c0, q0, alphas, scalar, lo, hi = _check_sens_args(c0, q0, alphas, net, dc)
    out = np.empty(alphas.shape)
    for i, al in enumerate(alphas):
        nn = net.replace(alpha=float(al))
        vals = []
        for c in (lo, hi):
            fw = finite_width(nn, K0=two_input_kernel(c, q0), **kw)
            vals.append(_corr_correction(fw.kernel, fw.mean_shift, fw.covariance))
        out[i] = (vals[1] - vals[0]) / (hi - lo)
    return float(out[0]) if scalar else out


def sensitivity_finite_width(net, c0, q0=1.0, width=None, alphas=None, dc=1e-4, **kw):
    """Finite-width sensitivity S_N(alpha) = d/dc0 E[c_hat^L] to O(1/N) (docs/theory.md Eq. 4.29).

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
    width = _check_width(width, required=True)
    c0, q0, alphas, scalar, lo, hi = _check_sens_args(c0, q0, alphas, net, dc)
    s_inf = np.atleast_1d(sensitivity(net, c0, q0, alphas=alphas))
    out = s_inf + np.atleast_1d(sensitivity_correction(net, c0, q0, alphas=alphas, dc=dc, **kw)) / width
    return float(out[0]) if scalar else out
