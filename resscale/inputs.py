"""Validation of the inputs of the theory and the simulator, and the input-layer kernel.

``input_kernel(net, X=None, K0=None)`` returns the layer-0 kernel (theory.md Eq. 1.5)

    K^0_ab = sigma_in2 * x_a . x_b / d + sigma_bin2

for data X of shape (P, d), or validates a directly given K0 (P, P): finite,
symmetric and positive semi-definite. Exactly one of X and K0 is required.
"""
from __future__ import annotations

import numpy as np

PSD_TOL = 1e-10


def as_finite_array(name: str, value, ndim: int | None = None) -> np.ndarray:
    """Convert to a float64 array, with a clear error naming ``name`` on failure."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def check_kernel(K0, name: str = "K0") -> np.ndarray:
    """Validate a (P, P) kernel: finite, symmetric, PSD (up to 1e-10 relative)."""
    K0 = as_finite_array(name, K0, ndim=2)
    P = K0.shape[0]
    if K0.shape != (P, P):
        raise ValueError(f"{name} must be square (P, P), got shape {K0.shape}")
    scale = max(float(np.max(np.abs(K0))), 1e-300)
    if not np.allclose(K0, K0.T, rtol=0.0, atol=1e-12 * scale):
        raise ValueError(f"{name} must be symmetric")
    lam_min = float(np.linalg.eigvalsh(K0).min())
    if lam_min < -PSD_TOL * scale:
        raise ValueError(f"{name} must be positive semi-definite (smallest eigenvalue {lam_min:.3g})")
    return 0.5 * (K0 + K0.T)


def input_kernel(net, X=None, K0=None) -> np.ndarray:
    """Layer-0 kernel from data X (P, d) through the random input layer, or a validated K0."""
    if (X is None) == (K0 is None):
        raise ValueError("exactly one of X (data, shape (P, d)) and K0 (kernel, shape (P, P)) is required")
    if K0 is not None:
        return check_kernel(K0, "K0")
    X = as_finite_array("X", X)
    if X.ndim == 1:
        raise ValueError(f"X must be 2-D (P, d), got shape {X.shape}; use X[None, :] for one input")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (P, d), got shape {X.shape}")
    d = X.shape[1]
    return net.sigma_in2 * (X @ X.T) / d + net.sigma_bin2


def two_input_kernel(c0, q0=1.0) -> np.ndarray:
    """K0 for two inputs of equal norm q0 and correlation c0 (validated)."""
    c0 = check_scalar("c0", c0, lo=-1.0, hi=1.0)
    q0 = check_scalar("q0", q0, lo=0.0, strict_lo=True)
    return q0 * np.array([[1.0, c0], [c0, 1.0]])


def check_scalar(name, value, lo=None, hi=None, strict_lo=False):
    """A finite float in [lo, hi] (or (lo, hi] with strict_lo)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v < lo or (strict_lo and v <= lo)):
        raise ValueError(f"{name} must be {'>' if strict_lo else '>='} {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value!r}")
    return v
