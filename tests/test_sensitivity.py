"""Sensitivity S = dc^L/dc^0: two independent code paths, limits, vectorisation."""
import numpy as np
import pytest

import resscale as rs


@pytest.mark.parametrize("block", ["full", "reduced", "feedforward"])
@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_sensitivity_equals_response_function_entry(block, activation):
    net = rs.ResNet(depth=12, alpha=0.4, sigma_w2=1.2, sigma_b2=0.05, activation=activation, block=block)
    c0, q0 = 0.8, 1.3
    K0 = q0 * np.array([[1, c0], [c0, 1]])
    chi = rs.response_function(net, K0=K0)
    KL = rs.mean_field_kernel(net, K0=K0)
    # perturb the off-diagonal only (diagonal fixed): dK0_ab = q0 dc0
    E = np.array([[0.0, 1.0], [1.0, 0.0]]) * q0
    S_chi = np.einsum("abcd,cd->ab", chi, E)[0, 1] / KL[0, 0]
    assert rs.sensitivity(net, c0, q0) == pytest.approx(S_chi, rel=1e-10)


def test_vectorised_grid_equals_pointwise():
    net = rs.ResNet(depth=40)
    alphas = np.array([0.01, 0.1, 0.5, 2.0])
    grid = rs.sensitivity(net, 0.9, alphas=alphas)
    point = [rs.sensitivity(net.replace(alpha=a), 0.9) for a in alphas]
    np.testing.assert_allclose(grid, point, rtol=1e-13)


def test_c0_equal_one_is_the_jacobian_limit():
    net = rs.ResNet(depth=30, alpha=0.3)
    near = rs.sensitivity(net, 1 - 1e-7)
    assert rs.sensitivity(net, 1.0) == pytest.approx(near, rel=1e-5)


def test_relu_full_block_jacobian_is_exactly_one():
    # relu, sigma_b2 = 0, c0 = 1: q and the off-diagonal factor both grow by 1 + alpha^2 sw2/2
    S = rs.sensitivity(rs.ResNet(depth=500, activation="relu"), 1.0, alphas=np.logspace(-3, 1, 9))
    np.testing.assert_allclose(S, 1.0, rtol=1e-10)


def test_feedforward_independent_of_alpha():
    net = rs.ResNet(depth=10, block="feedforward", sigma_w2=2.0)
    S = rs.sensitivity(net, 0.7, alphas=[0.0, 0.3, 5.0])
    assert np.ptp(S) == 0.0
