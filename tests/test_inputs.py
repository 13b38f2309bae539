"""Bad input gets a clear ValueError naming the parameter."""
import math

import numpy as np
import pytest

import resscale as rs


@pytest.mark.parametrize("kwargs, name", [
    (dict(depth=0), "depth"), (dict(depth=2.5), "depth"), (dict(alpha=-0.1), "alpha"),
    (dict(sigma_w2=-1.0), "sigma_w2"), (dict(sigma_b2=-1e-3), "sigma_b2"),
    (dict(sigma_in2=-1.0), "sigma_in2"), (dict(sigma_bin2=-1.0), "sigma_bin2"),
    (dict(alpha=math.nan), "alpha"), (dict(sigma_w2=math.inf), "sigma_w2"),
    (dict(activation="softsign"), "activation"), (dict(activation=3), "activation"),
    (dict(block="dense"), "block"), (dict(depth="ten"), "depth"),
])
def test_bad_network_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        rs.ResNet(**kwargs)


@pytest.mark.parametrize("c0, q0, name", [(1.5, 1.0, "c0"), (-1.01, 1.0, "c0"), (math.nan, 1.0, "c0"),
                                          (0.5, 0.0, "q0"), (0.5, -1.0, "q0"), (0.5, math.inf, "q0")])
def test_bad_c0_q0(c0, q0, name):
    net = rs.ResNet(depth=3)
    for fn in (rs.sensitivity, rs.optimal_alpha):
        with pytest.raises(ValueError, match=name):
            fn(net, c0, q0)


@pytest.mark.parametrize("K0, msg", [
    (np.array([[1.0, 0.5], [0.4, 1.0]]), "symmetric"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
    (np.ones((2, 3)), "square"),
    (np.ones(3), "2-D"),
])
def test_bad_K0(K0, msg):
    with pytest.raises(ValueError, match=msg):
        rs.mean_field_kernel(rs.ResNet(depth=2), K0=K0)


def test_bad_X_and_exactly_one_input():
    net = rs.ResNet(depth=2)
    with pytest.raises(ValueError, match="X must be 2-D"):
        rs.mean_field_kernel(net, X=np.ones(4))
    with pytest.raises(ValueError, match="X contains NaN"):
        rs.mean_field_kernel(net, X=np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="exactly one"):
        rs.mean_field_kernel(net)
    with pytest.raises(ValueError, match="exactly one"):
        rs.mean_field_kernel(net, X=np.ones((2, 2)), K0=np.eye(2))


def test_bad_alpha_grid_and_feedforward_optimum():
    net = rs.ResNet(depth=3)
    with pytest.raises(ValueError, match="alphas"):
        rs.sensitivity(net, 0.5, alphas=[0.1, -0.2])
    with pytest.raises(ValueError, match="feedforward"):
        rs.optimal_alpha(net.replace(block="feedforward"), 0.5)


def test_callable_activation_is_validated():
    with pytest.raises(ValueError, match="activation callable"):
        rs.ResNet(activation=lambda u: np.full(3, np.nan))
    net = rs.ResNet(depth=3, activation=np.sin)
    assert net.phi.name == "sin"
