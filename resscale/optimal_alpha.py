"""Optimal residual scaling alpha* = argmax_alpha S(alpha) (docs/theory.md, Sec. 6).

Numerical argmax: S is evaluated on a log-spaced grid of alphas in one
vectorised pass, the best grid point brackets the maximum, and a 1-D
optimiser refines it in log alpha (two vectorised 5-point passes centred on the
predicted maximum, then one evaluation there, :func:`_refine_argmax`). A maximum on the edge of the
grid is reported as "no interior maximum" (``interior=False``, ``alpha=nan``
and a :class:`NoInteriorMaximumWarning`).

Analytic expression (Eq. 6.1-6.4): for small alpha and large L at fixed
T = alpha^2 L the recursion becomes the ODE (tau = alpha^2 l)

    dq/dtau = F_q(q),   dk/dtau = F_k(q, k)     (full: sigma_w2 G + sigma_b2;
                                                reduced, odd phi: G(sigma_w2 K + sigma_b2))
    log S(T) = int_0^T sigma_w2 A(tau) dtau + log q0 - log q(T)

so S depends on alpha and L only through T, and its maxima sit where
d log S/dT = sigma_w2 A(q, k) - F_q(q)/q = 0 (Eq. 6.3). Hence

    alpha*_analytic = sqrt(T* / L)                                              (Eq. 6.4)

with T* the zero (from + to -) of that slope along the flow with the largest S.
Corrections are O(1/L) relative (theory.md Sec. 6.2, measured in tests). The
limit needs a zero-mean branch: it is not defined for the reduced block with
a non-odd phi (the residual-stream mean grows like alpha l, not alpha^2 l).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.integrate import solve_ivp

from .inputs import (Q0_MIN, ParameterTypeError, check_bool, check_int, check_range, check_real, check_scalar,
                     scale_culprits)
from .finite_width.core import _check_width
from .finite_width.sensitivity import sensitivity_correction
from .sensitivity import log_sensitivity, sensitivity

_TAU_MAX = 1e7
_FLOW_EVALS_CLOSED = 200_000      # analytic_alpha's budget of rate evaluations: closed-form phi (~20 us each)
_FLOW_EVALS_QUADRATURE = 4_000    # quadrature phi (~0.6 ms each): ~2.5 s; typical flows need < 2,500


class NoInteriorMaximumWarning(RuntimeWarning):
    """S(alpha) has no interior maximum on the scanned range."""


@dataclass
class OptimalAlphaResult:
    """Result of :func:`optimal_alpha`.

    Attributes
    ----------
    alpha : float            numerical argmax (nan when ``interior`` is False)
    sensitivity : float      S at ``alpha`` (at the best edge when not interior)
    alpha_analytic : float   sqrt(T*/L) (Eq. 6.4); nan outside its validity (see ``analytic_note``)
    T_star : float           alpha*^2 L of the continuum limit
    interior : bool          whether the maximum is interior to the scanned range
    message : str            human-readable summary
    analytic_note : str      why alpha_analytic is nan, or its validity statement
    alphas, sensitivities    the scan grid and S on it
    width : int or None      None for infinite width; N for the 1/N-corrected S_N
    """

    alpha: float
    sensitivity: float
    alpha_analytic: float
    T_star: float
    interior: bool
    message: str
    analytic_note: str
    alphas: np.ndarray = field(repr=False)
    sensitivities: np.ndarray = field(repr=False)
    width: Optional[int] = None

    def to_dict(self) -> dict:
        def f(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x
        return {"alpha": f(self.alpha), "sensitivity": f(self.sensitivity),
                "alpha_analytic": f(self.alpha_analytic), "T_star": f(self.T_star),
                "interior": self.interior, "message": self.message,
                "analytic_note": self.analytic_note, "width": self.width}


def _continuum_rates(net, q, k, sb2):
    """(dq/dtau, dk/dtau, d(dk/dtau)/dk) of the continuum flow (Eq. 6.1-6.2): the block's
    ``continuum_rates`` (:mod:`resscale.blocks`); sigma_w2 A for the full and reduced blocks."""
    return net.block_type.continuum_rates(net, q, k, sb2)


_LOGQ_MAX = 600.0  # stop the flow where q reaches e^600 (float64 overflows near e^709)


def _tabulated_view(net):
    """``net`` with its activation's tabulated pair functions when a table is cached
    (:func:`resscale.tabulated_pairs.for_flow`), else ``net``."""
    from .tabulated_pairs import NetView, for_flow
    phi = for_flow(net.phi)
    return net if phi is net.phi else NetView(net, phi)


def _flow_rates(net, logq, c):
    """(dq/dtau / q, dk/dtau / q, sigma_w2 A, q) at (log q, c), or None if not finite."""
    if net.phi.homogeneous:  # 1-homogeneous map: work at q = 1 with the bias scaled by 1/q
        q, sb2 = 1.0, net.sigma_b2 * math.exp(-min(max(logq, -700.0), 700.0))
    else:
        if not logq < 709.0:
            return None
        q, sb2 = math.exp(logq), net.sigma_b2
        if q <= 0.0:
            return None
    c = min(1.0, max(-1.0, c))
    with np.errstate(all="ignore"):
        try:
            dq, dk, sA = (float(v) for v in _continuum_rates(_tabulated_view(net), np.float64(q), np.float64(c * q), sb2))
        except (OverflowError, ZeroDivisionError, FloatingPointError, ValueError):
            return None
    out = (dq / q, dk / q, sA)
    if not all(math.isfinite(v) for v in out):
        return None
    return out


def analytic_alpha(net, c0, q0=1.0):
    """Leading-order alpha* = sqrt(T*/L) from the continuum limit (Eq. 6.1-6.4).

    Returns (alpha_analytic, T_star, note); alpha_analytic is nan (with the
    reason in ``note``) when the continuum S(T) has no interior maximum or the
    limit does not apply. Never raises for a valid network and valid c0, q0:
    the flow is integrated in (log q, c, log S) and stopped (terminal events)
    before q overflows float64 or where the Gaussian integrals stop being
    finite (e.g. gelu, whose q grows like exp(T/2)); the note then says where.

    Raises ValueError naming ``c0`` (not in [-1, 1]) or ``q0`` (not finite > 0).

    Cost: the flow is integrated in units of its speed at the input when that exceeds 1e3
    (sigma_w2 = 1e308 is as fast as sigma_w2 = 1), within a budget of rate evaluations
    (200,000 for closed-form phi, 4,000 for quadrature, ~3 s); a flow that is not smooth
    (e.g. an oscillating callable such as sin, whose quadrature is noisy at large q) stops
    there, with the reason in the note (docs/theory.md Sec. 5.1).
    """
    from .network import ResNet

    if not isinstance(net, ResNet):
        raise ParameterTypeError(f"net must be a resscale.ResNet, got {type(net).__name__}")
    c0 = check_real("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_real("q0", q0, lo=Q0_MIN)
    obstacle = net.block_type.continuum_obstacle(net)
    if obstacle is not None:
        return math.nan, math.nan, obstacle
    r_in = _flow_rates(net, math.log(q0), c0)
    if r_in is None:
        return math.nan, math.nan, (f"the continuum flow is not finite at the input (q0 = {q0:g}): "
                                    "the Gaussian integrals of the activation overflow there")
    # time in units of the flow's speed at the input (sigma_w2 = 1e308 makes the rates ~1e308: without
    # this the integrator crawls for minutes); T = tau_s / rate
    rate = max(abs(v) for v in r_in)
    rate = rate if rate > 1e3 else 1.0   # ordinary flows: unscaled (tau_s = tau)
    # cost guard: a budget of rate evaluations (a non-smooth flow, e.g. the quadrature of an
    # oscillating callable such as sin at large q, makes the steps tiny); the note says so
    budget = [_FLOW_EVALS_CLOSED if net.phi.closed_form else _FLOW_EVALS_QUADRATURE]
    cache = {}

    def rates(y):  # _flow_rates with a small cache (the events re-evaluate the step's end point)
        key = (float(y[0]), float(y[1]))
        if key not in cache:
            budget[0] -= 1
            if len(cache) > 64:
                cache.clear()
            cache[key] = _flow_rates(net, key[0], key[1])
        return cache[key]

    # integrate in u = log(1 + tau_s) so that T up to 1e7 takes few steps (the flow slows down)
    def rhs(u, y):
        r = rates(y)
        if r is None:  # only reached past the terminal 'finite' event; freeze the flow
            return [0.0, 0.0, 0.0]
        dq_q, dk_q, sA = r
        c = min(1.0, max(-1.0, y[1]))
        j = math.exp(u) / rate  # dtau/du
        return [j * dq_q, j * (dk_q - c * dq_q), j * (sA - dq_q)]

    def slope(_, y):  # d log S / dT (Eq. 6.3)
        r = rates(y)
        return 0.0 if r is None else r[2] - r[0]

    slope.direction = -1  # local maxima of log S(T)

    def q_limit(_, y):  # stop before q overflows float64 (homogeneous maps work at q = 1)
        return 1.0 if net.phi.homogeneous else _LOGQ_MAX - y[0]

    q_limit.terminal = True

    def finite(_, y):  # stop where the rates stop being finite
        return 1.0 if rates(y) is not None else -1.0

    finite.terminal = True

    t_stop = [math.inf]

    def within_budget(t, y):  # a sign change at the step where the budget ran out (not state-only:
        if budget[0] <= 0 and t_stop[0] == math.inf:   # the root finder re-evaluates the old point)
            t_stop[0] = t
        return 1.0 if t < t_stop[0] else -1.0

    within_budget.terminal = True
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            sol = solve_ivp(rhs, (0.0, math.log1p(_TAU_MAX)), [math.log(q0), c0, 0.0],
                            events=[slope, q_limit, finite, within_budget], rtol=1e-10, atol=1e-12,
                            method="RK45")
        except (OverflowError, ZeroDivisionError, FloatingPointError, ValueError) as exc:  # pragma: no cover
            return math.nan, math.nan, f"the continuum flow could not be integrated ({type(exc).__name__}: {exc})"
    stop = ""
    if sol.t_events[1].size or sol.t_events[2].size or sol.t_events[3].size or sol.status < 0:
        T_end = float(np.expm1(sol.t[-1])) / rate
        why = ("q reached e^600 (float64 limit)" if sol.t_events[1].size else
               "the Gaussian integrals stopped being finite" if sol.t_events[2].size else
               (f"the integrator used up its budget of {_FLOW_EVALS_CLOSED if net.phi.closed_form else _FLOW_EVALS_QUADRATURE} "
                "evaluations of the rates: the flow is not smooth there, e.g. the quadrature of an oscillating "
                "callable activation at large q") if sol.t_events[3].size else
               f"the integrator stopped ({sol.message})")
        stop = f"; the flow was followed up to T = {T_end:.4g} only ({why})"
    T_ev, y_ev = sol.t_events[0], sol.y_events[0]
    if T_ev.size:
        keep = np.isfinite(y_ev[:, 2])
        T_ev, y_ev = T_ev[keep], y_ev[keep]
    if T_ev.size == 0 or float(np.max(y_ev[:, 2])) <= 1e-12:
        return math.nan, math.nan, (f"no interior maximum: the continuum S(T) has no maximum above S(0) = 1 "
                                    f"for 0 < T = alpha^2 L < {_TAU_MAX / rate:g} at leading order in 1/L" + stop)
    T = float(np.expm1(T_ev[int(np.argmax(y_ev[:, 2]))])) / rate
    return math.sqrt(T / net.depth), T, ("leading order in 1/L (continuum limit T = alpha^2 L fixed); "
                                        "relative error O(1/L), see docs/theory.md Sec. 6.2" + stop)


def _refine_argmax(logS, lo, hi, xatol, mid=None, y3=None, n=41):
    """Maximise logS on [lo, hi] (log alpha) around the grid's best point ``mid``.

    With ``mid`` and the grid values ``y3`` at (lo, mid, hi): two vectorised passes of 5 points
    each (spacing h = grid step / 12, then / 144) centred on the predicted maximum (the parabola
    through the three grid points, then the maximum of the quartic through the previous pass's 5
    points, whose error is O(h^4)), and one evaluation at the final prediction: 11 trajectories
    in 3 calls (was 83: two 41-point zoom passes, :func:`_refine_argmax_zoom`, still the fallback
    when a pass's best point sits on the edge of its 5 or the quartic is not concave there).
    """
    if mid is None or y3 is None:
        return _refine_argmax_zoom(logS, lo, hi, xatol, n)
    xl, xm, xh = math.log(lo), math.log(mid), math.log(hi)
    y0, y1, y2 = (float(v) for v in y3)
    best_x, best_l = xm, y1
    h = 0.5 * (xh - xl)
    den = y0 - 2.0 * y1 + y2
    xp = xm + 0.5 * h * (y0 - y2) / den if den < 0 else xm
    xp = min(max(xp, xm - h), xm + h)
    offs = np.arange(-2.0, 3.0)
    for _ in range(2):
        h /= 12.0
        x = xp + h * offs
        y = np.asarray(logS(np.exp(x)), dtype=float)
        if not np.all(np.isfinite(y)):
            return _refine_argmax_zoom(logS, lo, hi, xatol, n)
        j = int(np.argmax(y))
        if y[j] > best_l:
            best_x, best_l = float(x[j]), float(y[j])
        xq = _quartic_argmax(offs, y) if 0 < j < 4 else None
        if xq is None:
            return _refine_argmax_zoom(logS, lo, hi, xatol, n)
        xp = xp + h * xq
    yp = float(np.asarray(logS(np.exp([xp])), dtype=float)[0])
    if np.isfinite(yp) and yp >= best_l:
        best_x, best_l = xp, yp
    return float(np.exp(best_x)), best_l


def _quartic_argmax(t, y):
    """Maximiser in [t[1], t[3]] of the quartic through (t, y) (5 points), or None where it is not
    concave there (Newton on the derivative from the best point)."""
    c = np.polynomial.polynomial.polyfit(t, y - np.max(y), 4)
    d1 = np.polynomial.polynomial.polyder(c)
    d2 = np.polynomial.polynomial.polyder(d1)
    u = float(t[int(np.argmax(y))])
    pv = np.polynomial.polynomial.polyval
    for _ in range(30):
        s = float(pv(u, d2))
        if not s < 0.0:
            return None
        step = float(pv(u, d1)) / s
        u -= step
        if abs(step) < 1e-14:
            break
    if not (t[1] <= u <= t[3]) or not float(pv(u, d2)) < 0.0:
        return None
    return u


def _refine_argmax_zoom(logS, lo, hi, xatol, n=41):
    """Maximise logS on [lo, hi] (log alpha): vectorised zoom passes, then a parabolic step.

    Each pass evaluates ``n`` log-spaced alphas in one vectorised call and
    shrinks the bracket to the neighbours of the best point; once the bracket
    is narrower than max(50 xatol, 1e-3) in log alpha (or after 4 passes), the maximum of
    the parabola through the best point and its neighbours is evaluated and
    kept if it is better. (Brent's method would need ~20 sequential passes
    over all layers; here 2-3 vectorised passes do.)
    """
    best_a, best_l = lo, -np.inf
    for _ in range(4):
        x = np.linspace(math.log(lo), math.log(hi), n)
        y = np.asarray(logS(np.exp(x)), dtype=float)
        j = int(np.clip(np.argmax(y), 1, n - 2))
        if y[j] > best_l:
            best_a, best_l = float(np.exp(x[j])), float(y[j])
        lo, hi = float(np.exp(x[j - 1])), float(np.exp(x[j + 1]))
        if x[j + 1] - x[j - 1] < max(50 * xatol, 1e-3):  # the parabola is then exact to << xatol
            break
    x0, x1, x2 = x[j - 1], x[j], x[j + 1]
    y0, y1, y2 = y[j - 1], y[j], y[j + 1]
    den = (y0 - 2 * y1 + y2)
    if den < 0:
        xp = x1 + 0.5 * (x2 - x1) * (y0 - y2) / den
        yp = float(np.asarray(logS(np.exp([xp])), dtype=float)[0])
        if np.isfinite(yp) and yp > best_l:
            best_a, best_l = float(np.exp(xp)), yp
    return best_a, best_l


def _optimal_alpha_finite_width(net, c0, q0, width, alpha_range, n_grid, xatol, order=1):
    """alpha*(N): maximise S_N = S + delta/N (docs/theory.md Eq. 4.29) near the mean-field alpha*.

    delta(alpha) costs two finite-width evaluations, so it is computed on a 5-point stencil
    around the mean-field optimum (wider nodes only for large shifts) and interpolated (see
    :func:`optimal_alpha_finite_width`); S itself is exact.
    """
    from .network import _check_real

    width = _check_real("width", width, min_value=1, integer=True)
    base = optimal_alpha(net, c0, q0, alpha_range=alpha_range, n_grid=n_grid, xatol=xatol)
    base.width = width
    if not base.interior:
        base.message += "; no mean-field maximum, so no finite-width refinement"
        return base
    r = optimal_alpha_finite_width(net, c0, q0, width, alpha_inf=base.alpha, xatol=xatol, order=order)
    nodes = np.asarray(r["nodes"], dtype=float)
    S_nodes = np.exp(log_sensitivity(net, c0, q0, nodes)) + np.asarray(r["deltas"], dtype=float) / width
    msg = (f"alpha*(N={width}) = {r['alpha']:.6g} with S_N = {r['sensitivity']:.6g} "
           f"(mean field: alpha* = {base.alpha:.6g}, S = {base.sensitivity:.6g})")
    an = analytic_alpha_finite_width(net, c0, q0, width) if np.isfinite(base.T_star) else None
    if an is not None and np.isfinite(an["alpha"]):
        a_an, T_an, note = an["alpha"], an["T_star_N"], an["note"]
    else:
        a_an, T_an = base.alpha_analytic, base.T_star
        note = "infinite-width leading-order value (no finite-width expansion here); " + base.analytic_note
    return OptimalAlphaResult(float(r["alpha"]), float(r["sensitivity"]), a_an, T_an,
                              bool(r["interior"]), msg, note, nodes, S_nodes, width)


def optimal_alpha(net, c0=None, q0=1.0, width=None, alpha_range=(1e-4, 1e2), n_grid=200,
                  xatol=1e-7, analytic=True, *, X=None, order=1, **data_options) -> OptimalAlphaResult:
    """alpha* = argmax_alpha S(alpha; L, c0, q0, ...) (net.alpha is ignored).

    Parameters
    ----------
    net : ResNet (block "full" or "reduced")
    c0, q0 : input correlation in [-1, 1] and input norm > 0
    width : int, optional
        Finite width N: maximise the 1/N-corrected S_N = S + delta/N
        (docs/theory.md Eq. 4.29) instead; ``alphas``/``sensitivities`` of the
        result are then the interpolation nodes of delta and S_N there
        (about 30 s at L = 100).
    order : 1 (default) | 2 -- with ``width``: maximise S_N to O(1/N^2), S + delta/N + delta2/N^2
        (docs/theory.md Eq. 4.97; blocks two_layer / reduced / feedforward, NotImplementedError otherwise).
    alpha_range : (lo, hi)
        Scan range; a maximum at an edge is reported as not interior.
    n_grid : int
        Log-spaced grid points (one vectorised pass), then two 5-point refinement passes
        and the final point (11 trajectories, :func:`_refine_argmax`).
    analytic : bool
        Also compute ``alpha_analytic`` (Eq. 6.4); ``False`` skips it (nan) for sweeps.

    X : (P, d) array, keyword-only
        A data set instead of (c0, q0): maximise the data-level sensitivity (mean over the
        data's pairs of dc^L_ab/dc^0_ab, docs/theory.md Sec. 8) of X sent through the input
        layer; ``data_options`` (measure, max_pairs, seed, pairs, labels, n_boot) go to
        :func:`resscale.data_sensitivity.optimal_alpha_data`.

    Returns
    -------
    OptimalAlphaResult with ``.alpha``, ``.sensitivity``, ``.alpha_analytic`` ...
    """
    from .network import ResNet

    if X is not None or data_options:  # data-level alpha* (resscale/data_sensitivity.py)
        from .data_sensitivity import _optimal_alpha_hook
        return _optimal_alpha_hook(net, c0, X, width, alpha_range, n_grid, xatol, analytic, data_options)
    if c0 is None:
        raise ValueError("optimal_alpha needs c0 (the input correlation of two inputs) or X= (a data set)")

    if not isinstance(net, ResNet):
        raise ParameterTypeError(f"net must be a resscale.ResNet, got {type(net).__name__}")
    if not net.block_type.residual:
        raise ValueError(f"block={net.block!r} has no residual scaling alpha to optimise")
    c0 = check_real("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_real("q0", q0, lo=Q0_MIN)
    lo, hi = check_range("alpha_range", alpha_range, lo=0.0)
    n_grid = check_int("n_grid", n_grid, lo=3, hi=100_000)
    xatol = check_real("xatol", xatol, lo=0.0, strict_lo=True)
    analytic = check_bool("analytic", analytic)
    width = check_int("width", width, lo=1, allow_none=True)
    if width is not None:
        return _optimal_alpha_finite_width(net, c0, q0, width, (lo, hi), n_grid, xatol, order=order)

    def logS(a):
        return log_sensitivity(net, c0, q0, a, strict=False)

    grid = np.logspace(math.log10(lo), math.log10(hi), n_grid)
    lS = logS(grid)
    ok = np.isfinite(lS)
    overflow_note = ""
    if not ok[0]:
        culprits = scale_culprits(net, q0=q0)
        raise OverflowError(f"the sensitivity is not finite (the kernel overflows float64) already at the "
                            f"smallest alpha = {grid[0]:g} of alpha_range"
                            + (f", because of the large input(s) {culprits}" if culprits else "")
                            + "; lower alpha_range[0], depth, q0 or the variances sigma_w2 / sigma_b2 of net")
    if not np.all(ok):  # kernel overflow at large alpha (gelu): scan only where S is defined
        first_bad = int(np.argmin(ok))
        overflow_note = (f" (the kernel overflows float64 for alpha >= {grid[first_bad]:.3g}; "
                         "scan truncated there)")
        grid, lS = grid[:first_bad], lS[:first_bad]
        hi = float(grid[-1])
    i = int(np.argmax(lS))
    # a flat S (e.g. relu full block at c0 = 1, where S = 1 exactly) has no maximum
    flat = float(np.max(lS) - min(lS[0], lS[-1])) < 1e-9
    a_an, T, note = analytic_alpha(net, c0, q0) if analytic else (math.nan, math.nan, "not computed")
    if i in (0, len(grid) - 1) or flat:
        edge = "smallest" if i == 0 else "largest"
        msg = (f"no interior maximum: S(alpha) is constant to 1e-9 on [{lo:g}, {hi:g}]" if flat else
               f"no interior maximum: S(alpha) is largest at the {edge} scanned alpha = {grid[i]:.3g} "
               f"(range [{lo:g}, {hi:g}])") + overflow_note
        warnings.warn(msg, NoInteriorMaximumWarning, stacklevel=2)
        return OptimalAlphaResult(math.nan, float(np.exp(lS[i])), a_an, T, False, msg, note,
                                  grid, np.exp(lS))
    a_star, l_star = _refine_argmax(logS, grid[i - 1], grid[i + 1], xatol, mid=grid[i], y3=lS[i - 1:i + 2])
    if l_star < lS[i]:  # never worse than the best grid point
        a_star, l_star = float(grid[i]), float(lS[i])
    msg = f"alpha* = {a_star:.6g} with S = {np.exp(l_star):.6g}" + overflow_note
    return OptimalAlphaResult(a_star, float(np.exp(l_star)), a_an, T, True, msg, note,
                              grid, np.exp(lS))


def optimal_alpha_finite_width(net, c0, q0=1.0, width=None, alpha_inf=None, span=2.5, n_points=7,
                               n_r=12, n_t=8, xatol=1e-7, check=True, order=1, local_rel=0.1):
    """alpha*(N) = argmax_alpha S_N(alpha), S_N = S_inf + delta/N (Eq. 4.29), at modest cost.

    S_inf is exact and cheap; the 1/N coefficient delta(alpha) costs two :func:`finite_width`
    calls per alpha (orders n_r, n_t), so it is interpolated:

    1. Local stencil (docs/theory.md Sec. 4.6.1): the shift alpha*(N) - alpha*_inf is O(1/N) and set
       by the *slope* of delta at alpha*_inf, which can be small next to delta's higher derivatives
       (erf, full, L = 30, c0 = 0.9: d delta/d alpha ~ 0.02, third derivative ~ -34), so delta is
       interpolated by the degree-4 polynomial through the 5 points
       alpha*_inf (1 + local_rel {-1, -1/2, 0, 1/2, 1}) and S_inf + P/N is maximised inside that
       stencil (bounded Brent, exact S_inf). Accepted when the maximum lies in the inner 80%.
    2. Otherwise (a shift of order alpha* itself, at small N): ``n_points`` log-spaced nodes in
       [alpha_inf/span, alpha_inf*span] are added, a cubic spline in log alpha through all nodes is
       maximised, and the bracket is widened (three times at most) when the maximum sits on its edge.

    (The earlier 7-node spline alone could not follow delta's slope at alpha*: at L = 30, N = 32 it
    gave a shift -6.9e-4 where the local evaluation gives +4.8e-4.)
    With ``check`` one extra exact delta at the optimum gives ``interp_error``.

    Returns a dict: alpha, sensitivity (S_N there), alpha_inf, delta (at alpha), nodes,
    deltas, interp_error, interior (bool), method ("local" | "spline").
    """
    from scipy.interpolate import CubicSpline
    from scipy.optimize import minimize_scalar
    width = _check_width(width, required=True)
    if alpha_inf is None:
        alpha_inf = optimal_alpha(net, c0, q0).alpha
    if not np.isfinite(alpha_inf) or alpha_inf <= 0:
        raise ValueError("the mean-field S(alpha) has no interior maximum; no finite-width alpha* either")
    kw = dict(n_r=n_r, n_t=n_t)
    # --- issue 10 (order pass-through): order=2 uses the effective delta + delta2/N of S_N to O(1/N^2)
    # (docs/theory.md Eq. 4.97; every block, the full one by quasi-Monte-Carlo, Sec. 4.12.7), finite_width/sensitivity.py
    if order != 1:
        kw.update(order=order, width=width)

    def s_inf(a):
        return float(np.atleast_1d(sensitivity(net, c0, q0, alphas=[a]))[0])

    # 1. local stencil
    rel = np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * float(local_rel)
    nodes = alpha_inf * (1.0 + rel)
    deltas = np.asarray(sensitivity_correction(net, c0, q0, alphas=nodes, **kw), float)
    coef = np.polyfit(nodes - alpha_inf, deltas, 4)

    def negS_local(a):
        return -(s_inf(a) + float(np.polyval(coef, a - alpha_inf)) / width)
    res = minimize_scalar(negS_local, bounds=(nodes[0], nodes[-1]), method="bounded",
                          options={"xatol": xatol * alpha_inf})
    a_star = float(res.x)
    method = "local"
    interior = abs(a_star - alpha_inf) < 0.8 * local_rel * alpha_inf
    if interior:
        S_star, d_star = -float(res.fun), float(np.polyval(coef, a_star - alpha_inf))
    else:
        # 2. global spline over a wider bracket (large shifts, small N)
        method = "spline"
        wide = np.exp(np.linspace(np.log(alpha_inf / span), np.log(alpha_inf * span), int(n_points)))
        wide = wide[np.min(np.abs(wide[:, None] - nodes[None, :]), axis=1) > 1e-3 * alpha_inf]
        dw = np.asarray(sensitivity_correction(net, c0, q0, alphas=wide, **kw), float)
        nodes, deltas = np.concatenate([nodes, wide]), np.concatenate([deltas, dw])
        srt = np.argsort(nodes)
        nodes, deltas = nodes[srt], deltas[srt]
        for _ in range(3):
            spl = CubicSpline(np.log(nodes), deltas)
            lo, hi = np.log(nodes[0]), np.log(nodes[-1])

            def negS(t):
                return -(s_inf(float(np.exp(t))) + float(spl(t)) / width)
            grid = np.linspace(lo, hi, 81)
            vals = np.array([negS(t) for t in grid])
            i = int(np.argmin(vals))
            interior = 0 < i < grid.size - 1
            if interior:
                break
            step = np.log(span)   # widen the bracket on the side of the maximum
            extra = np.exp(np.linspace(hi, hi + step, 4)[1:]) if i > 0 else np.exp(np.linspace(lo - step, lo, 4)[:-1])
            dx = np.asarray(sensitivity_correction(net, c0, q0, alphas=extra, **kw), float)
            nodes, deltas = np.concatenate([nodes, extra]), np.concatenate([deltas, dx])
            srt = np.argsort(nodes)
            nodes, deltas = nodes[srt], deltas[srt]
        res = minimize_scalar(negS, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]),
                              method="bounded", options={"xatol": xatol})
        a_star = float(np.exp(res.x))
        S_star, d_star = -float(res.fun), float(spl(res.x))
    err = float("nan")
    if check:
        err = float(sensitivity_correction(net, c0, q0, alphas=[a_star], **kw)[0]) - d_star
    return dict(alpha=a_star, sensitivity=S_star, alpha_inf=float(alpha_inf), delta=d_star,
                nodes=nodes, deltas=deltas, interp_error=err, interior=bool(interior), width=width, method=method)


def analytic_alpha_finite_width(net, c0, q0=1.0, width=None, continuum_depth=2000, rel_step=0.05):
    """Analytic finite-width optimum alpha*(N) = sqrt(T*_N / L), T*_N = T* + t_1/N (docs/theory.md Eq. 6.10).

    Continuum limit alpha -> 0, L -> inf at T = alpha^2 L fixed: S_N(T) = S(T) + delta(T)/N with
    the width-independent 1/N coefficient delta(T) (Eq. 4.29) of the continuum theory, so at
    O(1/N) the maximiser moves by

        t_1 = -delta'(T*) / S''(T*)                                   (Eq. 6.10)

    T* from :func:`analytic_alpha` (the flow ODE); delta(T) and S(T) are evaluated in the continuum
    limit as the discrete theory at depth ``continuum_depth`` with alpha = sqrt(T / continuum_depth)
    (the interpolated finite-width path; the discreteness error is O(1/continuum_depth), 0.3% in V
    and M between L = 10^3 and 10^4), derivatives by central differences with step rel_step * T*.

    Returns a dict: alpha (alpha*(N) analytic, nan where there is no continuum maximum), T_star,
    t1, T_star_N, width, note. Valid at leading order in 1/L and 1/N (relative error of alpha*
    O(1/L) + O(1/N^2); measured in docs/validation.md).
    """
    width = _check_width(width, required=True)
    Lc = int(continuum_depth)
    a_inf, T, note = analytic_alpha(net, c0, q0)
    out = dict(alpha=math.nan, T_star=T, t1=math.nan, T_star_N=math.nan, width=width, note=note)
    if not np.isfinite(T):
        return out
    h = rel_step * T
    Ts = np.array([T - h, T, T + h])

    def at(t):
        return net.replace(depth=Lc, alpha=float(math.sqrt(t / Lc)))
    S = np.array([float(sensitivity(at(t), c0, q0)) for t in Ts])
    d = np.array([float(sensitivity_correction(at(t), c0, q0)) for t in (Ts[0], Ts[2])])
    S2 = (S[0] - 2 * S[1] + S[2]) / h ** 2
    d1 = (d[1] - d[0]) / (2 * h)
    if not (S2 < 0):
        out["note"] = "the continuum S(T) is not concave at T*: no O(1/N) expansion of the optimum"
        return out
    t1 = -d1 / S2
    TN = T + t1 / width
    out.update(t1=float(t1), T_star_N=float(TN),
               alpha=float(math.sqrt(TN / net.depth)) if TN > 0 else math.nan,
               note=f"T*_N = T* + t1/N with T* = {T:.6g}, t1 = {t1:.6g} (continuum limit, leading order in "
                    "1/L and 1/N; docs/theory.md Eq. 6.10)")
    return out
