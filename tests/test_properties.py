"""Hypothesis property tests: symmetry/PSD of K, symmetry of chi, S -> 1 as alpha -> 0."""
import numpy as np
from hypothesis import given, settings, strategies as st

import resscale as rs

acts = st.sampled_from(["erf", "relu", "linear", "tanh"])
blocks = st.sampled_from(["full", "reduced", "feedforward"])
pos = st.floats(0.05, 3.0)


@settings(max_examples=30, deadline=None)
@given(activation=acts, block=blocks, sw2=pos, sb2=st.floats(0.0, 1.0), alpha=st.floats(0.0, 2.0),
       depth=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_kernel_symmetric_psd(activation, block, sw2, sb2, alpha, depth, seed):
    X = np.random.default_rng(seed).normal(size=(4, 3))
    net = rs.ResNet(depth=depth, alpha=alpha, sigma_w2=sw2, sigma_b2=sb2, activation=activation, block=block)
    K = rs.mean_field_kernel(net, X=X)
    assert np.all(np.isfinite(K))
    np.testing.assert_allclose(K, K.T, rtol=0, atol=1e-12 * np.abs(K).max())
    assert np.linalg.eigvalsh(K).min() >= -1e-9 * np.abs(K).max()


@settings(max_examples=25, deadline=None)
@given(activation=st.sampled_from(["erf", "relu", "linear"]), block=blocks, sw2=pos, alpha=st.floats(0.0, 1.5),
       depth=st.integers(1, 10), seed=st.integers(0, 2**31 - 1))
def test_chi_symmetric(activation, block, sw2, alpha, depth, seed):
    X = np.random.default_rng(seed).normal(size=(3, 4))
    net = rs.ResNet(depth=depth, alpha=alpha, sigma_w2=sw2, activation=activation, block=block)
    chi = rs.response_function(net, X=X)
    scale = np.abs(chi).max()
    np.testing.assert_allclose(chi, chi.transpose(0, 1, 3, 2), atol=1e-12 * scale)
    np.testing.assert_allclose(chi, chi.transpose(1, 0, 2, 3), atol=1e-12 * scale)


@settings(max_examples=40, deadline=None)
@given(activation=acts, block=st.sampled_from(["full", "reduced"]), sw2=pos, c0=st.floats(-0.99, 1.0),
       q0=st.floats(0.1, 5.0), depth=st.integers(1, 60))
def test_sensitivity_to_one_as_alpha_to_zero(activation, block, sw2, c0, q0, depth):
    net = rs.ResNet(depth=depth, sigma_w2=sw2, activation=activation, block=block)
    S = rs.sensitivity(net, c0, q0, alphas=[0.0, 1e-6])
    assert S[0] == 1.0
    assert abs(S[1] - 1.0) < 1e-6
