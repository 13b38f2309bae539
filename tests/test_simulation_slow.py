"""Heavier statistical validations of the simulation engine (run with: pytest -m slow)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import resscale as rs
from resscale.inputs import two_input_kernel
from resscale.simulation import simulate

pytestmark = pytest.mark.slow


def within(est, ref, se, k=4.0, extra=0.0):
    est, ref, se = map(np.asarray, (est, ref, se))
    assert np.all(se > 0)
    assert np.all(np.abs(est - ref) <= k * se + extra), (est, ref, se)


def _mf_sensitivity(net, c0, e=1e-5):
    def c(cc):
        K = rs.mean_field_kernel(net, K0=two_input_kernel(cc))
        return K[0, 1] / math.sqrt(K[0, 0] * K[1, 1])
    return (c(c0 + e) - c(c0 - e)) / (2 * e)


@pytest.mark.parametrize("act", ["erf", "relu", "tanh", "gelu"])
@pytest.mark.parametrize("block", ["full", "reduced", "feedforward"])
def test_all_layers_follow_mean_field(act, block):
    """Every layer's E[Khat^l] within 4 SE + 4|K^l|/N of the mean-field K^l, N = 1024."""
    sw2 = 2.0 if (block == "feedforward" and act == "relu") else 1.0
    net = rs.ResNet(depth=12, alpha=0.5, sigma_w2=sw2, sigma_b2=0.05, activation=act, block=block)
    K0 = two_input_kernel(0.3, 1.2)
    N = 1024
    r = simulate(net, N, 400, K0=K0, all_layers=True, sensitivity=True, seed=31)
    K = rs.mean_field_kernel(net, K0=K0, all_layers=True)
    within(r.mean(layer=slice(None)), K, r.sem(layer=slice(None)), extra=4 * np.abs(K) / N)
    s, se = r.sensitivity()  # estimator defined for every block / activation
    assert np.isfinite(s) and se > 0


@pytest.mark.parametrize("act, block", [("erf", "full"), ("erf", "reduced"), ("relu", "full"),
                                        ("relu", "reduced")])
@pytest.mark.parametrize("c0", [0.0, 0.8, 1.0])
def test_sensitivity_tends_to_mean_field(act, block, c0):
    net = rs.ResNet(depth=15, alpha=0.4, sigma_w2=1.0, sigma_b2=0.1, activation=act, block=block)
    N = 1024
    r = simulate(net, N, 600, K0=two_input_kernel(c0), sensitivity=True, seed=41)
    s, se = r.sensitivity()
    if c0 < 1.0:
        S = _mf_sensitivity(net, c0)
    else:  # one-sided limit, mean-field c^L(c0) is smooth up to 1
        e = 1e-4
        K1 = rs.mean_field_kernel(net, K0=two_input_kernel(1.0))
        K2 = rs.mean_field_kernel(net, K0=two_input_kernel(1.0 - e))
        K3 = rs.mean_field_kernel(net, K0=two_input_kernel(1.0 - 2 * e))
        c = [K[0, 1] / K[0, 0] for K in (K1, K2, K3)]
        S = (3 * c[0] - 4 * c[1] + c[2]) / (2 * e)
    within(s, S, se, extra=4 * abs(S) / N + 1e-6)


def test_torch_weights_vs_numpy_gram_variance():
    pytest.importorskip("torch")
    net = rs.ResNet(depth=6, alpha=0.7, sigma_w2=1.0, sigma_b2=0.1, activation="tanh", block="full")
    K0 = two_input_kernel(0.5)
    a = simulate(net, 24, 3000, K0=K0, backend="torch", device="cpu", method="weights", seed=1)
    b = simulate(net, 24, 6000, K0=K0, method="gram", seed=2)
    within(a.mean(), b.mean(), np.hypot(a.sem(), b.sem()))
    within(a.cov(), b.cov(), np.hypot(a.cov_sem(), b.cov_sem()))
