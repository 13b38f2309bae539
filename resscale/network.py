"""Parameter container for the scaled-ResNet family (docs/theory.md, Sec. 1).

The container holds hyperparameters only; every computation lives in the
functions of :mod:`resscale.kernel_recursion`, :mod:`resscale.response`,
:mod:`resscale.finite_width`, :mod:`resscale.simulation`, ... that take a
:class:`ResNet` as first argument (the NNMT convention: parameters separate
from the functions that compute on them).

Network family (SPEC, theory.md Eq. 1.1-1.4)::

    input layer   h^0 = W^0 x + b^0,  W^0_ij ~ N(0, sigma_in2/d), b^0_i ~ N(0, sigma_bin2)
    "full"        h^l = h^{l-1} + alpha (W^l phi(h^{l-1}) + b^l)
    "reduced"     h^l = h^{l-1} + alpha phi(W^l h^{l-1} + b^l)
    "two_layer"   h^l = h^{l-1} + alpha (V^l phi(W^l h^{l-1} + b^l) + a^l)
    "feedforward" h^l = W^l phi(h^{l-1}) + b^l
    W^l_ij, V^l_ij ~ N(0, sigma_w2/N), b^l_i, a^l_i ~ N(0, sigma_b2), l = 1..depth

Everything that differs between block types lives in one object per block,
:mod:`resscale.blocks` (``net.block_type``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Union

import numpy as np

from .activations import Activation, get_activation
from .blocks import BLOCKS, Block, get_block
from .inputs import check_choice, check_depth, check_int, check_real



def _check_real(name: str, value, *, min_value=None, strict=False, integer=False):
    """Validate a scalar hyperparameter and return it as float/int (see :mod:`resscale.inputs`).

    Raises ValueError (ParameterTypeError for a wrong type, e.g. a string) naming ``name``.
    """
    if integer:
        return check_int(name, value, lo=None if min_value is None else int(math.ceil(min_value)))
    return check_real(name, value, lo=min_value, strict_lo=strict)


@dataclass(frozen=True)
class ResNet:
    """Hyperparameters of a scaled ResNet (or its feed-forward baseline).

    Parameters
    ----------
    depth : int, 1 <= depth <= 10**6
        Number of residual blocks L (above 10**6 = ``resscale.inputs.MAX_DEPTH`` no layer
        recursion finishes in reasonable time: refused with the time estimate).
    alpha : float >= 0
        Residual-branch scaling (ignored by ``block="feedforward"`` and by
        :func:`resscale.optimal_alpha`, which scans it).
    sigma_w2, sigma_b2 : float >= 0
        Weight and bias variances of the blocks (W_ij ~ N(0, sigma_w2/N)).
    sigma_in2, sigma_bin2 : float >= 0
        Weight and bias variances of the input layer (W^0_ij ~ N(0, sigma_in2/d)).
    activation : str or callable or Activation
        ``"erf"``, ``"tanh"``, ``"relu"``, ``"linear"``, ``"gelu"``, or any
        vectorised callable phi(u) (its Gaussian integrals are then computed
        by quadrature, see :mod:`resscale.activations`).
    block : {"full", "reduced", "two_layer", "feedforward"}
        See :mod:`resscale.blocks` (SPEC; "two_layer" is the basic block of practical ResNets).
    """

    depth: int = 100
    alpha: float = 0.1
    sigma_w2: float = 1.0
    sigma_b2: float = 0.0
    sigma_in2: float = 1.0
    sigma_bin2: float = 0.0
    activation: Union[str, Callable, Activation] = "erf"
    block: str = "full"
    phi: Activation = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("depth", check_depth(self.depth))  # 1 <= depth <= inputs.MAX_DEPTH (10**6)
        set_("alpha", _check_real("alpha", self.alpha, min_value=0.0))
        for name in ("sigma_w2", "sigma_b2", "sigma_in2", "sigma_bin2"):
            set_(name, _check_real(name, getattr(self, name), min_value=0.0))
        check_choice("block", self.block, BLOCKS)
        set_("phi", get_activation(self.activation))

    def replace(self, **changes) -> "ResNet":
        """Return a copy with some hyperparameters changed (validated again)."""
        changes.pop("phi", None)
        return replace(self, **changes)

    @property
    def block_type(self) -> Block:
        """The :class:`resscale.blocks.Block` object of ``block`` (kernel map, tangent, sampler ...)."""
        return get_block(self.block)

    @property
    def is_residual(self) -> bool:
        return self.block_type.residual

    def to_dict(self) -> dict:
        """JSON-friendly description (the activation by name)."""
        return dict(depth=self.depth, alpha=self.alpha, sigma_w2=self.sigma_w2,
                    sigma_b2=self.sigma_b2, sigma_in2=self.sigma_in2,
                    sigma_bin2=self.sigma_bin2, activation=self.phi.name, block=self.block)
