"""Result container of :func:`resscale.finite_width.finite_width` (docs/theory.md Sec. 4)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FiniteWidthResult:
    """Output of :func:`finite_width` (docs/theory.md Sec. 4).

    Attributes
    ----------
    kernel : (P, P)        mean-field K^L
    mean_shift : (P, P)    M^L, E[Khat^L] = K^L + M^L/N + O(1/N^2)        (Eq. 4.1)
    covariance : (P,P,P,P) V^L, N Cov(Khat_ab, Khat_cd) = V_abcd + O(1/N)  (Eq. 4.2)
    covariance_independent : (P,P,P,P) the independent-noise (FFNet-style) closure
        of V for comparison (drops all cross-layer terms, Eq. 4.11)
    width : int or None
    """

    net: object
    K0: np.ndarray
    kernel: np.ndarray
    mean_shift: np.ndarray
    covariance: np.ndarray
    covariance_independent: np.ndarray
    width: int | None = None
    extras: dict = field(default_factory=dict, repr=False)

    @property
    def expected_kernel(self):
        """K^L + M^L / N (needs ``width``)."""
        if self.width is None:
            raise ValueError("width is required for expected_kernel")
        return self.kernel + self.mean_shift / self.width

    @property
    def kernel_covariance(self):
        """Cov(Khat_ab, Khat_cd) = V / N to leading order (needs ``width``)."""
        if self.width is None:
            raise ValueError("width is required for kernel_covariance")
        return self.covariance / self.width

    @property
    def response(self):
        """Finite-width response d E[Khat^L]_ab / dK^0_cd = chi + dM/dK0 / N (P,P,P,P), Eq. 4.28."""
        if "response" not in self.extras:
            from .response import finite_width_response as _response
            self.extras["response"] = _response(self.net, self.width, K0=self.K0)
        return self.extras["response"]

    def to_dict(self):
        return dict(kernel=self.kernel.tolist(), mean_shift=self.mean_shift.tolist(),
                    covariance=self.covariance.tolist(), width=self.width,
                    covariance_independent=self.covariance_independent.tolist(),
                    net=self.net.to_dict())
