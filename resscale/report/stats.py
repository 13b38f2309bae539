"""Statistics shared by the figures: power-law/exponential fits, log-log slopes, argmax estimators
of simulated S(alpha) with bootstrap SE, 1/N extrapolation and control-variate means.
"""
from __future__ import annotations

import math

import numpy as np


def fit_power_exp(x, y, w=None):
    """Fit y = A x^-p and y = B exp(-x/xi) by least squares in log y.

    Returns dict with p, xi, rms_log residuals of each and ``better`` ("power law"/"exponential").
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (y > 0) & np.isfinite(y)
    x, y = x[ok], y[ok]
    wts = None if w is None else np.asarray(w, float)[ok]
    out = {"n": int(x.size)}
    if x.size < 3:
        out.update(p=math.nan, xi=math.nan, rms_power=math.nan, rms_exp=math.nan, better="n/a")
        return out
    ly = np.log(y)
    cp = np.polyfit(np.log(x), ly, 1, w=wts)
    ce = np.polyfit(x, ly, 1, w=wts)
    rp = ly - np.polyval(cp, np.log(x))
    re = ly - np.polyval(ce, x)
    ww = np.ones_like(ly) if wts is None else wts ** 2
    rms_p = float(np.sqrt(np.sum(ww * rp ** 2) / np.sum(ww)))
    rms_e = float(np.sqrt(np.sum(ww * re ** 2) / np.sum(ww)))
    out.update(p=float(-cp[0]), logA=float(cp[1]), xi=float(-1.0 / ce[0]) if ce[0] != 0 else math.inf,
               logB=float(ce[1]), rms_power=rms_p, rms_exp=rms_e,
               better="power law" if rms_p < rms_e else "exponential",
               x_min=float(x.min()), x_max=float(x.max()))
    return out


def loglog_slope(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def _quad_argmax(alphas, S, se, n_boot=400, seed=0):
    """alpha* from a parabola in log alpha through simulated S (weights 1/se^2), bootstrap SE."""
    la, S, se = np.log(np.asarray(alphas, float)), np.asarray(S, float), np.asarray(se, float)
    se = np.where(se > 0, se, np.nanmax(se) if np.any(se > 0) else 1.0)

    def am(s):
        c = np.polyfit(la, s, 2, w=1.0 / se)
        if c[0] >= 0:
            return math.nan
        x = -c[1] / (2 * c[0])
        return float(np.exp(x)) if la.min() <= x <= la.max() else math.nan

    est = am(S)
    rng = np.random.default_rng(seed)
    boots = np.array([am(S + se * rng.standard_normal(S.size)) for _ in range(n_boot)])
    good = np.isfinite(boots)
    sd = float(np.std(np.log(boots[good]))) * est if good.sum() > n_boot // 2 and math.isfinite(est) else math.nan
    return est, sd


def _template_argmax(alphas, S, se, grid, S_grid, a_star, n_boot=300, seed=0):
    """alpha* of simulated points by fitting the mean-field curve shifted in log alpha and rescaled.

    Model: S_sim(alpha) = A * S_mf(alpha e^-d); d and A by weighted least squares (d on a grid,
    A in closed form); alpha*_sim = a_star e^d; SE by parametric bootstrap of the points.
    """
    la, S, se = np.log(np.asarray(alphas, float)), np.asarray(S, float), np.asarray(se, float)
    se = np.where(se > 0, se, 1.0)
    lg, Sg = np.log(np.asarray(grid, float)), np.asarray(S_grid, float)
    ds = np.linspace(-0.7, 0.7, 281)
    T = np.array([np.interp(la - d, lg, Sg) for d in ds])  # (nd, npts)
    w = 1.0 / se ** 2

    def fit(s):
        A = (T * s * w).sum(1) / (T * T * w).sum(1)
        chi2 = (((s - A[:, None] * T) ** 2) * w).sum(1)
        k = int(np.argmin(chi2))
        return ds[k] if 0 < k < ds.size - 1 else math.nan

    d0 = fit(S)
    rng = np.random.default_rng(seed)
    boots = np.array([fit(S + se * rng.standard_normal(S.size)) for _ in range(n_boot)])
    ok = np.isfinite(boots)
    est = a_star * math.exp(d0) if math.isfinite(d0) else math.nan
    sd = float(np.std(boots[ok])) * est if ok.sum() > n_boot // 2 and math.isfinite(est) else math.nan
    return est, sd


def extrapolate_inv_n(Ns, y, se):
    """Weighted fit y = a + b/N; returns (a, SE of a) (the N -> infinity limit), nan with < 2 points."""
    Ns, y, se = np.asarray(Ns, float), np.asarray(y, float), np.asarray(se, float)
    if Ns.size < 2:
        return math.nan, math.nan
    A = np.column_stack([np.ones_like(Ns), 1.0 / Ns]) / se[:, None]
    cov = np.linalg.pinv(A.T @ A)
    coef = cov @ (A.T @ (y / se))
    return float(coef[0]), float(math.sqrt(cov[0, 0]))


def _cv_mean(y, x, x_mean):
    """Mean of y with control variates x (known mean x_mean): returns (estimate, SE)."""
    d = x - x_mean
    n = y.shape[0]
    A = np.column_stack([np.ones(n), d])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    return float(coef[0]), float(resid.std(ddof=A.shape[1]) / math.sqrt(n))
