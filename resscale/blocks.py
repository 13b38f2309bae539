"""The block types of the scaled-ResNet family, one object each (docs/theory.md Sec. 1).

Each :class:`Block` owns everything that differs between block types, so a new
block is added here, in one place (the pattern of neural-tangents' ``stax``):

* ``kernel_step``      the mean-field kernel map K^{l-1} -> K^l            (Eq. 3.1-3.4, 3.6)
* ``tangent_step``     its exact tangent (forward mode)                      (Eq. 7.2-7.4, 7.6)
* ``two_input_step``   the equal-norm two-input recursion with d k^l/d k^{l-1} (Eq. 5.2)
* ``pair_step``        the same for many pairs of unequal norms (data-level sensitivity, Eq. 8.2)
* ``continuum_rates``  the small-alpha flow d(q, k)/dtau, tau = alpha^2 l    (Eq. 6.1-6.2)
  (``continuum_pair_rates`` for unequal norms, Eq. 8.5)
* ``simulate_layer``   one layer of the Monte-Carlo sampler                  (docs/simulation.md)
* ``torch_features``   the layer stack of the trainable torch model          (resscale.training)

The finite-width theory of a block is a separate engine per structure
(:mod:`resscale.finite_width`: the per-neuron walk for "full", closed
linear-noise recursions for "reduced" and "two_layer", fresh noise for
"feedforward"), registered by block name in :mod:`resscale.finite_width.core`.

Blocks (W, V ~ N(0, sigma_w2/N), b, a ~ N(0, sigma_b2), all independent)::

    full         h^l = h^{l-1} + alpha (W^l phi(h^{l-1}) + b^l)
    reduced      h^l = h^{l-1} + alpha phi(W^l h^{l-1} + b^l)
    two_layer    h^l = h^{l-1} + alpha (V^l phi(W^l h^{l-1} + b^l) + a^l)
    feedforward  h^l = W^l phi(h^{l-1}) + b^l

Dependencies: this module uses :mod:`resscale.kernel_maps` only; the modules
that run recursions (kernel_recursion, response, sensitivity, optimal_alpha,
simulation, training, finite_width) use it, never the reverse.
"""
from __future__ import annotations

import numpy as np

from .kernel_maps import pair_matrix, tangent_G

__all__ = ["Block", "BLOCKS", "get_block"]

_TINY = 1e-300


class Block:
    """Base class: a block type of the family. Subclasses override the maps below.

    Attributes
    ----------
    name : str            the ``ResNet(block=...)`` name
    residual : bool       has a skip connection and a residual scaling alpha
    draws_per_layer : int Gaussian matrix draws per layer in the simulator (1, or 2 for two_layer)
    """

    name = ""
    residual = True
    draws_per_layer = 1

    def __repr__(self):
        return f"<block {self.name!r}>"

    def carries_mean(self, phi) -> bool:
        """Whether the residual stream has a mean m^l != 0 (reduced block with non-odd phi)."""
        return False

    # ---- mean field
    def kernel_step(self, net, K, m, sb2, layout):
        """(K^l, m^l) from (K^{l-1}, m^{l-1}); ``sb2`` is sigma_b2 in the units of K (log space)."""
        raise NotImplementedError

    def tangent_step(self, net, K, m, sb2, JK, Jm):
        """Push the tangent (dK, dm) = (JK, Jm) through one layer at (K, m) (Eq. 7.2-7.4)."""
        raise NotImplementedError

    def two_input_step(self, phi, sw2, sb2, a, a2, q, k, m):
        """Equal-norm two-input step over arrays of alphas: (q', k', m', log dk'/dk) (Eq. 5.2)."""
        raise NotImplementedError

    def pair_step(self, phi, sw2, sb2, a, a2, q, k, m, I, J):
        """Unequal-norm pair recursion (data-level sensitivity, docs/theory.md Sec. 8): norms q and
        means m of the inputs (..., n_in), kernels k of the pairs (I, J) (..., n_p); returns
        (q', k', m', log dk'/dk), the last per pair."""
        raise NotImplementedError

    # ---- continuum limit (analytic alpha*)
    def continuum_obstacle(self, net):
        """Why the continuum limit T = alpha^2 L does not apply to this net, or None."""
        return None

    def continuum_rates(self, net, q, k, sb2):
        """(dq/dtau, dk/dtau, d(dk/dtau)/dk) of the flow at (q, k) (Eq. 6.1-6.2)."""
        raise NotImplementedError

    def continuum_pair_rates(self, phi, sw2, qd, sb_d, qI, qJ, kk, sb_p):
        """Unequal-norm flow: (dq/dtau at the norms qd, dk/dtau and d(dk/dtau)/dk at the pairs
        (qI, qJ, kk)); ``sb_d``, ``sb_p`` the bias in the units of qd and of the pairs (Eq. 8.5)."""
        raise NotImplementedError

    # ---- Monte Carlo and training
    def simulate_layer(self, layer, fn, d1, h, dh, alpha, P):
        """One layer of the sampler. ``layer(M)`` returns (W M, b) for a fresh Gaussian layer
        acting on M (S, N, K) (exact in law, docs/simulation.md); ``dh`` is the optional
        tangent column (S, N, 1) of input b w.r.t. c0. Returns (h, dh)."""
        raise NotImplementedError

    def torch_layers(self, nn, width):
        """The torch modules of one block (nn.Linear layers, in the order of ``torch_forward``)."""
        return [nn.Linear(width, width)]

    def torch_forward(self, mods, h, alpha, phi):
        raise NotImplementedError


class FullBlock(Block):
    """h^l = h^{l-1} + alpha (W phi(h^{l-1}) + b):  K' = K + alpha^2 (sigma_w2 G(K) + sigma_b2) (Eq. 3.1)."""

    name = "full"

    def kernel_step(self, net, K, m, sb2, layout):
        return K + net.alpha * net.alpha * (net.sigma_w2 * layout.G(net.phi, K) + sb2), m

    def tangent_step(self, net, K, m, sb2, JK, Jm):
        _, A, Ba, Bb = pair_matrix(net.phi, K, grad=True)
        return JK + net.alpha * net.alpha * net.sigma_w2 * tangent_G(JK, A, Ba, Bb), Jm

    def two_input_step(self, phi, sw2, sb2, a, a2, q, k, m):
        G, A, g = phi.pair_equal(q, k)
        return q + a2 * (sw2 * g + sb2), k + a2 * (sw2 * G + sb2), m, np.log1p(a2 * sw2 * A)

    def pair_step(self, phi, sw2, sb2, a, a2, q, k, m, I, J):
        G, _, _, A = phi.pair(q[..., I], q[..., J], k)
        return (q + a2 * (sw2 * phi.diag(q)[0] + sb2), k + a2 * (sw2 * G + sb2), m,
                np.log1p(a2 * (sw2 * A)))

    def continuum_rates(self, net, q, k, sb2):
        phi, sw2 = net.phi, net.sigma_w2
        G, _, _, A = phi.pair(q, q, k)
        return sw2 * phi.diag(q)[0] + sb2, sw2 * G + sb2, sw2 * A

    def continuum_pair_rates(self, phi, sw2, qd, sb_d, qI, qJ, kk, sb_p):
        G, _, _, A = phi.pair(qI, qJ, kk)
        return sw2 * phi.diag(qd)[0] + sb_d, sw2 * G + sb_p, sw2 * A

    def simulate_layer(self, layer, fn, d1, h, dh, alpha, P):
        A = fn(h)
        Y, b = layer(A if dh is None else _concat(A, d1(h[..., 1:2]) * dh))
        h = h + alpha * (Y[..., :P] + b)
        return h, (None if dh is None else dh + alpha * Y[..., P:])

    def torch_forward(self, mods, h, alpha, phi):
        return h + alpha * mods[0](phi(h))


class ReducedBlock(Block):
    """h^l = h^{l-1} + alpha phi(W h^{l-1} + b), Z = sigma_w2 K + sigma_b2 (Eq. 3.2-3.3):
    K' = K + alpha (m mu(Z)^T + mu(Z) m^T) + alpha^2 G(Z),  m' = m + alpha mu(Z)."""

    name = "reduced"

    def carries_mean(self, phi):
        return not phi.odd

    def kernel_step(self, net, K, m, sb2, layout):
        a, phi = net.alpha, net.phi
        Z = net.sigma_w2 * K + sb2
        if phi.odd:
            return K + a * a * layout.G(phi, Z), m
        mu = phi.mean(layout.diag(Z))[0]
        return K + a * layout.cross(m, mu) + a * a * layout.G(phi, Z), m + a * mu

    def tangent_step(self, net, K, m, sb2, JK, Jm):
        a, sw2, phi = net.alpha, net.sigma_w2, net.phi
        Z = sw2 * K + sb2
        _, A, Ba, Bb = pair_matrix(phi, Z, grad=True)
        dK = JK + a * a * sw2 * tangent_G(JK, A, Ba, Bb)
        if phi.odd:
            return dK, Jm
        idx = np.arange(K.shape[0])
        mu, dmu_dz = phi.mean(np.diag(Z))
        extra = (None,) * (JK.ndim - 2)
        dmu = (dmu_dz * sw2)[(slice(None),) + extra] * JK[idx, idx]  # (P, *T)
        cross = Jm[:, None] * mu[(None, slice(None)) + extra] + m[(slice(None), None) + extra] * dmu[None, :]
        return dK + a * (cross + np.swapaxes(cross, 0, 1)), Jm + a * dmu

    def two_input_step(self, phi, sw2, sb2, a, a2, q, k, m):
        zq, zk = sw2 * q + sb2, sw2 * k + sb2
        G, A, g = phi.pair_equal(zq, zk)
        dlog = np.log1p(a2 * sw2 * A)
        if phi.odd:
            return q + a2 * g, k + a2 * G, m, dlog
        mu = phi.mean(zq)[0]
        drift = 2.0 * a * m * mu
        return q + drift + a2 * g, k + drift + a2 * G, m + a * mu, dlog

    def continuum_obstacle(self, net):
        if not net.phi.odd:
            return ("continuum limit needs a zero-mean residual branch; the reduced "
                    f"block with non-odd {net.phi.name} has a mean drift O(alpha l)")
        return None

    def pair_step(self, phi, sw2, sb2, a, a2, q, k, m, I, J):
        Z, Zk = sw2 * q + sb2, sw2 * k + sb2
        G, _, _, A = phi.pair(Z[..., I], Z[..., J], Zk)
        dlog = np.log1p(a2 * (sw2 * A))
        g = phi.diag(Z)[0]
        if phi.odd:
            return q + a2 * g, k + a2 * G, m, dlog
        mu = phi.mean(Z)[0]
        k = k + a * (m[..., I] * mu[..., J] + mu[..., I] * m[..., J]) + a2 * G
        return q + 2.0 * a * m * mu + a2 * g, k, m + a * mu, dlog

    def continuum_rates(self, net, q, k, sb2):
        phi, sw2 = net.phi, net.sigma_w2
        zq, zk = sw2 * q + sb2, sw2 * k + sb2
        G, _, _, A = phi.pair(zq, zq, zk)
        return phi.diag(zq)[0], G, sw2 * A

    def continuum_pair_rates(self, phi, sw2, qd, sb_d, qI, qJ, kk, sb_p):
        G, _, _, A = phi.pair(sw2 * qI + sb_p, sw2 * qJ + sb_p, sw2 * kk + sb_p)
        return phi.diag(sw2 * qd + sb_d)[0], G, sw2 * A

    def simulate_layer(self, layer, fn, d1, h, dh, alpha, P):
        Y, b = layer(h if dh is None else _concat(h, dh))
        u = Y[..., :P] + b
        h = h + alpha * fn(u)
        return h, (None if dh is None else dh + alpha * d1(u[..., 1:2]) * Y[..., P:])

    def torch_forward(self, mods, h, alpha, phi):
        return h + alpha * phi(mods[0](h))


class TwoLayerBlock(Block):
    """h^l = h^{l-1} + alpha (V phi(W h^{l-1} + b) + a), Z = sigma_w2 K + sigma_b2 (Eq. 3.6):
    K' = K + alpha^2 (sigma_w2 G(Z) + sigma_b2). The branch has zero mean (V is centred)
    for every phi, so no residual-stream mean appears and the continuum limit always applies."""

    name = "two_layer"
    draws_per_layer = 2

    def kernel_step(self, net, K, m, sb2, layout):
        sw2 = net.sigma_w2
        return K + net.alpha * net.alpha * (sw2 * layout.G(net.phi, sw2 * K + sb2) + sb2), m

    def tangent_step(self, net, K, m, sb2, JK, Jm):
        sw2 = net.sigma_w2
        _, A, Ba, Bb = pair_matrix(net.phi, sw2 * K + sb2, grad=True)
        return JK + net.alpha * net.alpha * sw2 * sw2 * tangent_G(JK, A, Ba, Bb), Jm   # (Eq. 7.6)

    def two_input_step(self, phi, sw2, sb2, a, a2, q, k, m):
        G, A, g = phi.pair_equal(sw2 * q + sb2, sw2 * k + sb2)
        return (q + a2 * (sw2 * g + sb2), k + a2 * (sw2 * G + sb2), m,
                np.log1p(a2 * sw2 * sw2 * A))

    def pair_step(self, phi, sw2, sb2, a, a2, q, k, m, I, J):
        Z, Zk = sw2 * q + sb2, sw2 * k + sb2
        G, _, _, A = phi.pair(Z[..., I], Z[..., J], Zk)
        return (q + a2 * (sw2 * phi.diag(Z)[0] + sb2), k + a2 * (sw2 * G + sb2), m,
                np.log1p(a2 * (sw2 * sw2 * A)))

    def continuum_rates(self, net, q, k, sb2):
        phi, sw2 = net.phi, net.sigma_w2
        zq, zk = sw2 * q + sb2, sw2 * k + sb2
        G, _, _, A = phi.pair(zq, zq, zk)
        return sw2 * phi.diag(zq)[0] + sb2, sw2 * G + sb2, sw2 * sw2 * A

    def continuum_pair_rates(self, phi, sw2, qd, sb_d, qI, qJ, kk, sb_p):
        G, _, _, A = phi.pair(sw2 * qI + sb_p, sw2 * qJ + sb_p, sw2 * kk + sb_p)
        return sw2 * phi.diag(sw2 * qd + sb_d)[0] + sb_d, sw2 * G + sb_p, sw2 * sw2 * A

    def simulate_layer(self, layer, fn, d1, h, dh, alpha, P):
        Y, b = layer(h if dh is None else _concat(h, dh))          # W h + b
        u = Y[..., :P] + b
        A = fn(u)
        dA = None if dh is None else d1(u[..., 1:2]) * Y[..., P:]
        Y2, b2 = layer(A if dh is None else _concat(A, dA))         # V phi(u) + a
        h = h + alpha * (Y2[..., :P] + b2)
        return h, (None if dh is None else dh + alpha * Y2[..., P:])

    def torch_layers(self, nn, width):
        return [nn.Linear(width, width), nn.Linear(width, width)]

    def torch_forward(self, mods, h, alpha, phi):
        return h + alpha * mods[1](phi(mods[0](h)))


class FeedForwardBlock(Block):
    """h^l = W phi(h^{l-1}) + b (no skip):  K' = sigma_w2 G(K) + sigma_b2 (Eq. 3.4)."""

    name = "feedforward"
    residual = False

    def kernel_step(self, net, K, m, sb2, layout):
        return net.sigma_w2 * layout.G(net.phi, K) + sb2, m

    def tangent_step(self, net, K, m, sb2, JK, Jm):
        _, A, Ba, Bb = pair_matrix(net.phi, K, grad=True)
        return net.sigma_w2 * tangent_G(JK, A, Ba, Bb), Jm

    def two_input_step(self, phi, sw2, sb2, a, a2, q, k, m):
        G, A, g = phi.pair_equal(q, k)
        return sw2 * g + sb2, sw2 * G + sb2, m, np.log(np.maximum(sw2 * A, _TINY))

    def pair_step(self, phi, sw2, sb2, a, a2, q, k, m, I, J):
        G, _, _, A = phi.pair(q[..., I], q[..., J], k)
        return sw2 * phi.diag(q)[0] + sb2, sw2 * G + sb2, m, np.log(np.maximum(sw2 * A, _TINY))

    def continuum_obstacle(self, net):
        return "feedforward block has no residual scaling"

    def simulate_layer(self, layer, fn, d1, h, dh, alpha, P):
        A = fn(h)
        Y, b = layer(A if dh is None else _concat(A, d1(h[..., 1:2]) * dh))
        return Y[..., :P] + b, (None if dh is None else Y[..., P:])

    def torch_forward(self, mods, h, alpha, phi):
        return mods[0](phi(h))


def _concat(a, b):
    """Concatenate along the last axis for NumPy arrays and torch tensors alike."""
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b], axis=-1)
    import torch

    return torch.cat([a, b], dim=-1)


_REGISTRY = {b.name: b for b in (FullBlock(), ReducedBlock(), TwoLayerBlock(), FeedForwardBlock())}
BLOCKS = tuple(_REGISTRY)


def get_block(name) -> Block:
    """The :class:`Block` object of a block name (``ResNet.block_type``)."""
    if isinstance(name, Block):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"block must be one of {BLOCKS}, got {name!r}") from None
