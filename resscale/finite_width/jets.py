"""Truncated bivariate Taylor arithmetic (jets) and activation Taylor coefficients (docs/theory.md Sec. 4.12.5).

A jet is a polynomial in two perturbation parameters (t, u) truncated to the box
t^i u^j, 0 <= i <= TD, 0 <= j <= UD (Eq. 4.105): stored as an array whose last axis holds
the coefficients c[i * (UD + 1) + j]. Box truncation is closed under multiplication
(t^i u^j t^k u^l = t^{i+k} u^{j+l} is dropped exactly when it leaves the box), so every
product, power and composition below is exact to the box. The full-block next order (Eq.
4.106-4.108) needs the box (3, 2): f1, f2, f3 on the diagonal (t, t^2, t^3) and the mixed
f2(x, y), f3(x, y, y), f4(x, x, y, y) (tu, tu^2, t^2 u^2).

Scalar functions are composed through their Taylor series at the constant term,
f(a0 + d) = sum_{k <= K} f^(k)(a0) d^k / k!, with K = TD + UD the nilpotency order of d.
"""
from __future__ import annotations

import math
import os

import numpy as np
from numpy.polynomial import hermite as _H, hermite_e as _He, polynomial as _Pn
from scipy import special

TD, UD = 3, 2                         # the box (Eq. 4.105)
NC = (TD + 1) * (UD + 1)              # number of coefficients
KMAX = TD + UD                        # d^(KMAX + 1) = 0 for d without constant term


def idx(i, j):
    """Position of the coefficient of t^i u^j."""
    return i * (UD + 1) + j


def _mult_triples():
    ia, ib, io = [], [], []
    for i in range(TD + 1):
        for j in range(UD + 1):
            for k in range(TD + 1 - i):
                for l in range(UD + 1 - j):
                    ia.append(idx(i, j))
                    ib.append(idx(k, l))
                    io.append(idx(i + k, j + l))
    return np.array(ia), np.array(ib), np.array(io)


_IA, _IB, _IO = _mult_triples()          # the 60 products inside the box


def _mul_rows(a, b, out, ia, ib, io):
    """out[r, io[k]] += a[r, ia[k]] * b[r, ib[k]] over rows r (numba-compiled when available)."""
    for r in range(a.shape[0]):
        for k in range(ia.shape[0]):
            out[r, io[k]] += a[r, ia[k]] * b[r, ib[k]]


_UNSET = object()
_nb_mul = _UNSET


def _compiled_mul():
    global _nb_mul
    if _nb_mul is _UNSET:
        _nb_mul = None
        if not os.environ.get("RESSCALE_NO_NUMBA"):
            try:
                import numba
                _nb_mul = numba.njit(cache=True)(_mul_rows)
            except Exception:  # pragma: no cover - numba absent or broken
                _nb_mul = None
    return _nb_mul


def const(x):
    """The jet of a constant array x (shape x.shape + (NC,))."""
    x = np.asarray(x, dtype=float)
    out = np.zeros(x.shape + (NC,))
    out[..., 0] = x
    return out


def var(which, shape=()):
    """The jet of t (which=0) or u (which=1)."""
    out = np.zeros(tuple(shape) + (NC,))
    out[..., idx(1, 0) if which == 0 else idx(0, 1)] = 1.0
    return out


def mul(a, b):
    """Product of two jets (broadcasting over leading axes); exact inside the box."""
    a, b = np.broadcast_arrays(a, b)
    shape = a.shape
    a2 = np.ascontiguousarray(a).reshape(-1, NC)
    b2 = np.ascontiguousarray(b).reshape(-1, NC)
    kern = _compiled_mul()
    if kern is not None:
        out = np.zeros_like(a2)
        kern(a2, b2, out, _IA, _IB, _IO)
    else:   # NumPy: one vector operation per output coefficient
        out = np.zeros_like(a2)
        for o in range(NC):
            sel = _IO == o
            out[:, o] = np.einsum("rk,rk->r", a2[:, _IA[sel]], b2[:, _IB[sel]])
    return out.reshape(shape)


def powers(d, kmax=KMAX):
    """[1, d, d^2, ..., d^kmax] for a jet d without constant term (list of jets)."""
    out = [const(np.ones(d.shape[:-1])), d]
    for _ in range(kmax - 1):
        out.append(mul(out[-1], d))
    return out[:kmax + 1]


def compose(derivs, a):
    """f(a) from f^(k)(a0), k = 0..KMAX (derivs: array (KMAX+1,) + a.shape[:-1]), a0 = a[..., 0]."""
    d = a.copy()
    d[..., 0] = 0.0
    pw = powers(d)
    out = np.zeros_like(a)
    for k in range(KMAX + 1):
        out = out + (derivs[k] / math.factorial(k))[..., None] * pw[k]
    return out


def sqrt(a):
    """sqrt of a jet with positive constant term."""
    a0 = a[..., 0]
    if np.any(a0 <= 0):
        raise FloatingPointError("jet sqrt of a non-positive constant term")
    ders = [np.sqrt(a0)]
    c = 0.5
    for k in range(1, KMAX + 1):
        ders.append(c * a0 ** (0.5 - k) * np.ones_like(a0))
        c *= (0.5 - k)
    return compose(np.array(ders), a)


def recip(a):
    """1 / a for a jet with non-zero constant term."""
    a0 = a[..., 0]
    ders = [(-1.0) ** k * math.factorial(k) * a0 ** (-(k + 1)) for k in range(KMAX + 1)]
    return compose(np.array(ders), a)


def cholesky(C):
    """Lower Cholesky factor of a symmetric jet matrix C (..., P, P, NC)."""
    P = C.shape[-2]
    Lc = np.zeros_like(C)
    for j in range(P):
        s = C[..., j, j, :].copy()
        for k in range(j):
            s = s - mul(Lc[..., j, k, :], Lc[..., j, k, :])
        Lc[..., j, j, :] = sqrt(s)
        inv = recip(Lc[..., j, j, :])
        for i in range(j + 1, P):
            s = C[..., i, j, :].copy()
            for k in range(j):
                s = s - mul(Lc[..., i, k, :], Lc[..., j, k, :])
            Lc[..., i, j, :] = mul(s, inv)
    return Lc


def matvec(A, x):
    """(A x)_i = sum_j A_ij x_j for a jet matrix (..., P, P, NC) and jet vector (..., P, NC)."""
    P = A.shape[-2]
    out = np.zeros(np.broadcast_shapes(A.shape[:-3], x.shape[:-2]) + (P, NC))
    for i in range(P):
        for j in range(P):
            out[..., i, :] += mul(A[..., i, j, :], x[..., j, :])
    return out


def outer(x, y):
    """x_a y_b for jet vectors (..., P, NC) -> (..., P, P, NC)."""
    return mul(x[..., :, None, :], y[..., None, :, :])


# ----------------------------------------------------------------- activation Taylor coefficients
SMOOTH_BUILTINS = ("erf", "tanh", "gelu", "linear")
_SQRT_PI = math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _tanh_polys(kmax):
    """p_k with tanh^(k)(u) = p_k(tanh u): p_0 = T, p_{k+1} = p_k'(T) (1 - T^2)."""
    ps = [np.array([0.0, 1.0])]
    for _ in range(kmax):
        ps.append(_Pn.polymul(_Pn.polyder(ps[-1]), np.array([1.0, 0.0, -1.0])))
    return ps


def phi_derivatives(name, u, kmax):
    """phi^(k)(u), k = 0..kmax, for the built-in activations (array (kmax+1,) + u.shape).

    erf: erf^(k) = (2/sqrt(pi)) (-1)^(k-1) H_{k-1}(u) e^{-u^2} (physicists' Hermite);
    tanh: polynomials in tanh; gelu = u Phi(u): gelu^(k) = u Phi^(k) + k Phi^(k-1),
    Phi^(j) = (-1)^(j-1) He_{j-1}(u) N(u) (probabilists' Hermite); linear: u, 1, 0, ...;
    relu: max(u, 0), H(u) = 1[u > 0], then 0: the pointwise (almost-everywhere) values only; the
    distributional parts relu^(2) = delta, relu^(3) = delta' are the kink terms (Sec. 4.12.6).
    ``name`` may also be a smooth :class:`~resscale.activations.Activation` (a user callable): see
    :func:`callable_derivatives`.
    """
    if not isinstance(name, str):
        return callable_derivatives(name, u, kmax)
    u = np.asarray(u, dtype=float)
    out = np.zeros((kmax + 1,) + u.shape)
    if name == "linear":
        out[0] = u
        if kmax >= 1:
            out[1] = 1.0
    elif name == "relu":
        out[0] = np.maximum(u, 0.0)
        if kmax >= 1:
            out[1] = (u > 0).astype(float)
    elif name == "erf":
        out[0] = special.erf(u)
        g = (2.0 / _SQRT_PI) * np.exp(-u * u)
        for k in range(1, kmax + 1):
            c = np.zeros(k)
            c[k - 1] = 1.0
            out[k] = (-1.0) ** (k - 1) * _H.hermval(u, c) * g
    elif name == "tanh":
        T = np.tanh(u)
        for k, p in enumerate(_tanh_polys(kmax)):
            out[k] = _Pn.polyval(T, p)
    elif name == "gelu":
        n = _INV_SQRT_2PI * np.exp(-0.5 * u * u)

        def Phi(j):
            if j == 0:
                return special.ndtr(u)
            c = np.zeros(j)
            c[j - 1] = 1.0
            return (-1.0) ** (j - 1) * _He.hermeval(u, c) * n
        for k in range(kmax + 1):
            out[k] = u * Phi(k) + (k * Phi(k - 1) if k >= 1 else 0.0)
    else:
        raise NotImplementedError(name)
    return out


# central-difference stencils of phi (step _FD_H): derivatives 3, 4, 5 of a smooth user callable
_FD_H = 1e-2
_FD_STENCILS = {
    3: ((2, 1.0), (1, -2.0), (-1, 2.0), (-2, -1.0)),                       # / (2 h^3)
    4: ((2, 1.0), (1, -4.0), (0, 6.0), (-1, -4.0), (-2, 1.0)),             # / h^4
    5: ((3, 1.0), (2, -4.0), (1, 5.0), (-1, -5.0), (-2, 4.0), (-3, -1.0)),  # / (2 h^5)
}
_FD_DEN = {3: 2.0, 4: 1.0, 5: 2.0}


def callable_derivatives(phi, u, kmax):
    """phi^(k)(u), k = 0..kmax, of a smooth user activation (Sec. 4.12.5): phi, phi', phi'' from the
    Activation (declared or its own central differences), phi^(3..5) by central differences of phi with
    steps h = 1e-2 and 2h, Richardson-extrapolated in h^2 (measured on erf: 1e-6 for k = 3, 4; roundoff
    ~1e-16 |phi| / h^k). Only k <= 4 reach the coefficients that V1 and M2 use (k = 5 only t^3 u^2)."""
    u = np.asarray(u, dtype=float)
    out = np.zeros((kmax + 1,) + u.shape)
    fns = (phi.fn, phi.d1, phi.d2)
    for k in range(min(kmax, 2) + 1):
        out[k] = np.asarray(fns[k](u), dtype=float)
    f = {}                            # phi(u + j h), each offset evaluated once for all stencils

    def central(k, s):                # step s h
        acc = np.zeros_like(u)
        for off, c in _FD_STENCILS[k]:
            j = off * s
            if j not in f:
                f[j] = np.asarray(phi.fn(u + j * _FD_H), dtype=float)
            acc += c * f[j]
        return acc / (_FD_DEN[k] * (s * _FD_H) ** k)
    for k in range(3, kmax + 1):     # Richardson in h^2: truncation O(h^4)
        out[k] = (4.0 * central(k, 1) - central(k, 2)) / 3.0
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"activation {phi.name!r}: a derivative is not finite at some tagged-neuron "
                                 "value (order=2, block='full')")
    return out
