"""Activation functions and their Gaussian integrals (docs/theory.md, Sec. 2).

Every kernel map of the theory needs, for a centred bivariate Gaussian
(u_a, u_b) with covariance [[kaa, kab], [kab, kbb]],

    G(kaa, kbb, kab)  = E[phi(u_a) phi(u_b)]                      (Eq. 2.1)
    dG/dkab           = E[phi'(u_a) phi'(u_b)]          (Price)   (Eq. 2.2)
    dG/dkaa           = 1/2 E[phi''(u_a) phi(u_b)]                (Eq. 2.3)

plus the diagonal g(k) = E[phi(u)^2] with g'(k) = E[phi'^2 + phi phi''] and the
mean mu(k) = E[phi(u)] with mu'(k) = 1/2 E[phi''(u)] (the mean only matters for
the reduced block with a non-odd phi).

Closed forms (Eq. 2.4-2.6): erf (arcsine kernel), relu (arc-cosine kernel),
linear. Everything else (tanh, gelu, any callable) uses sinh-mapped trapezoid
rules (1-D) and a conditional decomposition u_b | u_a (2-D), accurate to
<= 1e-9 relative for smooth phi and k in [1e-6, 1e6], |rho| <= 1 (accuracy
parameters ``_QUAD_H`` etc. in :mod:`resscale.activation_quadrature`; measured in tests/test_quadrature.py and
stated in theory.md Sec. 2.3). For a user callable without derivatives, phi' and phi'' are taken by
central differences of phi (step 1e-4 / 1e-3; the *recursion* is still
differentiated exactly). ``from_callable`` refuses a callable that is not finite on
[-12, 12] or (unless its kinks are declared) not C^2 numerically (:func:`find_kinks`);
declared kinks give ``Activation.smooth = False`` (docs/theory.md Sec. 5.1).

Modules: :mod:`resscale.activation_quadrature` (the :class:`Activation` type and its quadrature),
:mod:`resscale.activation_closed_forms` (erf, relu, linear), :mod:`resscale.activation_callables`
(:func:`from_callable`, :func:`find_kinks`); this module holds the built-ins (:data:`BUILTIN`) and
:func:`get_activation`, and re-exports the others' names.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special

# re-exported: resscale.activations.<name> keeps working for all of these
from .activation_callables import (  # noqa: F401
    _KINK_GRID, _KINK_H, _PROBE, KinkedActivationWarning, find_kinks, from_callable)
from .activation_closed_forms import _Erf, _erf_pair_scalar, _Linear, _Relu, _relu_pair_scalar  # noqa: F401
from .activation_quadrature import (  # noqa: F401
    _CHUNK, _GH_FAR, _GH_ORDER, _GH_SIGMA, _GH_TAU, _MIN_REL_SCALE, _QUAD_CAP, _QUAD_H, _QUAD_SPAN, _SHARED_MAX,
    _SQRT2, _TINY, Activation, _bucket, _capped_nodes, _capped_t, _check_values, _fd1, _fd2, _gh_inner_order,
    _normal_rule, gauss_hermite)


# ----------------------------------------------------------------- builtins
_SQRT_PI = math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf_d1(u):
    return (2.0 / _SQRT_PI) * np.exp(-u * u)


def _erf_d2(u):
    return -2.0 * u * _erf_d1(u)


def _tanh_d1(u):
    t = np.tanh(u)
    return 1.0 - t * t


def _tanh_d2(u):
    t = np.tanh(u)
    return -2.0 * t * (1.0 - t * t)


def _relu(u):
    return np.maximum(u, 0.0)


def _relu_d1(u):
    return (np.asarray(u) > 0).astype(float)


def _zero(u):
    return np.zeros_like(np.asarray(u, dtype=float))


def _gelu(u):
    return u * special.ndtr(u)


def _gelu_d1(u):
    return special.ndtr(u) + u * _INV_SQRT_2PI * np.exp(-0.5 * u * u)


def _gelu_d2(u):
    return _INV_SQRT_2PI * np.exp(-0.5 * u * u) * (2.0 - u * u)


def _identity(u):
    return np.asarray(u, dtype=float)


def _one(u):
    return np.ones_like(np.asarray(u, dtype=float))


BUILTIN = {
    "erf": lambda: _Erf("erf", special.erf, _erf_d1, _erf_d2, odd=True, closed_form=True),
    "tanh": lambda: Activation("tanh", np.tanh, _tanh_d1, _tanh_d2, odd=True),
    "relu": lambda: _Relu("relu", _relu, _relu_d1, _zero, homogeneous=True, closed_form=True,
                          smooth=False, kinks=(0.0,)),
    "linear": lambda: _Linear("linear", _identity, _one, _zero, odd=True, homogeneous=True,
                              closed_form=True),
    "gelu": lambda: Activation("gelu", _gelu, _gelu_d1, _gelu_d2, asymptotic_slopes=(1.0, 0.0)),
}



def get_activation(activation) -> Activation:
    """Resolve ``"erf" | "tanh" | "relu" | "linear" | "gelu"``, a callable or an Activation."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.strip().lower()
        if key not in BUILTIN:
            raise ValueError(f"activation must be one of {sorted(BUILTIN)} or a callable, got {activation!r}")
        return BUILTIN[key]()
    if callable(activation):
        return from_callable(activation)
    raise ValueError(f"activation must be a name {sorted(BUILTIN)} or a callable, got {activation!r}")
