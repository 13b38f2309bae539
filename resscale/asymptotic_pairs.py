"""Homogeneous-limit pair functions for large variance q (issue 9; docs/theory.md Sec. 5.1).

An activation that is asymptotically piecewise linear, phi(x) = s_+ x + o(1) for x -> +inf and
s_- x + o(1) for x -> -inf (gelu: (1, 0); softplus: (1, 0)), differs from its homogeneous limit

    p(x) = s_+ relu(x) - s_- relu(-x) = a x + b |x|,   a = (s_+ + s_-)/2,  b = (s_+ - s_-)/2,

by a remainder r = phi - p that is localized (scale ~1) and integrable. For equal-norm inputs
(variance q, covariance k = q cos theta) p has closed forms (relu's arc-cosine kernel,
E[|u||v|] = (q/pi)(2 sin theta + (pi - 2 theta) cos theta), E[sign u sign v] = 1 - 2 theta/pi):

    g = E[p^2] = (a^2 + b^2) q
    A = E[p'p'] = a^2 + b^2 (1 - 2 theta/pi)
    g - G = (a^2 + b^2)(q - k) - (2 b^2 q / pi) w(theta),   w = sin theta - theta cos theta
    E[p] = b sqrt(2 q / pi)

(theta = 2 atan2(sqrt(q - k), sqrt(q + k)), from q - k and q + k, so g - G keeps its relative
precision as c -> 1; w by its series for small theta). Using them for phi beyond the table
(q > Q_HI = 1e10) errs by O(1/q) relative for theta >> q^{-1/2} and by O(q^{-1/2}) (from
E[r'(u)^2] ~ int r'^2 / sqrt(2 pi q)) for theta <~ q^{-1/2}; measured in
tests/test_meanfield_asymptotic.py and at table build (``TabulatedActivation._asymptotic_setup``).

:func:`slopes` gives (s_+, s_-) for an activation: its declared ``asymptotic_slopes`` or, for
callables, a numerical detection (:func:`detect_slopes`), else None (not asymptotically linear).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["slopes", "detect_slopes", "coefficients", "pair_equal", "diag", "mean", "pair_scalar"]

_X_PROBE = np.array([1e3, 1e4, 1e5])   # where phi is fitted by s x
_TOL_REM = 1e-9                         # |phi(x) - s x| at the probe points, in units of (1 + |s|)
_TOL_D1 = 1e-6                          # |phi'(+-1e3) - s|
_S_MAX = 1e6                            # |s| bound (beyond: refused)
_TH_SERIES = 0.25                       # w(theta) by its series below this angle


def detect_slopes(fn, d1=None):
    """(s_+, s_-) when phi = fn is numerically s_+ x on x = 1e3, 1e4, 1e5 and s_- x on the negatives
    (|phi(x) - s x| <= 1e-9 (1 + |s|), s fitted at 1e5; phi'(+-1e3) = s to 1e-6 when ``d1`` is given),
    not both slopes ~0; else None."""
    try:
        with np.errstate(all="ignore"):
            out = []
            for sgn in (1.0, -1.0):
                x = sgn * _X_PROBE
                f = np.asarray(fn(x), dtype=float)
                if f.shape != x.shape or not np.all(np.isfinite(f)):
                    return None
                s = float(f[-1] / x[-1])
                if not (abs(s) <= _S_MAX) or np.max(np.abs(f - s * x)) > _TOL_REM * (1.0 + abs(s)):
                    return None
                if d1 is not None:
                    dv = np.asarray(d1(np.array([sgn * 1e3])), dtype=float)
                    if not (dv.shape == (1,) and abs(float(dv[0]) - s) <= _TOL_D1 * (1.0 + abs(s))):
                        return None
                out.append(s)
    except Exception:
        return None
    if max(abs(out[0]), abs(out[1])) < 1e-6:
        return None
    return float(out[0]), float(out[1])


def slopes(phi):
    """(s_+, s_-) of ``phi``: the declared ``phi.asymptotic_slopes`` (False: none), else detected
    (:func:`detect_slopes` on ``phi.fn`` and ``phi.d1``); None when not asymptotically linear."""
    dec = getattr(phi, "asymptotic_slopes", None)
    if dec is False:
        return None
    if dec is not None:
        return float(dec[0]), float(dec[1])
    return detect_slopes(phi.fn, phi.d1)


def coefficients(sl):
    """(a^2, b^2, b) from the slopes (s_+, s_-): p(x) = a x + b |x|."""
    a, b = 0.5 * (sl[0] + sl[1]), 0.5 * (sl[0] - sl[1])
    return a * a, b * b, b


def _w(th):
    """w(theta) = sin theta - theta cos theta = sum_n (-1)^(n+1) 2n theta^(2n+1) / (2n+1)!  (series below 0.25)."""
    th = np.asarray(th, dtype=float)
    t2 = th * th
    ser = th * t2 * (1.0 / 3.0 + t2 * (-1.0 / 30.0 + t2 * (1.0 / 840.0 + t2 * (-1.0 / 45360.0 + t2 * (
        1.0 / 3991680.0 - t2 / 518918400.0)))))
    return np.where(th < _TH_SERIES, ser, np.sin(th) - th * np.cos(th))


def pair_equal(q, k, sl):
    """(G, A, g) of the homogeneous limit p (slopes ``sl``) at variance q, covariance k (arrays)."""
    q, k = np.broadcast_arrays(np.asarray(q, dtype=float), np.asarray(k, dtype=float))
    a2, b2, _ = coefficients(sl)
    d, s = np.maximum(q - k, 0.0), np.maximum(q + k, 0.0)
    rd, rs = np.sqrt(d), np.sqrt(s)
    th = 2.0 * np.arctan2(rd, rs)                 # theta = arccos(k / q)
    thc = 2.0 * np.arctan2(rs, rd)                # pi - theta, accurate near c = -1
    g = (a2 + b2) * q
    A = np.where(th <= thc, (a2 + b2) - (2.0 * b2 / math.pi) * th, (a2 - b2) + (2.0 * b2 / math.pi) * thc)
    G = g - ((a2 + b2) * d - (2.0 * b2 / math.pi) * q * _w(th))
    return G, A, g


def diag(q, sl):
    """(g, dg/dq) = ((a^2 + b^2) q, a^2 + b^2)."""
    a2, b2, _ = coefficients(sl)
    q = np.asarray(q, dtype=float)
    return (a2 + b2) * q, np.full(q.shape, a2 + b2)


def mean(q, sl):
    """(E[p], dE[p]/dq) = (b sqrt(2 q / pi), b / sqrt(2 pi q))."""
    _, _, b = coefficients(sl)
    q = np.asarray(q, dtype=float)
    return b * np.sqrt(q * (2.0 / math.pi)), b / np.sqrt(q * (2.0 * math.pi))


def pair_scalar(z, zk, a2, b2, b):
    """(G, A, g, mu) at one point (math module; compiled by :mod:`resscale.tabulated_compiled`):
    the formulas of :func:`pair_equal` and :func:`mean`."""
    d, s = max(z - zk, 0.0), max(z + zk, 0.0)
    rd, rs = math.sqrt(d), math.sqrt(s)
    th = 2.0 * math.atan2(rd, rs)
    thc = 2.0 * math.atan2(rs, rd)
    if th <= thc:
        A = (a2 + b2) - (2.0 * b2 / math.pi) * th
    else:
        A = (a2 - b2) + (2.0 * b2 / math.pi) * thc
    if th < _TH_SERIES:
        t2 = th * th
        w = th * t2 * (1.0 / 3.0 + t2 * (-1.0 / 30.0 + t2 * (1.0 / 840.0 + t2 * (-1.0 / 45360.0 + t2 * (
            1.0 / 3991680.0 - t2 / 518918400.0)))))
    else:
        w = math.sin(th) - th * math.cos(th)
    g = (a2 + b2) * z
    G = g - ((a2 + b2) * d - (2.0 * b2 / math.pi) * z * w)
    mu = b * math.sqrt(z * (2.0 / math.pi))
    return G, A, g, mu
