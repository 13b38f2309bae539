"""Simulated finite-width optimum (resscale.simulated_optimum, docs/theory.md Sec. 4.6.1)."""
import math

import numpy as np
import pytest

import resscale as rs
from resscale.inputs import two_input_kernel
from resscale.simulated_optimum import (_Moments, crn_chunk, cv_estimate, n_features, poly_functionals,
                                        shift_estimate, simulate_optimum)

NET = rs.ResNet(depth=6, alpha=0.5, sigma_w2=1.0, activation="erf", block="full")


@pytest.mark.parametrize("block,sb2", [("full", 0.0), ("two_layer", 0.1)])
def test_crn_same_draws_as_simulate(block, sb2):
    """Network s at alpha a of the CRN sampler is network s of rs.simulate at alpha a (same seeds)."""
    net = NET.replace(block=block, sigma_b2=sb2)
    alphas = np.array([0.3, 0.5, 0.8])
    o = crn_chunk(net, 12, 0.9, 1.3, alphas, seed=5, start=2, stop=7)
    for j, a in enumerate(alphas):
        r = rs.simulate(net.replace(alpha=float(a)), 12, 7, K0=two_input_kernel(0.9, 1.3), seed=5,
                        sensitivity=True)
        np.testing.assert_allclose(o["Y"][:, j], r.sens_c[2:7], rtol=1e-12, atol=1e-12)
    # the input-layer features (first 6) are the same draws at every alpha; chunking changes nothing
    np.testing.assert_array_equal(o["X"][:, 0, :6], o["X"][:, 2, :6])
    a = crn_chunk(net, 12, 0.9, 1.3, alphas, seed=5, start=2, stop=4)
    b = crn_chunk(net, 12, 0.9, 1.3, alphas, seed=5, start=4, stop=7)
    np.testing.assert_allclose(np.concatenate([a["Y"], b["Y"]]), o["Y"], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(np.concatenate([a["X"], b["X"]]), o["X"], rtol=1e-12, atol=1e-13)
    assert o["X"].shape[-1] == n_features(net)


@pytest.mark.parametrize("feature_set", ["kernel", "rich"])
def test_control_variate_features_have_mean_zero(feature_set):
    """Every martingale / input feature has exact mean zero (tiny MC, 4.5 SE over 100-230
    features), and so has a fixed linear combination of them."""
    net = NET.replace(depth=4, sigma_b2=0.05)
    o = crn_chunk(net, 8, 0.7, 1.0, np.array([0.6, 1.1]), seed=3, start=0, stop=3000, feature_set=feature_set)
    assert o["X"].shape[-1] == n_features(net, feature_set=feature_set)
    X = o["X"].reshape(3000, -1)
    z = X.mean(0) / (X.std(0, ddof=1) / math.sqrt(X.shape[0]))
    assert np.max(np.abs(z)) < 4.5, np.max(np.abs(z))
    w = np.random.default_rng(0).standard_normal(X.shape[1])
    c = X @ w
    assert abs(c.mean()) < 4 * c.std(ddof=1) / math.sqrt(c.size)
    # the features explain a good part of Y's variance (otherwise the CV would be pointless)
    Y = o["Y"][:, 0]
    beta, *_ = np.linalg.lstsq(np.c_[np.ones(3000), X[:, : X.shape[1] // 2]], Y, rcond=None)
    res = Y - np.c_[np.ones(3000), X[:, : X.shape[1] // 2]] @ beta
    assert res.var() < 0.8 * Y.var()


def test_poly_functionals_exact_on_polynomials():
    x = np.linspace(-0.1, 0.1, 9)
    l1, l2 = poly_functionals(x, 4)
    y = 1.0 + 0.3 * x - 2.0 * x ** 2 + 5 * x ** 3 + 7 * x ** 4
    assert abs(l1 @ y - 0.3) < 1e-10 and abs(l2 @ y + 4.0) < 1e-9


def test_shift_estimator_recovers_known_shift():
    """Synthetic smooth curves S_N(alpha) = S_inf + delta/N, noisy per-'network' curves with a
    heavy-tailed smooth noise and a correlated zero-mean feature: the shift is recovered within
    4 SE, the control variate shrinks the SE and keeps the estimate unbiased."""
    rng = np.random.default_rng(1)
    a0, N, n = 0.88, 32.0, 40000
    alphas = a0 * (1 + np.linspace(-0.1, 0.1, 9))
    x = alphas - a0
    S_inf = 1.6 - 0.727 * x ** 2 + 0.3 * x ** 3
    delta = 0.74 + 0.5 * x + 1.7 * x ** 2 - 5 * x ** 3
    SN = S_inf + delta / N
    # exact argmax of S_N: solve S_N'(x) = 0 near 0
    dpoly = np.polyder(np.poly1d([0.3 - 5 / N, -0.727 + 1.7 / N, 0.5 / N, 1.6 + 0.74 / N]))
    roots = dpoly.r.real[np.abs(dpoly.r.imag) < 1e-12]
    true = float(roots[np.argmin(np.abs(roots))])
    l1, l2 = poly_functionals(x, 4)
    z = rng.standard_t(5, size=(n, 3)) * np.array([1.0, 3.0, 5.0])
    noise = z[:, :1] + z[:, 1:2] * x + z[:, 2:3] * x ** 2
    Y = SN + noise
    X = np.c_[z[:, 1] + rng.standard_normal(n), z[:, 0]]  # mean-zero features
    T = np.c_[Y, Y @ l1, Y @ l2]
    mom = _Moments(11, 2)
    mom.add(T, X, np.arange(n))
    corr_b = -float(l1 @ S_inf) + 0.0        # S_inf'(0) = 0
    corr_c = -float(l2 @ S_inf) - 2 * 0.727
    est, cov, r2, D, C, vD, vC, shift, se, bias = shift_estimate(mom, 9, corr_b, corr_c, True)
    assert abs(shift - true) < 4 * se, (shift, true, se)
    est0, _, _, D0, _, vD0, _, shift0, se0, _ = shift_estimate(mom, 9, corr_b, corr_c, False)
    assert abs(shift0 - true) < 4 * se0
    assert se < 0.8 * se0 and r2[9] > 0.3
    # the mean-field-denominator version -D / S_inf''
    assert abs(-D / (-2 * 0.727) - true) < 4 * math.sqrt(vD) / (2 * 0.727) + abs(true) * 0.2
    # a noiseless curve gives the shift to O(shift^2) (Newton step from alpha*_inf)
    mom2 = _Moments(11, 0)
    T2 = np.tile(np.r_[SN, SN @ l1, SN @ l2], (4, 1))
    mom2.add(T2, np.zeros((4, 0)), np.arange(4))
    s2 = shift_estimate(mom2, 9, corr_b, corr_c, False)[7]
    assert abs(s2 - true) < 0.02 * abs(true)


def test_cv_estimate_cross_fitting_unbiased_mean():
    """With features independent of the target, the CV estimate stays within 4 SE of the truth."""
    rng = np.random.default_rng(2)
    n = 5000
    T = rng.standard_normal((n, 2)) + np.array([1.0, -2.0])
    X = rng.standard_normal((n, 20))
    mom = _Moments(2, 20)
    mom.add(T, X, np.arange(n))
    est, cov, _ = cv_estimate(mom)
    assert np.all(np.abs(est - np.array([1.0, -2.0])) < 4 * np.sqrt(np.diag(cov)))


def test_simulate_optimum_runs_and_is_reproducible():
    r1 = simulate_optimum(NET, 8, 0.9, n_networks=64, seed=4, chunk=20)
    r2 = simulate_optimum(NET, 8, 0.9, n_networks=64, seed=4, chunk=64)
    np.testing.assert_allclose(r1.samples, r2.samples, rtol=1e-12, atol=1e-13)
    assert r1.alphas.size == 9 and abs(r1.alphas[4] - r1.alpha_inf) < 1e-15
    assert np.isfinite(r1.shift) and r1.shift_se > 0 and r1.to_dict()["n_networks"] == 64
    with pytest.raises(ValueError):
        simulate_optimum(NET, 8, 1.0, n_networks=8)


@pytest.mark.slow
def test_simulated_S_N_matches_theory():
    """Simulated S_N(alpha) on the CRN grid agrees with sensitivity_finite_width within 4 SE
    (N = 32, L = 10, three alphas around alpha*)."""
    net = rs.ResNet(depth=10, alpha=0.5, sigma_w2=1.0, activation="erf", block="full")
    r = simulate_optimum(net, 32, 0.9, n_networks=8192, seed=12, n_alpha=5, rel=0.2, degree=2)
    idx = [0, 2, 4]
    th = rs.sensitivity_finite_width(net, 0.9, 1.0, width=32, alphas=r.alphas[idx])
    z = (r.S[idx] - th) / r.S_se[idx]
    assert np.all(np.abs(z) < 4), z
    # and the simulation resolves the finite-width correction itself (S_N != S_inf)
    assert np.max(np.abs(r.S - r.S_inf) / r.S_se) > 2.5


@pytest.mark.slow
def test_fig6_data_contents():
    """fig6_data returns what Figure 6 needs (tiny run; the theory at L = 10)."""
    from resscale.simulated_optimum import fig6_data

    d = fig6_data(depth=10, widths=(16,), n_networks=256, n_alpha=5, degree=2)
    w = d["widths"][16]
    for k in ("alphas", "S", "S_se", "S_theory", "shift_sim", "shift_sim_se", "shift_pred", "alpha_star_sim",
              "alpha_star_pred", "networks_to_resolve"):
        assert k in w
    assert len(w["S"]) == len(w["alphas"]) == len(w["S_theory"]) == 5
    assert math.isfinite(w["shift_pred"]) and w["shift_sim_se"] > 0
