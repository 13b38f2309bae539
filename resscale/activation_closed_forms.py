"""Closed-form Gaussian integrals of erf, relu and linear (docs/theory.md Sec. 2, Eq. 2.4-2.6).

Subclasses of :class:`resscale.activation_quadrature.Activation` that replace its quadrature by the
arcsine kernel (erf), the arc-cosine kernel (relu) and G = kab (linear), with scalar fast paths
for the ODE integrators. Instances are made by the registry :data:`resscale.activations.BUILTIN`.
"""
from __future__ import annotations

import math

import numpy as np

from .activation_quadrature import _TINY, Activation


class _Erf(Activation):
    """phi = erf: arcsine kernel G = (2/pi) arcsin(2kab / sqrt((1+2kaa)(1+2kbb))) (Eq. 2.4)."""

    def kernel_packed(self, d, i, j, k):
        """G for packed pairs (d = diagonal, pairs (i, j), k = K_ij) with few array passes."""
        r = 1.0 / np.sqrt(1.0 + 2.0 * d)
        x = r[i]
        x *= r[j]
        x *= k
        x *= 2.0
        np.clip(x, -1.0, 1.0, out=x)
        np.arcsin(x, out=x)
        x *= 2.0 / math.pi
        return x

    def kernel(self, kaa, kbb, kab):
        x = 2.0 * np.asarray(kab, dtype=float) / np.sqrt((1.0 + 2.0 * np.asarray(kaa)) * (1.0 + 2.0 * np.asarray(kbb)))
        return (2.0 / math.pi) * np.arcsin(np.clip(x, -1.0, 1.0))

    def pair(self, kaa, kbb, kab):
        if np.ndim(kaa) == 0 and np.ndim(kbb) == 0 and np.ndim(kab) == 0:   # scalar fast path (ODE)
            return _erf_pair_scalar(float(kaa), float(kbb), float(kab))
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        da, db = 1.0 + 2.0 * kaa, 1.0 + 2.0 * kbb
        D = da * db
        root = np.sqrt(np.maximum(D - 4.0 * kab * kab, _TINY))
        G = (2.0 / math.pi) * np.arcsin(np.clip(2.0 * kab / np.sqrt(D), -1.0, 1.0))
        dab = (4.0 / math.pi) / root
        daa = -(4.0 / math.pi) * kab / (da * root)
        dbb = -(4.0 / math.pi) * kab / (db * root)
        return G, daa, dbb, dab

    def diag(self, k):
        if np.ndim(k) == 0 and math.isfinite(k) and k > -0.25:
            k = float(k)
            return (np.float64((2.0 / math.pi) * math.asin(2.0 * k / (1.0 + 2.0 * k))),
                    np.float64((4.0 / math.pi) / ((1.0 + 2.0 * k) * math.sqrt(1.0 + 4.0 * k))))
        k = np.asarray(k, dtype=float)
        g = (2.0 / math.pi) * np.arcsin(2.0 * k / (1.0 + 2.0 * k))
        dg = (4.0 / math.pi) / ((1.0 + 2.0 * k) * np.sqrt(1.0 + 4.0 * k))
        return g, dg

    def pair_equal(self, q, k):
        d = 1.0 + 2.0 * q
        inv = 1.0 / d
        x = np.clip(2.0 * k * inv, -1.0, 1.0)
        G = (2.0 / math.pi) * np.arcsin(x)
        A = (4.0 / math.pi) / np.sqrt(np.maximum(d * d - 4.0 * k * k, _TINY))
        g = (2.0 / math.pi) * np.arcsin(2.0 * q * inv)
        return G, A, g


def _erf_pair_scalar(kaa, kbb, kab):
    """Scalar version of _Erf.pair (math module; same formulas)."""
    if not (math.isfinite(kaa) and math.isfinite(kbb) and math.isfinite(kab)):
        return tuple(np.float64(math.nan) for _ in range(4))
    da, db = 1.0 + 2.0 * kaa, 1.0 + 2.0 * kbb
    D = da * db
    if D <= 0.0:
        return tuple(np.float64(math.nan) for _ in range(4))
    root = math.sqrt(max(D - 4.0 * kab * kab, _TINY))
    G = (2.0 / math.pi) * math.asin(min(max(2.0 * kab / math.sqrt(D), -1.0), 1.0))
    dab = (4.0 / math.pi) / root
    return (np.float64(G), np.float64(-(4.0 / math.pi) * kab / (da * root)),
            np.float64(-(4.0 / math.pi) * kab / (db * root)), np.float64(dab))


class _Relu(Activation):
    """phi = max(u, 0): arc-cosine kernel (Cho & Saul 2009) (Eq. 2.5).

    G = sqrt(kaa kbb)/(2 pi) (sin t + (pi - t) cos t), cos t = kab/sqrt(kaa kbb);
    dG/dkab = (pi - t)/(2 pi); dG/dkaa = sqrt(kbb/kaa) sin t /(4 pi).
    """

    @property
    def supports_finite_width(self) -> bool:
        """True although relu has a kink: the delta part of its phi'' is handled in closed form."""
        return True

    def pair(self, kaa, kbb, kab):
        if np.ndim(kaa) == 0 and np.ndim(kbb) == 0 and np.ndim(kab) == 0:   # scalar fast path (ODE)
            return _relu_pair_scalar(float(kaa), float(kbb), float(kab))
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        saa, sbb = np.sqrt(np.maximum(kaa, _TINY)), np.sqrt(np.maximum(kbb, _TINY))
        rho = np.clip(kab / (saa * sbb), -1.0, 1.0)
        t = np.arccos(rho)
        sin_t = np.sqrt(1.0 - rho * rho)
        G = saa * sbb / (2.0 * math.pi) * (sin_t + (math.pi - t) * rho)
        dab = (math.pi - t) / (2.0 * math.pi)
        daa = (sbb / saa) * sin_t / (4.0 * math.pi)
        dbb = (saa / sbb) * sin_t / (4.0 * math.pi)
        return G, daa, dbb, dab

    def diag(self, k):
        k = np.asarray(k, dtype=float)
        return 0.5 * k, np.full_like(k, 0.5)

    def pair_equal(self, q, k):
        sa = np.sqrt(np.maximum(q, _TINY))
        s = sa * sa                     # (as in pair: the same rounding)
        rho = np.clip(k / s, -1.0, 1.0)
        t = np.arccos(rho)
        G = s / (2.0 * math.pi) * (np.sqrt(1.0 - rho * rho) + (math.pi - t) * rho)
        return G, (math.pi - t) / (2.0 * math.pi), 0.5 * q

    def mean(self, k):
        k = np.asarray(k, dtype=float)
        kk = np.maximum(k, _TINY)
        return np.sqrt(kk / (2.0 * math.pi)), 0.5 / np.sqrt(2.0 * math.pi * kk)


def _relu_pair_scalar(kaa, kbb, kab):
    """Scalar version of _Relu.pair (math module; same formulas)."""
    if not (math.isfinite(kaa) and math.isfinite(kbb) and math.isfinite(kab)):
        return tuple(np.float64(math.nan) for _ in range(4))
    saa, sbb = math.sqrt(max(kaa, _TINY)), math.sqrt(max(kbb, _TINY))
    rho = min(max(kab / (saa * sbb), -1.0), 1.0)
    t = math.acos(rho)
    sin_t = math.sqrt(1.0 - rho * rho)
    G = saa * sbb / (2.0 * math.pi) * (sin_t + (math.pi - t) * rho)
    return (np.float64(G), np.float64((sbb / saa) * sin_t / (4.0 * math.pi)),
            np.float64((saa / sbb) * sin_t / (4.0 * math.pi)), np.float64((math.pi - t) / (2.0 * math.pi)))


class _Linear(Activation):
    """phi = u: G = kab (Eq. 2.6)."""

    def kernel(self, kaa, kbb, kab):
        return np.array(np.broadcast_arrays(kaa, kbb, np.asarray(kab, dtype=float))[2], dtype=float)

    def pair(self, kaa, kbb, kab):
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        z = np.zeros(kab.shape)
        return kab.copy(), z, z.copy(), np.ones(kab.shape)

    def diag(self, k):
        k = np.asarray(k, dtype=float)
        return k.copy(), np.ones_like(k)

    def pair_equal(self, q, k):
        k = np.asarray(k, dtype=float)
        return k.copy(), np.ones(k.shape), np.array(q, dtype=float)
