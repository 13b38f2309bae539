"""Activation functions and their Gaussian integrals (docs/theory.md, Sec. 2).

Every kernel map of the theory needs, for a centred bivariate Gaussian
(u_a, u_b) with covariance [[kaa, kab], [kab, kbb]],

    G(kaa, kbb, kab)  = E[phi(u_a) phi(u_b)]                      (Eq. 2.1)
    dG/dkab           = E[phi'(u_a) phi'(u_b)]          (Price)   (Eq. 2.2)
    dG/dkaa           = 1/2 E[phi''(u_a) phi(u_b)]                (Eq. 2.3)

plus the diagonal g(k) = E[phi(u)^2] with g'(k) = E[phi'^2 + phi phi''] and the
mean mu(k) = E[phi(u)] with mu'(k) = 1/2 E[phi''(u)] (the mean only matters for
the reduced block with a non-odd phi).

Closed forms (Eq. 2.4-2.6): erf (arcsine kernel), relu (arc-cosine kernel),
linear. Everything else (tanh, gelu, any callable) uses tensor-product
Gauss-Hermite quadrature of order ``n_quad`` (default 64 per dimension); its
accuracy is measured in tests/test_activations.py and stated in theory.md
Sec. 2.3. For a user callable without derivatives, phi' and phi'' are taken by
central differences of phi (step 1e-4 / 1e-3; the *recursion* is still
differentiated exactly).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import numpy as np
from scipy import special

_SQRT2 = math.sqrt(2.0)
_TINY = 1e-300


@lru_cache(maxsize=16)
def gauss_hermite(n: int):
    """Nodes/weights of probabilists' Gauss-Hermite: E[f(z)] ~ sum w_i f(x_i), z ~ N(0,1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / math.sqrt(2.0 * math.pi)


def _fd1(f, h=1e-4):
    return lambda u: (f(u + h) - f(u - h)) / (2 * h)


def _fd2(f, h=1e-3):
    return lambda u: (f(u + h) - 2.0 * f(u) + f(u - h)) / (h * h)


@dataclass(frozen=True, eq=False)
class Activation:
    """An activation phi with its derivatives and Gaussian integrals.

    Attributes
    ----------
    name : str
    fn, d1, d2 : vectorised callables phi, phi', phi''
    odd : bool            phi(-u) = -phi(u)  (then mu = 0)
    homogeneous : bool    phi(lambda u) = lambda phi(u) for lambda > 0 (relu, linear):
                          the kernel map is then 1-homogeneous, used for log-space scaling
    closed_form : bool    Gaussian integrals in closed form (else quadrature)
    n_quad : int          Gauss-Hermite order per dimension for quadrature
    """

    name: str
    fn: Callable
    d1: Callable
    d2: Callable
    odd: bool = False
    homogeneous: bool = False
    closed_form: bool = False
    n_quad: int = 64

    def __call__(self, u):
        return self.fn(u)

    def __repr__(self):
        return f"Activation({self.name!r})"

    # ------------------------------------------------------------------ pair
    def pair(self, kaa, kbb, kab):
        """G, dG/dkaa, dG/dkbb, dG/dkab for arrays of (kaa, kbb, kab) (Eq. 2.1-2.3).

        kab is treated as one variable (the symmetric entry K_ab = K_ba).
        """
        kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (kaa, kbb, kab)))
        return self._pair_quadrature(kaa, kbb, kab)

    def kernel(self, kaa, kbb, kab):
        """G(kaa, kbb, kab) = E[phi(u_a) phi(u_b)] only (Eq. 2.1), no derivatives."""
        return self.pair(kaa, kbb, kab)[0]

    def diag(self, k):
        """g(k) = E[phi(u)^2], g'(k) for u ~ N(0, k)."""
        k = np.asarray(k, dtype=float)
        x, w = gauss_hermite(self.n_quad)
        u = np.sqrt(np.maximum(k, 0.0))[..., None] * x
        f, f1, f2 = self.fn(u), self.d1(u), self.d2(u)
        return (f * f) @ w, (f1 * f1 + f * f2) @ w

    def mean(self, k):
        """mu(k) = E[phi(u)], mu'(k) = 1/2 E[phi''(u)] for u ~ N(0, k)."""
        k = np.asarray(k, dtype=float)
        if self.odd:
            z = np.zeros_like(k)
            return z, z.copy()
        x, w = gauss_hermite(self.n_quad)
        u = np.sqrt(np.maximum(k, 0.0))[..., None] * x
        return self.fn(u) @ w, 0.5 * (self.d2(u) @ w)

    def _pair_quadrature(self, kaa, kbb, kab, chunk=2_000_000):
        x, w = gauss_hermite(self.n_quad)
        n = len(x)
        shape = kaa.shape
        kaa, kbb, kab = kaa.ravel(), kbb.ravel(), kab.ravel()
        out = [np.empty(kaa.shape) for _ in range(4)]
        step = max(1, chunk // (n * n))
        ww = np.outer(w, w)
        for s in range(0, kaa.size, step):
            sl = slice(s, s + step)
            sa = np.sqrt(np.maximum(kaa[sl], 0.0))
            sb = np.sqrt(np.maximum(kbb[sl], 0.0))
            rho = np.clip(kab[sl] / np.maximum(sa * sb, _TINY), -1.0, 1.0)
            ua = sa[:, None] * x  # (m, n)
            ub = sb[:, None, None] * (rho[:, None, None] * x[:, None]
                                      + np.sqrt(1.0 - rho * rho)[:, None, None] * x[None, :])
            fa, fa1, fa2 = self.fn(ua), self.d1(ua), self.d2(ua)
            fb, fb1, fb2 = self.fn(ub), self.d1(ub), self.d2(ub)
            out[0][sl] = np.einsum("mi,mij,ij->m", fa, fb, ww)
            out[1][sl] = 0.5 * np.einsum("mi,mij,ij->m", fa2, fb, ww)
            out[2][sl] = 0.5 * np.einsum("mi,mij,ij->m", fa, fb2, ww)
            out[3][sl] = np.einsum("mi,mij,ij->m", fa1, fb1, ww)
        return tuple(o.reshape(shape) for o in out)


class _Erf(Activation):
    """phi = erf: arcsine kernel G = (2/pi) arcsin(2kab / sqrt((1+2kaa)(1+2kbb))) (Eq. 2.4)."""

    def kernel(self, kaa, kbb, kab):
        x = 2.0 * np.asarray(kab, dtype=float) / np.sqrt((1.0 + 2.0 * np.asarray(kaa)) * (1.0 + 2.0 * np.asarray(kbb)))
        return (2.0 / math.pi) * np.arcsin(np.clip(x, -1.0, 1.0))

    def pair(self, kaa, kbb, kab):
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
        k = np.asarray(k, dtype=float)
        g = (2.0 / math.pi) * np.arcsin(2.0 * k / (1.0 + 2.0 * k))
        dg = (4.0 / math.pi) / ((1.0 + 2.0 * k) * np.sqrt(1.0 + 4.0 * k))
        return g, dg


class _Relu(Activation):
    """phi = max(u, 0): arc-cosine kernel (Cho & Saul 2009) (Eq. 2.5).

    G = sqrt(kaa kbb)/(2 pi) (sin t + (pi - t) cos t), cos t = kab/sqrt(kaa kbb);
    dG/dkab = (pi - t)/(2 pi); dG/dkaa = sqrt(kbb/kaa) sin t /(4 pi).
    """

    def pair(self, kaa, kbb, kab):
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

    def mean(self, k):
        k = np.asarray(k, dtype=float)
        kk = np.maximum(k, _TINY)
        return np.sqrt(kk / (2.0 * math.pi)), 0.5 / np.sqrt(2.0 * math.pi * kk)


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


# ----------------------------------------------------------------- builtins
_SQRT_PI = math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf_d1(u):
    return (2.0 / _SQRT_PI) * np.exp(-u * u)


def _erf_d2(u):
    return -2.0 * u * _erf_d1(u)


def _tanh_d1(u):
    t = np.tanh(u)
    return 1.0 - t * t


def _tanh_d2(u):
    t = np.tanh(u)
    return -2.0 * t * (1.0 - t * t)


def _relu(u):
    return np.maximum(u, 0.0)


def _relu_d1(u):
    return (np.asarray(u) > 0).astype(float)


def _zero(u):
    return np.zeros_like(np.asarray(u, dtype=float))


def _gelu(u):
    return u * special.ndtr(u)


def _gelu_d1(u):
    return special.ndtr(u) + u * _INV_SQRT_2PI * np.exp(-0.5 * u * u)


def _gelu_d2(u):
    return _INV_SQRT_2PI * np.exp(-0.5 * u * u) * (2.0 - u * u)


def _identity(u):
    return np.asarray(u, dtype=float)


def _one(u):
    return np.ones_like(np.asarray(u, dtype=float))


BUILTIN = {
    "erf": lambda: _Erf("erf", special.erf, _erf_d1, _erf_d2, odd=True, closed_form=True),
    "tanh": lambda: Activation("tanh", np.tanh, _tanh_d1, _tanh_d2, odd=True),
    "relu": lambda: _Relu("relu", _relu, _relu_d1, _zero, homogeneous=True, closed_form=True),
    "linear": lambda: _Linear("linear", _identity, _one, _zero, odd=True, homogeneous=True,
                              closed_form=True),
    "gelu": lambda: Activation("gelu", _gelu, _gelu_d1, _gelu_d2),
}


def from_callable(fn: Callable, d1: Optional[Callable] = None, d2: Optional[Callable] = None,
                  name: Optional[str] = None, odd: bool = False, n_quad: int = 64) -> Activation:
    """Wrap a user callable phi (vectorised over NumPy arrays) as an :class:`Activation`.

    Gaussian integrals use Gauss-Hermite quadrature; missing derivatives are
    central differences of ``fn``. Set ``odd=True`` if phi is odd (skips the
    mean, which is then exactly 0).
    """
    probe = np.linspace(-3.0, 3.0, 7)
    try:
        val = np.asarray(fn(probe), dtype=float)
    except Exception as exc:  # pragma: no cover - message path
        raise ValueError(f"activation callable {fn!r} failed on a NumPy array: {exc}") from exc
    if val.shape != probe.shape or not np.all(np.isfinite(val)):
        raise ValueError(f"activation callable {fn!r} must map a NumPy array elementwise to finite values")
    return Activation(name or getattr(fn, "__name__", "callable"), fn, d1 or _fd1(fn), d2 or _fd2(fn),
                      odd=odd, n_quad=n_quad)


def get_activation(activation) -> Activation:
    """Resolve ``"erf" | "tanh" | "relu" | "linear" | "gelu"``, a callable or an Activation."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.strip().lower()
        if key not in BUILTIN:
            raise ValueError(f"activation must be one of {sorted(BUILTIN)} or a callable, got {activation!r}")
        return BUILTIN[key]()
    if callable(activation):
        return from_callable(activation)
    raise ValueError(f"activation must be a name {sorted(BUILTIN)} or a callable, got {activation!r}")
