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
    mean_shift : (P, P) or None   M^L, E[Khat^L] = K^L + M^L/N + O(1/N^2)  (Eq. 4.1);
                           None when computed with ``mean_shift=False``
    covariance : (P,P,P,P) V^L, N Cov(Khat_ab, Khat_cd) = V_abcd + O(1/N)  (Eq. 4.2)
    covariance_independent : (P,P,P,P) the independent-noise (FFNet-style) closure
        of V for comparison (drops all cross-layer terms, Eq. 4.11)
    width : int or None
    order : 1 or 2 (``finite_width(..., order=2)``: next order in 1/N, Sec. 4.12)
    covariance_correction : (P,P,P,P) or None   V1: N Cov = V + V1/N + O(1/N^2)   (order=2)
    mean_shift2 : (P,P) or None                 M2: E Khat = K + M/N + M2/N^2     (order=2)
    predicted_covariance, predicted_mean, expansion_ratio, expansion_parameter : properties
        (need ``width``), docs/theory.md Eq. 4.89-4.92.
    resummed_covariance : (P,P,P,P) or None   order="resummed": N Cov(Khat^L) at this width from the
        third-order cumulant closure of the chain (Sec. 4.12.3, Eq. 4.99-4.102; not a 1/N series)
    resummed_mean : (P,P) or None             order="resummed": E[Khat^L] at this width (same closure)
        With order="resummed" the order-2 fields are filled too (``predicted_*`` stay V + V1/N and
        K + M/N + M2/N^2, ``expansion_parameter`` = eps^2), so both predictions can be compared.
    """

    net: object
    K0: np.ndarray
    kernel: np.ndarray
    mean_shift: np.ndarray | None
    covariance: np.ndarray
    covariance_independent: np.ndarray
    width: int | None = None
    extras: dict = field(default_factory=dict, repr=False)
    order: int = 1
    covariance_correction: np.ndarray | None = None   # V1 (order=2), Eq. 4.89
    mean_shift2: np.ndarray | None = None             # M2 (order=2), Eq. 4.90
    resummed_covariance: np.ndarray | None = None     # order="resummed", Eq. 4.99-4.102
    resummed_mean: np.ndarray | None = None

    # ---- next order in 1/N (docs/theory.md Sec. 4.12, issue 10)
    def _need_width(self, what):
        if self.width is None:
            raise ValueError(f"width is required for {what}")
        return self.width

    @property
    def predicted_covariance(self):
        """N Cov(Khat^L) at this width: V + V1/N (order=2), V (order=1)  (P,P,P,P), Eq. 4.89."""
        N = self._need_width("predicted_covariance")
        if self.order != 1:
            return self.covariance + self.covariance_correction / N
        return self.covariance

    @property
    def predicted_mean(self):
        """E[Khat^L] at this width: K + M/N + M2/N^2 (order=2), K + M/N (order=1), Eq. 4.90."""
        N = self._need_width("predicted_mean")
        if self.mean_shift is None:
            raise ValueError("predicted_mean needs the mean shift (finite_width(..., mean_shift=True))")
        out = self.kernel + self.mean_shift / N
        if self.order != 1:
            out = out + self.mean_shift2 / (N * N)
        return out

    @property
    def expansion_ratio(self):
        """eps (Eq. 4.92): |next-order term| / |leading term| at this width (needs V1, M2: computed
        on first use for order=1 results of the two_layer/reduced blocks; NaN for other blocks)."""
        N = self._need_width("expansion_ratio")
        V1, M2 = self.covariance_correction, self.mean_shift2
        if V1 is None:
            if "next_order" not in self.extras:
                self.extras["next_order"] = self._lazy_next_order()
            nxt = self.extras["next_order"]
            if nxt is None:
                return float("nan")
            V1, M2 = nxt["V1"], nxt["M2"]
        from .next_order import expansion_ratio
        M = self.mean_shift if self.mean_shift is not None else np.zeros_like(M2)
        return expansion_ratio(self.covariance, V1, M, M2, N)

    def _lazy_next_order(self):
        """V1, M2 for the eps estimate of an order=1 result: closed chains exactly; the full block (any
        phi with order 2 there, ``check_full_activation``) by a small quasi-Monte-Carlo run (2^10 x 16
        seed pairs) when it is estimated under 10 s; otherwise None (eps = NaN)."""
        from .next_order import NEXT_ORDER_BLOCKS, next_order_theory
        if self.net.block in NEXT_ORDER_BLOCKS:
            return next_order_theory(self.net, self.K0)
        if self.net.block == "full":
            from .full_next_order import (DEFAULT_SCRAMBLES, check_full_activation, estimate_full_seconds,
                                          full_next_order, phi_key)
            P = self.K0.shape[0]
            try:
                check_full_activation(self.net)
            except NotImplementedError:
                return None
            if estimate_full_seconds(P, self.net.depth, 2 ** 10 * DEFAULT_SCRAMBLES, phi_key(self.net)) < 10.0:
                try:
                    return full_next_order(self.net, self.K0, V=self.covariance, M=self.mean_shift,
                                           n_samples=2 ** 10)
                except ValueError:   # e.g. coincident inputs
                    return None
        return None

    @property
    def expansion_parameter(self):
        """Estimated relative size of the first neglected term at this width: eps^order
        (Eq. 4.92; eps = ``expansion_ratio``). Measured range of validity (docs/validation.md,
        'Next order in 1/N'): see ``VALIDITY`` in resscale.finite_width.next_order."""
        return self.expansion_ratio ** (1 if self.order == 1 else 2)

    @property
    def expected_kernel(self):
        """K^L + M^L / N (needs ``width``)."""
        if self.width is None:
            raise ValueError("width is required for expected_kernel")
        if self.mean_shift is None:
            raise ValueError("expected_kernel needs M^L: call finite_width(..., mean_shift=True)")
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
        return dict(kernel=self.kernel.tolist(),
                    mean_shift=None if self.mean_shift is None else self.mean_shift.tolist(),
                    covariance=self.covariance.tolist(), width=self.width,
                    covariance_independent=self.covariance_independent.tolist(),
                    net=self.net.to_dict(), order=self.order,
                    **({} if self.covariance_correction is None else
                       dict(covariance_correction=self.covariance_correction.tolist(),
                            mean_shift2=self.mean_shift2.tolist())),
                    **({} if self.resummed_covariance is None else
                       dict(resummed_covariance=self.resummed_covariance.tolist(),
                            resummed_mean=self.resummed_mean.tolist())))
