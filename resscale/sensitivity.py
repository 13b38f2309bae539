"""Sensitivity of the output correlation to the input correlation (docs/theory.md, Sec. 5).

Two inputs of equal norm q0 and correlation c0 stay of equal norm, so the
recursion reduces to the scalars q^l = K^l_aa = K^l_bb, k^l = K^l_ab (and the
common mean m^l for the reduced block). Since q^l does not depend on k^0,

    S = d c^L / d c^0 = (q0 / q^L) prod_{l=1}^{L} dk^l/dk^{l-1}              (Eq. 5.1)

with the exact one-step factors (A = E[phi' phi'] at the current (q, k)):

    full         dk^l/dk^{l-1} = 1 + alpha^2 sigma_w2 A(q, q, k)                (Eq. 5.2)
    reduced      dk^l/dk^{l-1} = 1 + alpha^2 sigma_w2 A(Z_q, Z_q, Z_k),  Z = sigma_w2 K + sigma_b2
    feedforward  dk^l/dk^{l-1} = sigma_w2 A(q, q, k)

evaluated in log space (a sum of logs) and vectorised over a whole grid of
alphas in one pass. c0 = 1 gives the normalised mean squared input-output
Jacobian (Eq. 5.3).
"""
from __future__ import annotations

import numpy as np

from .inputs import check_scalar

_TINY = 1e-300


def check_alphas(alphas) -> np.ndarray:
    """Validate an alpha grid (finite, >= 0)."""
    a = np.atleast_1d(np.asarray(alphas, dtype=float))
    if a.ndim != 1:
        raise ValueError(f"alphas must be a scalar or 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("alphas contains NaN or inf")
    if np.any(a < 0):
        raise ValueError(f"alphas must be >= 0, got min {a.min()!r}")
    return a


def two_input_trajectory(net, c0, q0, alphas):
    """Run the equal-norm two-input recursion for every alpha in ``alphas`` at once.

    Returns a dict of arrays over alphas: ``log_q`` (log q^L), ``c`` (c^L),
    ``log_dk`` (sum over layers of log dk^l/dk^{l-1}).
    """
    phi, sw2, sb2_raw, L = net.phi, net.sigma_w2, net.sigma_b2, net.depth
    a = alphas
    a2 = a * a
    q = np.full(a.shape, float(q0))
    k = np.full(a.shape, float(q0) * float(c0))
    m = np.zeros(a.shape)
    s = np.zeros(a.shape)  # log-scale (homogeneous activations only)
    log_dk = np.zeros(a.shape)
    block, homog = net.block, phi.homogeneous
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(L):
            q, k, m, s, log_dk = _two_input_step(phi, block, homog, sw2, sb2_raw, a, a2, q, k, m, s, log_dk)
    log_q = np.log(np.maximum(q, _TINY)) + s
    c = np.clip(k / np.maximum(q, _TINY), -1.0, 1.0)
    bad = ~(np.isfinite(q) & np.isfinite(k) & np.isfinite(log_dk))
    log_q[bad] = np.nan
    return {"log_q": log_q, "c": c, "log_dk": log_dk, "overflow": bad}


def _two_input_step(phi, block, homog, sw2, sb2_raw, a, a2, q, k, m, s, log_dk):
    """One layer of the two-input recursion (Eq. 5.2) for arrays over alphas."""
    if True:
        sb2 = sb2_raw * np.exp(-s) if homog else sb2_raw
        if block == "full":
            G, _, _, A = phi.pair(q, q, k)
            g = phi.diag(q)[0]
            log_dk += np.log1p(a2 * sw2 * A)
            q, k = q + a2 * (sw2 * g + sb2), k + a2 * (sw2 * G + sb2)
        elif block == "reduced":
            zq, zk = sw2 * q + sb2, sw2 * k + sb2
            G, _, _, A = phi.pair(zq, zq, zk)
            g = phi.diag(zq)[0]
            log_dk += np.log1p(a2 * sw2 * A)
            if phi.odd:
                q, k = q + a2 * g, k + a2 * G
            else:
                mu = phi.mean(zq)[0]
                drift = 2.0 * a * m * mu
                q, k, m = q + drift + a2 * g, k + drift + a2 * G, m + a * mu
        else:
            G, _, _, A = phi.pair(q, q, k)
            log_dk += np.log(np.maximum(sw2 * A, _TINY))
            q, k = sw2 * phi.diag(q)[0] + sb2, sw2 * G + sb2
        if homog:  # renormalise every layer: q~ = 1, k~ = c
            r = np.maximum(q, _TINY)
            q, k, m = q / r, k / r, m / np.sqrt(r)
            s = s + np.log(r)
    return q, k, m, s, log_dk


def log_sensitivity(net, c0, q0=1.0, alphas=None, strict=True) -> np.ndarray:
    """log S(alpha) (Eq. 5.1) for every alpha of ``alphas`` (default: net.alpha).

    The kernel of a non-homogeneous, unbounded activation (gelu) can exceed
    float64 at large alpha^2 L; then ``strict=True`` raises OverflowError naming
    the first such alpha, and ``strict=False`` returns nan there.
    """
    c0 = check_scalar("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_scalar("q0", q0, lo=0.0, strict_lo=True)
    a = check_alphas(net.alpha if alphas is None else alphas)
    tr = two_input_trajectory(net, c0, q0, a)
    out = tr["log_dk"] + np.log(q0) - tr["log_q"]
    if strict and np.any(tr["overflow"]):
        raise OverflowError(f"the mean-field kernel of activation {net.phi.name!r} exceeds float64 for "
                            f"alpha >= {a[tr['overflow']].min():.4g} at depth {net.depth}")
    return out


def sensitivity(net, c0, q0=1.0, alphas=None):
    """S = d c^L / d c^0 for two inputs of norm q0 and correlation c0 (diagonal held fixed).

    Exact mean-field value (docs/theory.md Eq. 5.1-5.2). ``alphas=None`` uses
    ``net.alpha`` and returns a float; an array of alphas returns an array (one
    vectorised pass over the grid). c0 = 1 gives the normalised mean squared
    input-output Jacobian (Eq. 5.3). For ``block="feedforward"`` alpha is
    irrelevant.
    """
    logS = log_sensitivity(net, c0, q0, alphas)
    S = np.exp(np.minimum(logS, 709.0))
    if np.any(logS > 709.0):
        raise OverflowError("sensitivity exceeds float64; use log_sensitivity")
    if alphas is None or np.ndim(alphas) == 0:
        return float(S[0])
    return S
