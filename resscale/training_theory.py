"""What the theory predicts for the training data: q0, c0 and alpha* (docs/training.md, "c0 and q0").

:func:`data_kernel_stats` -- q0 and the candidate c0's of the data through the input layer;
:func:`theory_for_depth` -- alpha*, the sensitivity curve S(alpha) and the high-sensitivity band
for a depth and the data's (c0, q0).
"""
from __future__ import annotations

import math

import numpy as np

from .blocks import get_block
from .network import ResNet
from .training_run import TrainConfig, _finite_or_none

C0_PAIRS = ("between", "all", "within", "nearest", "one")
BAND_LEVEL = 0.9          # high-sensitivity band: S >= BAND_LEVEL * max S


def data_kernel_stats(net: ResNet, X, y, n_sub: int = 500, seed: int = 0) -> dict:
    """q0 and candidate c0's of the data through the input layer (docs/training.md, "c0 and q0").

    On a seeded subsample of ``n_sub`` training inputs, K0 = sigma_in2 X X^T/d +
    sigma_bin2 (:func:`resscale.inputs.input_kernel`) and its correlations
    C_ab = K0_ab / sqrt(K0_aa K0_bb). Returns q0 = mean diagonal of K0 and
    the c0 candidates (``c0_<mode>``, mode in :data:`C0_PAIRS`):

    * ``between``: mean of C_ab over pairs from different classes (the default);
    * ``all``: mean over all pairs a != b;  ``within``: mean over same-class pairs;
    * ``nearest``: median over inputs a of max_{b: y_b != y_a} C_ab, the
      correlation with the most similar input of another class (the pairs
      that sit across the decision boundary);
    * ``one``: 1, the c0 -> 1 limit (normalised mean squared Jacobian).
    Medians of the first three are recorded too.
    """
    from .inputs import input_kernel

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if isinstance(n_sub, bool) or int(n_sub) != n_sub or n_sub < 2:
        raise ValueError(f"n_sub must be an integer >= 2, got {n_sub!r}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(X.shape[0], size=min(int(n_sub), X.shape[0]), replace=False))
    Xs, ys = X[idx], y[idx]
    K0 = input_kernel(net, X=Xs)
    diag = np.diag(K0).copy()
    if np.any(diag <= 0):
        raise ValueError("an input has zero norm through the input layer (K0_aa = 0); "
                         "use sigma_bin2 > 0 or drop constant inputs")
    C = np.clip(K0 / np.sqrt(np.outer(diag, diag)), -1.0, 1.0)
    off = ~np.eye(len(idx), dtype=bool)
    same = (ys[:, None] == ys[None, :]) & off
    diff = ys[:, None] != ys[None, :]
    if not diff.any():
        raise ValueError("the subsample has a single class; c0 between classes is undefined")
    nearest = np.where(diff, C, -np.inf).max(axis=1)
    return dict(q0=float(diag.mean()), q0_std=float(diag.std()),
                c0_between=float(C[diff].mean()), c0_between_median=float(np.median(C[diff])),
                c0_all=float(C[off].mean()), c0_all_median=float(np.median(C[off])),
                c0_within=float(C[same].mean()) if same.any() else None,
                c0_within_median=float(np.median(C[same])) if same.any() else None,
                c0_nearest=float(np.median(nearest)), c0_one=1.0,
                n_sub=int(len(idx)), subsample_seed=int(seed))


def _log_sensitivity_curve(net: ResNet, c0: float, q0: float, alphas: np.ndarray) -> np.ndarray:
    """log S(alpha), S = dc^L/dc^0, on a grid (one vectorised pass of resscale.sensitivity)."""
    from .sensitivity import log_sensitivity

    return np.asarray(log_sensitivity(net, c0, q0=q0, alphas=alphas), dtype=float)


def theory_for_depth(config: TrainConfig, depth: int, c0: float, q0: float,
                     alpha_range=(1e-3, 10.0), n_grid: int = 241,
                     band_level: float = BAND_LEVEL) -> dict:
    """alpha*, S(alpha) on a log grid and the band {alpha : S >= band_level * max S}.

    alpha* is :func:`resscale.optimal_alpha` (numerical argmax of the mean-field
    S, Brent-refined) with its analytic leading-order value; ``interior`` is
    False (and ``alpha_star`` None) when S has no interior maximum. The band is
    the contiguous stretch of the grid around the maximum where S >= band_level
    * S_max; when S is largest at alpha -> 0 (no interior maximum, S -> 1 as
    the net becomes the identity) the band is reported as [0, hi]. Returns ``{"available": False, "error": ...}`` when the theory
    fails or is missing, so a sweep still produces its training results.
    """
    import warnings

    if not get_block(config.block).residual:
        return dict(available=False, error=f"block {config.block!r} has no residual scaling alpha")
    try:
        from .optimal_alpha import optimal_alpha
    except ImportError as exc:  # pragma: no cover - theory modules are part of the package
        return dict(available=False, error=f"theory not available: {exc}")
    net = config.network(depth, 0.1)
    grid = np.geomspace(alpha_range[0], alpha_range[1], n_grid)
    try:
        logS = _log_sensitivity_curve(net, c0, q0, grid)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = optimal_alpha(net, c0, q0=q0, alpha_range=(alpha_range[0], alpha_range[1]))
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        return dict(available=False, error=f"{type(exc).__name__}: {exc}")
    interior = bool(getattr(res, "interior", math.isfinite(res.alpha)))
    finite = np.isfinite(logS)
    i_max = int(np.nanargmax(np.where(finite, logS, -np.inf)))
    logS_max = float(logS[i_max])
    if interior and math.isfinite(float(res.sensitivity)) and res.sensitivity > 0:
        logS_max = max(logS_max, math.log(float(res.sensitivity)))
    in_band = finite & (logS >= math.log(band_level) + logS_max)
    i0 = int(np.argmin(np.abs(np.log(grid) - math.log(res.alpha)))) if interior else i_max
    lo = hi = i0
    while lo > 0 and in_band[lo - 1]:
        lo -= 1
    while hi < n_grid - 1 and in_band[hi + 1]:
        hi += 1
    a_an = getattr(res, "alpha_analytic", None)
    return dict(available=True, interior=interior,
                alpha_star=float(res.alpha) if interior else None,
                S_star=_finite_or_none(math.exp(min(logS_max, 709.0))),
                alpha_analytic=None if a_an is None else _finite_or_none(a_an),
                S_max=_finite_or_none(math.exp(min(logS_max, 709.0))), band_level=band_level,
                band=[0.0 if (lo == 0 and i_max == 0) else float(grid[lo]), float(grid[hi])],
                band_at_grid_edge=bool(lo == 0 or hi == n_grid - 1),
                message=str(getattr(res, "message", "")),
                warnings=[str(w.message) for w in caught],
                curve=dict(alpha=[float(a) for a in grid],
                           S=[_finite_or_none(math.exp(v)) if v < 709 else None for v in logS],
                           log_S=[_finite_or_none(v) for v in logS]))
