"""Systematic 1/N finite-width theory of the kernel (docs/theory.md Sec. 4, Eq. 4.1-4.32).

For a network of width N the empirical kernel Khat^L_ab = (1/N) sum_i h^L_ia h^L_ib obeys

    E[Khat^L]                  = K^L + M^L / N + O(1/N^2)        (Eq. 4.1)
    N Cov(Khat^L_ab, Khat^L_cd) = V^L_abcd + O(1/N)               (Eq. 4.2)

Derivation (docs/theory.md Sec. 4): conditionally on layer l-1 the N neurons
receive i.i.d. Gaussian increments whose covariance is an *empirical average*
over the neurons (full block: C^l = sigma_w2 Ghat^{l-1} + sigma_b2; reduced:
Cz^l = sigma_w2 Khat^{l-1} + sigma_b2). So Khat^L = T(P_N) is a smooth
functional of the empirical measure P_N of N i.i.d. "seeds"
omega_i = (h^0_i, e^1_i, ..., e^L_i), and the von Mises expansion gives

    V = Var_omega[ IF(omega) ],        M = 1/2 E_omega[ T2(omega, omega) ]  (Eq. 4.5-4.6)

with IF the first and T2 the second Gateaux derivative of T in the direction
delta_omega - P. IF is the single-neuron additive functional (Eq. 4.9)

    IF = h^L h^L^T + sum_{m<L} A_m [ f(h^m) ]  - E[...],   f = phi phi^T (full block)

along the mean-field random walk (Cov(h^k, h^m) = K^min(k,m)): the cross-layer
terms k != m that an independent-noise closure drops are what makes V right.
M collects (i) the curvature of the kernel map contracted with the covariance
of the first-order driver fluctuation and (ii) the *self-interaction* of a
neuron with its own past through the driver (Eq. 4.14-4.18 full block,
Eq. 4.20-4.27 reduced block).

Gaussian four-point functions: :mod:`resscale.gaussian_quadrature`.

Layout (dependencies run one way, top to bottom):

* :mod:`.linalg`          small P x P linear algebra (Jacobian/Hessian of the kernel map)
* :mod:`.walk_integrals`  four-point functions of the per-neuron Gaussian walk
* :mod:`.smoothed`        tabulated Gaussian-smoothed activations: the walk's inner expectations for
                          quadrature activations (tanh, gelu, callables; Sec. 4.10.1)
* :mod:`.full`            full block and feed-forward baseline (exact layer sums)
* :mod:`.reduced`         reduced block (closed linear-noise recursion)
* :mod:`.next_order`      next order in 1/N (V1, M2) of the closed chains (reduced, two_layer; Sec. 4.12)
* :mod:`.resummed`        moment-closure ("resummed") prediction of the closed chains (Sec. 4.12.3)
* :mod:`.core`            :func:`finite_width` and :class:`FiniteWidthResult`
* :mod:`.sensitivity`     finite-width sensitivity S_N (Eq. 4.29; to O(1/N^2): Eq. 4.94-4.97)
* :mod:`.response`        finite-width response (Eq. 4.28)

The finite-width optimum alpha*(N) lives in :mod:`resscale.optimal_alpha`, which
uses this package (never the reverse).
"""
from .core import finite_width
from .response import finite_width_response
from .result import FiniteWidthResult
from .sensitivity import sensitivity_correction, sensitivity_correction2, sensitivity_finite_width

__all__ = ["finite_width", "FiniteWidthResult", "sensitivity_finite_width", "sensitivity_correction",
           "sensitivity_correction2", "finite_width_response"]
