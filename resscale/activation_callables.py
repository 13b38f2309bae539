"""User callables as activations: validation and kink detection (docs/theory.md Sec. 5.1).

:func:`from_callable` wraps a vectorised phi as an :class:`~resscale.activation_quadrature.Activation`
(phi', phi'' by central differences unless given). It refuses a callable that is not finite on
[-12, 12] or (unless its kinks are declared) not C^2 numerically (:func:`find_kinks`); declared
kinks give ``Activation.smooth = False`` and a :class:`KinkedActivationWarning`.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import numpy as np

from .activation_quadrature import Activation, _fd1, _fd2


class KinkedActivationWarning(UserWarning):
    """A user activation with declared kinks: mean-field integrals are only approximately right."""


_PROBE = np.linspace(-12.0, 12.0, 481)   # finiteness probe (covers +-8.5 sd of k up to ~2)
_KINK_GRID = np.linspace(-8.0, 8.0, 1601)  # spacing 0.01 = the larger difference step
_KINK_H = 0.01


def find_kinks(fn, grid=_KINK_GRID, h=_KINK_H, rtol=1e-2):
    """Points of ``grid`` where phi is numerically not C^2 (a kink or a jump).

    Compares central second differences at steps h and h/2: for a smooth phi they
    differ by ~ phi^(4) h^2 / 16 (~1e-5 for unit-scale features), at a jump J of phi'
    within h of a grid point by >= ~J/(3h) (grid spacing <= h, so every kink is seen).
    Flags where the difference exceeds rtol * (1 + median |phi''|). Returns the flagged
    points, one representative per cluster.
    """
    u = np.asarray(grid, dtype=float)
    f0 = np.asarray(fn(u), dtype=float)
    d_h = (np.asarray(fn(u + h), dtype=float) - 2.0 * f0 + np.asarray(fn(u - h), dtype=float)) / (h * h)
    h2 = 0.5 * h
    d_h2 = (np.asarray(fn(u + h2), dtype=float) - 2.0 * f0 + np.asarray(fn(u - h2), dtype=float)) / (h2 * h2)
    diff = np.abs(d_h - d_h2)
    scale = 1.0 + np.median(np.abs(d_h2))
    bad = np.flatnonzero(~(diff <= rtol * scale))
    if bad.size == 0:
        return []
    groups = np.split(bad, np.flatnonzero(np.diff(bad) > 3) + 1)
    return [float(u[g[np.argmax(diff[g])]]) for g in groups]


def from_callable(fn: Callable, d1: Optional[Callable] = None, d2: Optional[Callable] = None,
                  name: Optional[str] = None, odd: bool = False, n_quad: int = 64,
                  kinks=None, check_smooth: bool = True) -> Activation:
    """Wrap a user callable phi (vectorised over NumPy arrays) as an :class:`Activation`.

    Gaussian integrals use quadrature; missing derivatives are central differences
    of ``fn`` (step 1e-4 / 1e-3). Set ``odd=True`` if phi is odd (skips the mean,
    which is then exactly 0).

    Guards (issue 12): phi must be finite on [-12, 12] (ValueError naming the first
    bad point; the quadrature also raises if phi gives NaN at any of its nodes).
    Non-smooth phi: finite differences give a wrong phi'' at a kink (relu as a callable
    loses the delta part of phi''), so unless ``kinks`` is given phi is checked
    numerically (:func:`find_kinks` on [-8, 8]) and a kink or jump raises ValueError
    saying how to declare it. Declare kinks with ``kinks=[u0, ...]`` (and preferably
    ``d1``): the result then has ``smooth=False``; the mean-field code accepts it (it
    needs only phi and phi'), the finite-width code must refuse it
    (``Activation.supports_finite_width``). ``kinks=[]`` declares phi smooth without
    the numerical check; ``check_smooth=False`` skips the check as well.
    A declared ``d1`` is checked against central differences of phi away from kinks.
    """
    label = name or getattr(fn, "__name__", "callable")
    probe = _PROBE
    try:
        with np.errstate(all="ignore"):
            val = np.asarray(fn(probe), dtype=float)
    except Exception as exc:  # pragma: no cover - message path
        raise ValueError(f"activation callable {label!r} failed on a NumPy array: {exc}") from exc
    if val.shape != probe.shape:
        raise ValueError(f"activation callable {label!r} must map a NumPy array elementwise "
                         f"(shape {probe.shape} in, got {val.shape} out)")
    if not np.all(np.isfinite(val)):
        ub = probe[~np.isfinite(val)]
        raise ValueError(f"activation callable {label!r} must map a NumPy array elementwise to finite values: "
                         f"phi(u) is not finite at u = {ub[0]:.4g} (and {ub.size - 1} more of {probe.size} "
                         f"probe points in [-12, 12]); Gaussian integrals need phi on the whole real line")
    if kinks is None:
        found = find_kinks(fn) if check_smooth else []
        if found:
            pts = ", ".join(f"{x:.3g}" for x in found[:5])
            raise ValueError(
                f"activation callable {label!r} is not smooth: its second finite differences at two step "
                f"sizes disagree near u = {pts} (a kink or a jump), so phi'' by finite differences would be "
                f"silently wrong. Declare it: rs.from_callable(fn, d1=<phi'>, kinks=[{pts}]) (mean field "
                f"then works; the finite-width theory needs phi'' and refuses kinked activations), use "
                f"a built-in (e.g. 'relu'), or pass kinks=[] if phi is in fact C^2.")
        kinks = ()
    kinks = tuple(float(x) for x in kinks)
    if kinks:
        warnings.warn(
            f"activation {label!r} declared with kinks at {list(kinks)}: its Gaussian integrals use the "
            "quadrature built for smooth phi, which converges only slowly across a kink (measured for relu "
            "as a callable: G and E[phi' phi'] off by ~3e-4 relative at K = 1, rho = 0.5, and by up to "
            "~30% at K = 0.01, rho = -0.9); use a built-in closed form (e.g. 'relu') where one exists. "
            "The finite-width theory refuses it (Activation.supports_finite_width is False).",
            KinkedActivationWarning, stacklevel=2)
    for nm, g in (("d1", d1), ("d2", d2)):
        if g is not None:
            gv = np.asarray(g(probe), dtype=float)
            if gv.shape != probe.shape or not np.all(np.isfinite(gv)):
                raise ValueError(f"activation callable {label!r}: {nm} must map arrays elementwise to "
                                 "finite values on [-12, 12]")
    if d1 is not None:   # a declared phi' must agree with central differences of phi away from kinks
        u = np.linspace(-4.0, 4.0, 161) + 0.00317
        far = np.all(np.abs(u[:, None] - np.asarray(kinks + (np.inf,))[None, :]) > 1e-2, axis=1)
        fd = _fd1(fn)(u[far])
        dv = np.asarray(d1(u[far]), dtype=float)
        if np.max(np.abs(fd - dv)) > 1e-5 * (1.0 + np.max(np.abs(fd))):
            k = int(np.argmax(np.abs(fd - dv)))
            raise ValueError(f"activation callable {label!r}: the declared d1 does not match the derivative "
                             f"of phi (at u = {u[far][k]:.4g}: d1 = {dv[k]:.6g}, finite difference "
                             f"{fd[k]:.6g})")
    return Activation(label, fn, d1 or _fd1(fn), d2 or _fd2(fn), odd=odd, n_quad=n_quad,
                      smooth=not kinks, kinks=kinks)
