"""Finite-width response d E[Khat^L] / dK^0 = chi + (dM/dK^0)/N (docs/theory.md Eq. 4.28)."""
from __future__ import annotations

import numpy as np

from ..inputs import input_kernel
from ..response import response_function
from .core import _check_width, finite_width


def finite_width_response(net, width, X=None, K0=None, rel=1e-4, **kw):
    """d E[Khat^L]_ab / dK^0_cd = chi + (dM/dK^0)/N to O(1/N), shape (P,P,P,P) (Eq. 4.28).

    M is differentiated by central differences along symmetric unit perturbations of
    K^0 (step rel * max K^0_aa); the mean-field part uses the exact chi of
    :func:`resscale.response.response_function`.
    """
    width = _check_width(width, required=True)
    K0 = input_kernel(net, X=X, K0=K0)
    P = K0.shape[0]
    chi = response_function(net, K0=K0)
    h = rel * float(np.max(np.diag(K0)))
    dM = np.zeros((P, P, P, P))
    for c in range(P):
        for d in range(c, P):
            E = np.zeros((P, P))
            E[c, d] = E[d, c] = 1.0
            Mp = finite_width(net, K0=K0 + h * E, **kw).mean_shift
            Mm = finite_width(net, K0=K0 - h * E, **kw).mean_shift
            g = (Mp - Mm) / (2 * h)
            if c == d:
                dM[:, :, c, c] = g
            else:
                dM[:, :, c, d] = dM[:, :, d, c] = 0.5 * g
    return chi + dM / width
