"""Exact response function vs central finite differences of the recursion, symmetries, depth."""
import numpy as np
import pytest

import resscale as rs
from resscale.inputs import input_kernel


def _fd_response(net, K0, h=1e-5):
    P = K0.shape[0]
    chi = np.zeros((P, P, P, P))
    for c in range(P):
        for d in range(c, P):
            E = np.zeros((P, P))
            E[c, d] = E[d, c] = 1.0
            diff = (rs.mean_field_kernel(net, K0=K0 + h * E) - rs.mean_field_kernel(net, K0=K0 - h * E)) / (2 * h)
            w = 1.0 if c == d else 0.5
            chi[:, :, c, d] = chi[:, :, d, c] = w * diff
    return chi


@pytest.mark.parametrize("block", ["full", "reduced", "feedforward"])
@pytest.mark.parametrize("activation", ["erf", "relu", "linear"])
def test_response_matches_finite_differences(block, activation, rng):
    net = rs.ResNet(depth=8, alpha=0.5, sigma_w2=1.3, sigma_b2=0.1, activation=activation, block=block)
    K0 = input_kernel(net, X=rng.normal(size=(3, 5)))
    chi = rs.response_function(net, K0=K0)
    fd = _fd_response(net, K0)
    np.testing.assert_allclose(chi, fd, rtol=1e-6, atol=1e-7 * np.abs(chi).max())
    dK0 = rng.normal(size=(3, 3))
    dK0 = dK0 + dK0.T
    h = 1e-6
    lin = (rs.mean_field_kernel(net, K0=K0 + h * dK0) - rs.mean_field_kernel(net, K0=K0 - h * dK0)) / (2 * h)
    np.testing.assert_allclose(np.einsum("abcd,cd->ab", chi, dK0), lin, rtol=1e-5, atol=1e-8)


def test_response_quadrature_activation(rng):
    net = rs.ResNet(depth=6, alpha=0.5, activation="tanh", block="reduced")
    K0 = input_kernel(net, X=rng.normal(size=(2, 4)))
    np.testing.assert_allclose(rs.response_function(net, K0=K0), _fd_response(net, K0), rtol=1e-2, atol=1e-4)


def test_linear_response_closed_form():
    net = rs.ResNet(depth=50, alpha=0.3, sigma_w2=2.0, activation="linear")
    chi = rs.response_function(net, K0=np.eye(3))
    eye = np.eye(3)
    ident = 0.5 * (np.einsum("ac,bd->abcd", eye, eye) + np.einsum("ad,bc->abcd", eye, eye))
    np.testing.assert_allclose(chi, (1 + 0.09 * 2.0) ** 50 * ident, rtol=1e-12)


def test_response_depth_10000_in_log_space():
    net = rs.ResNet(depth=10_000, alpha=1.0, activation="relu")
    chi_n, log_scale = rs.response_function(net, K0=np.array([[1.0, 0.5], [0.5, 1.0]]), return_log_scale=True)
    assert np.all(np.isfinite(chi_n)) and np.isfinite(log_scale) and log_scale > 700
    # relu full block, sigma_b2 = 0: diagonal grows by (1 + alpha^2/2) per layer exactly
    assert log_scale + np.log(chi_n[0, 0, 0, 0]) == pytest.approx(10_000 * np.log(1.5), rel=1e-10)
    erf_net = rs.ResNet(depth=2_000, alpha=0.1)
    chi = rs.response_function(erf_net, K0=np.array([[1.0, 0.5], [0.5, 1.0]]))
    assert np.all(np.isfinite(chi))
