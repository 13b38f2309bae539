"""Mean-field kernel: closed forms, log-space depth, and a direct large-width simulation."""
import numpy as np
import pytest
from scipy import integrate

import resscale as rs
from conftest import simulate_inline


def test_linear_full_block_closed_form(rng):
    X = rng.normal(size=(4, 7))
    for alpha, sw2 in [(0.1, 1.0), (0.7, 2.5), (1.3, 0.2)]:
        net = rs.ResNet(depth=37, alpha=alpha, sigma_w2=sw2, activation="linear", sigma_in2=1.7)
        K0 = 1.7 * X @ X.T / 7
        np.testing.assert_allclose(rs.mean_field_kernel(net, X=X), (1 + alpha**2 * sw2) ** 37 * K0,
                                   rtol=1e-12)


def test_linear_depth_10000_log_space():
    net = rs.ResNet(depth=10_000, alpha=1.0, activation="linear")
    tr = rs.kernel_recursion(net, K0=np.eye(2) + 0.5)
    # K^L = 2^L K0: log-scale + normalised kernel reproduce it without overflow
    K = tr.kernels * np.exp(tr.log_scale - 10_000 * np.log(2.0))
    np.testing.assert_allclose(K, np.eye(2) + 0.5, rtol=1e-9)
    with pytest.raises(OverflowError, match="float64"):
        rs.mean_field_kernel(net, K0=np.eye(2))


def _relu_kernel_numeric(kaa, kbb, kab):
    """E[relu(u_a) relu(u_b)] by 2-D adaptive quadrature (independent of the closed form)."""
    C = np.array([[kaa, kab], [kab, kbb]])
    Ci = np.linalg.inv(C)
    norm = 1 / (2 * np.pi * np.sqrt(np.linalg.det(C)))
    f = lambda y, x: x * y * norm * np.exp(-0.5 * (Ci[0, 0] * x * x + 2 * Ci[0, 1] * x * y + Ci[1, 1] * y * y))
    return integrate.dblquad(f, 0, 12 * np.sqrt(kaa), 0, 12 * np.sqrt(kbb), epsabs=1e-12, epsrel=1e-10)[0]


def test_relu_arccosine_against_numerical_integration():
    net = rs.ResNet(depth=1, activation="relu", block="feedforward", sigma_w2=2.0)
    K0 = np.array([[1.3, 0.4], [0.4, 0.8]])
    K1 = rs.mean_field_kernel(net, K0=K0)
    assert K1[0, 0] == pytest.approx(1.3, rel=1e-12)  # sigma_w2 = 2 preserves the norm
    assert K1[0, 1] == pytest.approx(2 * _relu_kernel_numeric(1.3, 0.8, 0.4), rel=1e-7)


def test_erf_arcsine_against_numerical_integration():
    phi = rs.get_activation("erf")
    from scipy.special import erf
    C = np.array([[0.7, -0.3], [-0.3, 2.0]])
    Ci = np.linalg.inv(C)
    norm = 1 / (2 * np.pi * np.sqrt(np.linalg.det(C)))
    f = lambda y, x: erf(x) * erf(y) * norm * np.exp(-0.5 * (Ci[0, 0] * x * x + 2 * Ci[0, 1] * x * y + Ci[1, 1] * y * y))
    ref = integrate.dblquad(f, -10, 10, -14, 14, epsabs=1e-12, epsrel=1e-10)[0]
    assert phi.kernel(0.7, 2.0, -0.3) == pytest.approx(ref, rel=1e-7)


def test_reduced_block_carries_the_mean():
    net = rs.ResNet(depth=5, alpha=0.5, activation="relu", block="reduced")
    m = rs.mean_field_mean(net, K0=np.eye(2))
    assert np.all(m > 0.5)
    assert np.allclose(rs.mean_field_mean(net.replace(activation="erf"), K0=np.eye(2)), 0.0)


@pytest.mark.parametrize("activation, block", [("erf", "full"), ("relu", "reduced"), ("tanh", "feedforward"),
                                               ("gelu", "full")])
def test_large_width_simulation_agrees(activation, block):
    """Direct Monte-Carlo at width 500: |mean Khat - K^L| < 4 SE + O(1/N) allowance."""
    net = rs.ResNet(depth=5, alpha=0.6, sigma_w2=1.5, sigma_b2=0.05, activation=activation, block=block)
    K0 = np.array([[1.0, 0.6], [0.6, 1.4]])
    sims = simulate_inline(net, K0, width=500, n_networks=16, seed=7)
    K = rs.mean_field_kernel(net, K0=K0)
    mean, se = sims.mean(0), sims.std(0, ddof=1) / np.sqrt(len(sims))
    # the O(1/N) mean shift is bounded here by 5 |K| / N (measured |M| < 2 |K| for these nets)
    assert np.all(np.abs(mean - K) < 4 * se + 5 * np.abs(K) / 500), (mean, K, se)
    assert np.all(se > 0)
