"""finite_width(): V, M and K^L of the output kernel for every block (docs/theory.md Sec. 4, Eq. 4.1-4.2)."""
from __future__ import annotations

import numpy as np

from ..inputs import check_scalar, input_kernel
from .full import _full_or_ff
from .reduced import reduced_block_theory  # Sec. 4.8, Eq. 4.40-4.52
from .result import FiniteWidthResult


def _check_width(width, required=False):
    if width is None:
        if required:
            raise ValueError("width is required (an integer >= 1)")
        return None
    if isinstance(width, bool) or not float(width).is_integer() or int(width) < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    return int(width)


def finite_width(net, width=None, X=None, K0=None, mean_shift=True, n_r=12, n_t=8) -> FiniteWidthResult:
    """1/N theory of the output kernel: K^L, M^L and V^L (docs/theory.md Sec. 4).

    Parameters
    ----------
    net : ResNet (block "full", "reduced" or "feedforward")
    width : int >= 1, optional
        Network width N (only used by the convenience properties
        ``expected_kernel`` / ``kernel_covariance``; M and V are N-independent).
    X, K0 : data (P, d) or layer-0 kernel (P, P); exactly one.
    mean_shift : bool
        Also compute M (costlier than V for the full block).
    n_r, n_t : radial / angular quadrature orders of the outer integrals
        (docs/theory.md Sec. 4.6; defaults give relative accuracy ~1e-4).

    Returns
    -------
    FiniteWidthResult with ``kernel`` K^L, ``mean_shift`` M^L (Eq. 4.1),
    ``covariance`` V^L (Eq. 4.2) and ``covariance_independent`` (Eq. 4.11).
    """
    width = _check_width(width)
    K0 = input_kernel(net, X=X, K0=K0)
    n_r = int(check_scalar("n_r", n_r, lo=4))
    n_t = int(check_scalar("n_t", n_t, lo=2))
    if net.block in ("full", "feedforward"):
        out = _full_or_ff(net, K0, compute_mean=mean_shift, n_r=n_r, n_t=n_t)
    else:
        out = reduced_block_theory(net, K0, compute_mean=mean_shift, n_r=n_r, n_t=n_t)
    P = K0.shape[0]
    M = out.get("M", np.full((P, P), np.nan))
    return FiniteWidthResult(net=net, K0=K0, kernel=out["Ks"][-1], mean_shift=M,
                             covariance=out["V"], covariance_independent=out["V_ind"], width=width,
                             extras={k: v for k, v in out.items() if k not in ("V", "V_ind", "M")})
