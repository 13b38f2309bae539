"""Mean-field kernel recursion (docs/theory.md, Sec. 3).

At infinite width the empirical kernel Khat^l_ab = (1/N) sum_i h^l_ia h^l_ib
converges to the deterministic K^l given by (G(K)_ab = E[phi(u_a) phi(u_b)],
u ~ N(0, K); mu(K)_a = E[phi(u_a)]):

    full         K^l = K^{l-1} + alpha^2 (sigma_w2 G(K^{l-1}) + sigma_b2)                 (Eq. 3.1)
    two_layer    K^l = K^{l-1} + alpha^2 (sigma_w2 G(sigma_w2 K^{l-1} + sigma_b2) + sigma_b2)  (Eq. 3.6)
    reduced      Z   = sigma_w2 K^{l-1} + sigma_b2
                 K^l = K^{l-1} + alpha (m mu(Z)^T + mu(Z) m^T) + alpha^2 G(Z)             (Eq. 3.2)
                 m^l = m^{l-1} + alpha mu(Z)                                             (Eq. 3.3)
    feedforward  K^l = sigma_w2 G(K^{l-1}) + sigma_b2                                    (Eq. 3.4)

with K^0 from :func:`resscale.inputs.input_kernel` and m^0 = 0. m is the mean of
the residual stream (non-zero only for the reduced block with non-odd phi).
Each block's map is its ``kernel_step`` in :mod:`resscale.blocks`.

Log space (Eq. 3.5): for positively homogeneous phi (relu, linear) the map is
1-homogeneous, so the recursion runs on the normalised K~ = e^{-s} K, m~ =
e^{-s/2} m with a running log-scale s (biases enter as sigma_b2 e^{-s}); depth
10^4 with exploding kernels stays finite. For other activations s = 0.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .inputs import input_kernel
from .kernel_maps import pair_matrix  # noqa: F401  (re-exported: resscale.kernel_recursion.pair_matrix)

_LOG_FLOAT_MAX = float(np.log(np.finfo(float).max)) - 0.05   # ~709.73: exp() of more overflows
_RENORM = 1e50  # renormalise the homogeneous recursion once the diagonal leaves [1/_RENORM, _RENORM]
_THREAD_MIN = 32_768  # packed kernels larger than this are split across threads (NumPy ufuncs release the GIL)


@lru_cache(maxsize=1)
def _executor():
    return ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8)))


class MatrixLayout:
    """Kernel stored as a (P, P) matrix (used by the response function)."""

    @staticmethod
    def diag(K):
        return np.diagonal(K, axis1=-2, axis2=-1)

    @staticmethod
    def G(phi, K):
        return pair_matrix(phi, K)

    @staticmethod
    def cross(m, mu):
        c = m[..., :, None] * mu[..., None, :]
        return c + np.swapaxes(c, -1, -2)


class PackedLayout:
    """Kernel stored as its upper triangle (P(P+1)/2,): half the Gaussian integrals.

    Large kernels are evaluated in chunks on a thread pool (Sec. 3, performance).
    """

    def __init__(self, P):
        self.P = P
        self.i, self.j = np.triu_indices(P)
        self.didx = np.flatnonzero(self.i == self.j)

    def pack(self, K):
        return K[..., self.i, self.j]

    def unpack(self, k):
        K = np.empty(k.shape[:-1] + (self.P, self.P))
        K[..., self.i, self.j] = k
        K[..., self.j, self.i] = k
        return K

    def diag(self, k):
        return k[..., self.didx]

    def G(self, phi, k):
        d = k[self.didx]
        n = k.size
        if n < _THREAD_MIN:
            out = phi.kernel_packed(d, self.i, self.j, k)
        else:
            bounds = np.linspace(0, n, (os.cpu_count() or 1) + 1).astype(int)
            parts = _executor().map(lambda b: phi.kernel_packed(d, self.i[b[0]:b[1]], self.j[b[0]:b[1]],
                                                                k[b[0]:b[1]]), zip(bounds[:-1], bounds[1:]))
            out = np.concatenate(list(parts))
        if not phi.closed_form:  # closed forms are exact on the diagonal; quadrature uses the 1-D rule
            out[self.didx] = phi.diag(d)[0]
        return out

    def cross(self, m, mu):
        return m[self.i] * mu[self.j] + mu[self.i] * m[self.j]


MATRIX = MatrixLayout()


@dataclass
class KernelTrajectory:
    """Output of :func:`kernel_recursion`.

    ``kernels`` are the normalised K~^l and ``means`` m~^l; the true values are
    K^l = exp(log_scale[l]) K~^l and m^l = exp(log_scale[l]/2) m~^l (Eq. 3.5).
    Arrays carry a leading layer axis (L+1) when ``all_layers`` was requested.
    """

    kernels: np.ndarray
    means: np.ndarray
    log_scale: np.ndarray

    def true_kernels(self) -> np.ndarray:
        """exp(log_scale) K~; raises OverflowError when float64 cannot hold K."""
        ls = np.asarray(self.log_scale)
        kmax = np.max(np.abs(self.kernels), axis=(-2, -1)) if self.kernels.size else np.zeros(ls.shape)
        with np.errstate(divide="ignore"):
            log_max = ls + np.log(kmax)   # log of the largest |K^l_ab|
        if np.any(ls > 700.0) or np.any(log_max > _LOG_FLOAT_MAX):
            raise OverflowError(
                f"the mean-field kernel exceeds the float64 range (log of its largest entry "
                f"{float(np.max(log_max)):.1f} > {_LOG_FLOAT_MAX:.1f}); use resscale.kernel_recursion(...) and "
                "its normalised kernels with log_scale")
        return np.exp(ls)[..., None, None] * self.kernels


def kernel_step(net, K, m, log_scale=0.0, layout=MATRIX):
    """One layer of the (normalised) recursion Eq. 3.1-3.4; returns (K~', m~', log_scale').

    ``layout`` says how K is stored: MATRIX (P, P) or a PackedLayout (upper triangle).
    """
    phi = net.phi
    K, m = net.block_type.kernel_step(net, K, m, net.sigma_b2 * np.exp(-log_scale), layout)
    if phi.homogeneous:
        r = float(np.max(layout.diag(K)))
        if r > _RENORM or 0.0 < r < 1.0 / _RENORM:
            K = K / r
            m = m / np.sqrt(r)
            log_scale = log_scale + np.log(r)
    return K, m, log_scale


def _raise_non_finite(net, layer, k):
    """The recursion left float64 at ``layer``: say so (issue 12), never return inf/NaN."""
    what = (f"activation {net.phi.name!r}, block {net.block!r}, alpha = {net.alpha:g}, "
            f"sigma_w2 = {net.sigma_w2:g}, sigma_b2 = {net.sigma_b2:g}")
    if np.any(np.isnan(k)) and not np.any(np.isinf(k)):
        raise ValueError(f"the mean-field kernel became NaN at layer {layer} of depth {net.depth} ({what}); "
                         "the kernel map is not defined there (the previous layer was finite)")
    raise OverflowError(f"the mean-field kernel exceeds float64 at layer {layer} of depth {net.depth} ({what}); "
                        "a non-homogeneous activation's kernel cannot be rescaled: use a smaller alpha^2 L")


def kernel_recursion(net, X=None, K0=None, all_layers=False) -> KernelTrajectory:
    """Run the mean-field recursion through ``net.depth`` layers (Eq. 3.1-3.5).

    Raises OverflowError (ValueError for NaN) naming the layer, depth, alpha and
    activation if the kernel leaves float64 (only possible for non-homogeneous,
    unbounded phi such as gelu; relu/linear run in log space)."""
    K = input_kernel(net, X=X, K0=K0)
    layout = PackedLayout(K.shape[0])
    k = layout.pack(K)
    m = np.zeros(K.shape[0])
    s = 0.0
    ks, ms, ss = [k], [m], [s]
    for layer in range(1, net.depth + 1):
        with np.errstate(over="ignore", invalid="ignore"):
            k, m, s = kernel_step(net, k, m, s, layout)
        if not (np.all(np.isfinite(k)) and np.all(np.isfinite(m))):
            _raise_non_finite(net, layer, k)
        if all_layers:
            ks.append(k)
            ms.append(m)
            ss.append(s)
    if all_layers:
        return KernelTrajectory(layout.unpack(np.stack(ks)), np.stack(ms), np.asarray(ss))
    return KernelTrajectory(layout.unpack(k), m, np.asarray(s))


def mean_field_kernel(net, X=None, K0=None, all_layers=False) -> np.ndarray:
    """Infinite-width kernel K^L (P, P), or all layers K^0..K^L (L+1, P, P).

    Parameters
    ----------
    net : ResNet
    X : (P, d) array, optional
        Data sent through the random input layer: K^0 = sigma_in2 X X^T / d + sigma_bin2.
    K0 : (P, P) array, optional
        Layer-0 kernel given directly (symmetric PSD). Exactly one of X, K0.
    all_layers : bool
        Return the whole trajectory.

    Notes
    -----
    Implements Eq. 3.1-3.4 of docs/theory.md (uncentred second moment; the
    reduced block carries the residual-stream mean). Raises OverflowError if
    K^L exceeds float64 (possible only for relu/linear at large alpha^2 L).
    """
    return kernel_recursion(net, X=X, K0=K0, all_layers=all_layers).true_kernels()


def mean_field_mean(net, X=None, K0=None, all_layers=False) -> np.ndarray:
    """Mean m^L_a of the residual stream (Eq. 3.3; zero except reduced block, non-odd phi)."""
    tr = kernel_recursion(net, X=X, K0=K0, all_layers=all_layers)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(np.asarray(tr.log_scale) / 2.0)[..., None] * tr.means
    if not np.all(np.isfinite(out)):
        raise OverflowError(f"the residual-stream mean exceeds float64 at depth {net.depth} "
                            f"(activation {net.phi.name!r}, alpha = {net.alpha:g}); use kernel_recursion(...) "
                            "and its normalised means with log_scale")
    return out
