"""Exact mean-field response function chi^{L,0} = dK^L / dK^0 (docs/theory.md, Sec. 7).

The recursion of :mod:`resscale.kernel_recursion` is differentiated exactly in
forward mode. Per layer, the tangent of G at K is local in the pair (a, b)
(Eq. 7.1):

    dG_ab = A_ab dK_ab + Ba_ab dK_aa + Bb_ab dK_bb      (a != b)
    dG_aa = g'(K_aa) dK_aa

with A = E[phi' phi'], Ba = 1/2 E[phi'' phi] (Price's theorem, Eq. 2.2-2.3).
The one-step tangents (Eq. 7.2-7.4):

    full         dK' = dK + alpha^2 sigma_w2 dG(K)[dK]
    reduced      dZ  = sigma_w2 dK,  dmu_a = mu'(Z_aa) dZ_aa
                 dK' = dK + alpha (dm mu^T + m dmu^T + transposes) + alpha^2 dG(Z)[dZ]
                 dm' = dm + alpha dmu
    feedforward  dK' = sigma_w2 dG(K)[dK]
    two_layer    dK' = dK + alpha^2 sigma_w2^2 dG(Z)[dK],  Z = sigma_w2 K + sigma_b2       (Eq. 7.6)

(each block's ``tangent_step`` in :mod:`resscale.blocks`).

The tangent J^l = dK^l/dK^0 (P,P,P,P) starts from the identity on symmetric
matrices, J^0_abcd = (delta_ac delta_bd + delta_ad delta_bc)/2, so that for a
symmetric perturbation dK^L = einsum("abcd,cd->ab", chi, dK0) and chi is
symmetric in (c, d). It is renormalised every layer and its log-scale kept
(long products in log space, Eq. 7.5); depth 10^4 works.
"""
from __future__ import annotations

import numpy as np

from .inputs import ParameterTypeError, check_bool, check_memory, input_kernel, scale_culprits
from .kernel_maps import pair_matrix, tangent_G  # noqa: F401  (tangent_G re-exported)
from .kernel_recursion import kernel_step


def tangent_step(net, K, m, s, JK, Jm):
    """Push the tangent (JK, Jm) through one layer at the normalised state (K~, m~, s).

    Returns the new (JK, Jm) before renormalisation (Eq. 7.2-7.4). Jm is stored
    in units of exp(s/2) (see Eq. 7.5), consistently with the normalised m~.
    """
    return net.block_type.tangent_step(net, K, m, net.sigma_b2 * np.exp(-s), JK, Jm)


def response_function(net, X=None, K0=None, return_log_scale=False):
    """Exact mean-field response chi_{ab,cd} = dK^L_ab / dK^0_cd, shape (P, P, P, P).

    For a symmetric perturbation dK0 of the layer-0 kernel,
    ``dK^L = np.einsum("abcd,cd->ab", chi, dK0)`` to first order; chi is
    symmetric in (a, b) and in (c, d). Computed by forward-mode differentiation
    of the recursion (docs/theory.md Eq. 7.1-7.5), not by finite differences.

    With ``return_log_scale=True`` returns (chi_normalised, log_scale) with
    chi = exp(log_scale) * chi_normalised, for depths where chi overflows float64.

    Memory grows like P^4 (48 P^4 bytes): the call is refused up front with
    :class:`resscale.inputs.MemoryLimitError` (a ValueError giving the estimate in GB)
    above 25% of physical memory or RESSCALE_MAX_MEMORY_GB.
    """
    from .network import ResNet

    if not isinstance(net, ResNet):
        raise ParameterTypeError(f"net must be a resscale.ResNet, got {type(net).__name__}")
    return_log_scale = check_bool("return_log_scale", return_log_scale)
    K = input_kernel(net, X=X, K0=K0)
    K_in = K
    P = K.shape[0]
    # the tangent (P, P, P, P) float64 and about 5 temporaries of its size per layer
    check_memory("P (the number of inputs)", 6 * 8.0 * P ** 4,
                 f"response_function with P = {P} inputs (a (P, P, P, P) tangent and its temporaries)")
    eye = np.eye(P)
    JK = 0.5 * (np.einsum("ac,bd->abcd", eye, eye) + np.einsum("ad,bc->abcd", eye, eye))
    Jm = np.zeros((P, P, P))
    m = np.zeros(P)
    s, sJ = 0.0, 0.0
    for _ in range(net.depth):
        JK, Jm = tangent_step(net, K, m, s, JK, Jm)
        K_new, m, s_new = kernel_step(net, K, m, s)
        if s_new != s:  # the homogeneous recursion renormalised: Jm is in units of exp(s/2)
            Jm = Jm * np.exp(0.5 * (s_new - s))
        K, s = K_new, s_new
        norm = float(np.max(np.abs(JK)))
        if norm > 0.0 and np.isfinite(norm):
            JK, Jm = JK / norm, Jm / norm
            sJ += np.log(norm)
        elif not np.isfinite(norm):
            culprits = scale_culprits(net, K0=K_in, kernel_name="the kernel (X or K0)")
            raise OverflowError(f"response_function: the tangent dK^l/dK^0 is not finite at layer {_ + 1} of depth "
                                f"{net.depth} (float64 overflow"
                                + (f" caused by the large input(s) {culprits}" if culprits else
                                   f", or an activation {net.phi.name!r} whose derivatives are not finite")
                                + "); reduce the variances sigma_w2 / sigma_b2 or alpha of net, X or K0, or depth")
    if return_log_scale:
        return JK, sJ
    if sJ > 700.0:
        raise OverflowError(f"chi exceeds the float64 range (log-scale {sJ:.1f}); "
                            "use response_function(..., return_log_scale=True)")
    return JK * np.exp(sJ)
