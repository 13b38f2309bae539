"""Tests of the 1/N finite-width theory (resscale.finite_width, docs/theory.md Sec. 4)."""
import numpy as np
import pytest

import resscale as rs
from conftest import sqrtm_psd
from resscale.finite_width import finite_width, sensitivity_finite_width
from resscale.gaussian_quadrature import bvn_cdf, gaussian_expectation, inner_forms, make_inner

K2 = np.array([[1.0, 0.5], [0.5, 1.0]])


def _simulate(net, K0, N, S, seed):
    """Exact conditional-Gaussian simulation of the full block (Khat^L per network)."""
    rng = np.random.default_rng(seed)
    P = K0.shape[0]
    h = rng.standard_normal((S, N, P)) @ sqrtm_psd(K0).T
    for _ in range(net.depth):
        f = net.phi.fn(h)
        C = net.sigma_w2 * np.matmul(np.swapaxes(f, 1, 2), f) / N + net.sigma_b2
        h = h + net.alpha * np.matmul(rng.standard_normal((S, N, P)), np.swapaxes(sqrtm_psd(C), 1, 2))
    return np.matmul(np.swapaxes(h, 1, 2), h) / N


# ------------------------------------------------------------------ quadrature building blocks
def test_bvn_cdf_matches_scipy():
    from scipy.stats import multivariate_normal
    for h, k, r in [(0.3, -0.5, 0.7), (-1.0, -1.0, -0.9), (0.0, 0.0, 0.5), (2.0, 0.0, -0.3)]:
        ref = multivariate_normal(cov=[[1, r], [r, 1]]).cdf([h, k])
        assert abs(bvn_cdf(h, k, r) - ref) < 1e-6


@pytest.mark.parametrize("act", ["erf", "relu"])
def test_inner_closed_forms_vs_gauss_hermite(act):
    phi = rs.get_activation(act)
    mean, sq, pair = inner_forms(phi)
    x, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / np.sqrt(2 * np.pi)
    m1, m2, v1, v2, c = 0.3, -0.2, 0.5, 0.8, 0.3
    from scipy.integrate import quad
    y1 = m1 + np.sqrt(v1) * x
    dens = lambda y: np.exp(-(y - m1) ** 2 / (2 * v1)) / np.sqrt(2 * np.pi * v1)  # noqa: E731
    ref1 = quad(lambda y: phi.fn(y) * dens(y), -30, 30, points=[0.0], limit=200)[0]
    ref2 = quad(lambda y: phi.fn(y) ** 2 * dens(y), -30, 30, points=[0.0], limit=200)[0]
    assert abs(mean(np.array(m1), np.array(v1)) - ref1) < 1e-8
    assert abs(sq(np.array(m1), np.array(v1)) - ref2) < 1e-8
    r = c / np.sqrt(v1)
    y2 = m2 + r * x[:, None] + np.sqrt(v2 - r * r) * x[None, :]
    ref = np.einsum("i,ij,i,j->", phi.fn(y1), phi.fn(y2), w, w)
    # (200-point GH is itself only ~1e-3 accurate for the relu kink)
    assert abs(pair(*map(np.array, (m1, m2, v1, v2, c))) - ref) < (2e-4 if act == "erf" else 2e-3)


def test_four_point_function_vs_monte_carlo():
    """E[erf x1 erf x2 erf y1 erf y2] for a walk pair, polar/closed-form scheme vs MC."""
    from scipy.special import erf
    Kk = 3.0 * K2
    Km = Kk + 0.5 * np.array([[1.0, 0.2], [0.2, 1.0]])
    S = np.block([[Kk, Kk], [Kk, Km]])
    phi = rs.get_activation("erf")
    val = gaussian_expectation(S[None], 2, lambda u: erf(u[..., 0]) * erf(u[..., 1]), make_inner(phi, "pp"))[0]
    rng = np.random.default_rng(1)
    X = rng.multivariate_normal(np.zeros(4), S, size=400_000)
    v = np.prod(erf(X), 1)
    assert abs(val - v.mean()) < 5 * v.std() / np.sqrt(v.size)


# ------------------------------------------------------------------ exact results
def test_linear_full_block_exact():
    """Linear phi, sb=0: E Khat^L = (1+s)^L K0 exactly => M = 0; V is the Wishart-like closed form."""
    L, a, sw2 = 6, 0.5, 1.3
    net = rs.ResNet(depth=L, alpha=a, sigma_w2=sw2, activation="linear")
    K0 = np.array([[1.0, 0.3], [0.3, 2.0]])
    fw = finite_width(net, K0=K0)
    s = a * a * sw2
    np.testing.assert_allclose(fw.kernel, (1 + s) ** L * K0, rtol=1e-12)
    np.testing.assert_allclose(fw.mean_shift, 0.0, atol=1e-8)
    # linear: h^L_i = sum over the walk; IF = h^L h^L^T + sum_m s (1+s)^{L-1-m} h^m h^m^T
    # => V = sum_{k,m} c_k c_m Cov(h^k h^k^T, h^m h^m^T), Cov = K^min K^min-type Isserlis terms
    Ks = [(1 + s) ** k * K0 for k in range(L + 1)]
    c = [s * (1 + s) ** (L - 1 - m) for m in range(L)] + [1.0]
    V = np.zeros((2, 2, 2, 2))
    for k in range(L + 1):
        for m in range(L + 1):
            Kc = Ks[min(k, m)]
            V += c[k] * c[m] * (np.einsum("ac,bd->abcd", Kc, Kc) + np.einsum("ad,bc->abcd", Kc, Kc))
    np.testing.assert_allclose(fw.covariance, V, rtol=1e-8)


def test_linear_feedforward_closed_form():
    """Feedforward linear: Khat^l = sw2 Khat^{l-1}-driven Wishart chain, V = sum_l sw2^{2(L-l)} 2K K."""
    L, sw2 = 4, 1.5
    net = rs.ResNet(depth=L, sigma_w2=sw2, activation="linear", block="feedforward")
    K0 = np.array([[1.0, 0.3], [0.3, 2.0]])
    fw = finite_width(net, K0=K0)
    KL = sw2 ** L * K0
    iss = np.einsum("ac,bd->abcd", KL, KL) + np.einsum("ad,bc->abcd", KL, KL)
    np.testing.assert_allclose(fw.covariance, (L + 1) * iss, rtol=1e-8)
    np.testing.assert_allclose(fw.mean_shift, 0.0, atol=1e-8)


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("act", ["erf", "relu"])
def test_covariance_symmetric_and_psd(act):
    net = rs.ResNet(depth=6, alpha=0.5, activation=act)
    K0 = np.array([[1.0, 0.4, 0.1], [0.4, 1.2, 0.3], [0.1, 0.3, 0.9]])
    fw = finite_width(net, K0=K0, mean_shift=False)
    V = fw.covariance
    np.testing.assert_allclose(V, V.transpose(1, 0, 2, 3), atol=1e-10)
    np.testing.assert_allclose(V, V.transpose(2, 3, 0, 1), atol=1e-10)
    iu = [(a, b) for a in range(3) for b in range(a, 3)]
    Vm = np.array([[V[a, b, c, d] for (c, d) in iu] for (a, b) in iu])
    assert np.linalg.eigvalsh(Vm).min() > -1e-8 * np.abs(Vm).max()


def test_spec_hazard_independent_closure_is_wrong():
    """SPEC: erf, alpha=0.5, L=20 (q0=1, sw2=1): indep. closure ~32, correct ~43 (MC 43)."""
    net = rs.ResNet(depth=20, alpha=0.5, activation="erf")
    fw = finite_width(net, K0=K2, mean_shift=False)
    assert 41.5 < fw.covariance[0, 0, 0, 0] < 43.5
    assert 31.0 < fw.covariance_independent[0, 0, 0, 0] < 33.5


def test_feedforward_has_no_cross_layer_terms():
    net = rs.ResNet(depth=5, activation="erf", sigma_w2=1.5, block="feedforward")
    fw = finite_width(net, K0=K2, mean_shift=False)
    np.testing.assert_allclose(fw.covariance, fw.covariance_independent, rtol=1e-12)


def test_bad_input():
    net = rs.ResNet(depth=3, alpha=0.5)
    with pytest.raises(ValueError, match="width"):
        finite_width(net, width=0, K0=K2)
    with pytest.raises(ValueError, match="width"):
        finite_width(net, width=2.5, K0=K2)
    with pytest.raises(ValueError, match="K0"):
        finite_width(net, K0=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="width"):
        sensitivity_finite_width(net, 0.5, width=-3)
    with pytest.raises(ValueError, match="c0"):
        sensitivity_finite_width(net, 1.5, width=10)


def test_expected_kernel_properties():
    net = rs.ResNet(depth=3, alpha=0.5)
    fw = finite_width(net, width=50, K0=K2)
    np.testing.assert_allclose(fw.expected_kernel, fw.kernel + fw.mean_shift / 50)
    np.testing.assert_allclose(fw.kernel_covariance, fw.covariance / 50)
    np.testing.assert_allclose(fw.kernel, rs.mean_field_kernel(net, K0=K2))


def test_sensitivity_finite_width_tends_to_mean_field():
    from resscale.sensitivity import sensitivity
    net = rs.ResNet(depth=5, alpha=0.5)
    s_inf = np.atleast_1d(sensitivity(net, 0.5, 1.0, alphas=[0.5]))[0]
    s_big = sensitivity_finite_width(net, 0.5, 1.0, width=10**9)
    s_n = sensitivity_finite_width(net, 0.5, 1.0, width=20)
    assert abs(s_big - s_inf) < 1e-5 * abs(s_inf)
    assert abs(s_n - s_inf) > 1e-6


# ------------------------------------------------------------------ Monte-Carlo (fast, moderate tolerance)
def test_small_network_monte_carlo_variance_and_mean():
    net = rs.ResNet(depth=4, alpha=0.5, activation="erf", sigma_b2=0.1)
    fw = finite_width(net, K0=K2)
    N, S = 32, 40000
    Kh = _simulate(net, K2, N, S, seed=3)
    d = (Kh - Kh.mean(0)).reshape(S, -1)
    Vmc = N * (d.T @ d) / (S - 1)
    np.testing.assert_allclose(Vmc.reshape(2, 2, 2, 2), fw.covariance, rtol=0.06, atol=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("act", ["erf", "relu"])
def test_mean_shift_monte_carlo_control_variate(act):
    """M vs MC at N = 16 with the reference-particle control variate (scripts/validate_finite_width.py)."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
    from validate_finite_width import estimates, simulate_full
    net = rs.ResNet(depth=8, alpha=0.5, activation=act)
    fw = finite_width(net, K0=K2)
    th = dict(Ks=fw.extras["Ks"], A=fw.extras["A"], G=fw.extras["G"])
    for N in (16, 32):
        Kh, Y = simulate_full(net, K2, N, 40000, 11 + N, th)
        M, Mse, V, Vse = estimates(Kh, Y, fw.kernel, N)
        # O(1/N) corrections to the estimator: allow 4 SE + 20% / N * 16
        tol = 4 * Mse + 0.2 * np.abs(fw.mean_shift) * 16 / N + 0.02
        assert np.all(np.abs(M - fw.mean_shift) < tol), (M, fw.mean_shift, Mse)


# ------------------------------------------------------------------ fused P = 2 tables (speed path)
@pytest.mark.parametrize("act", ["erf", "relu"])
def test_fused_tables_match_legacy_quadrature(act):
    """The shared-grid P = 2 tables agree with the separate high-order quadratures."""
    from resscale.finite_width.walk_integrals import _PairIntegrals
    from resscale.kernel_recursion import mean_field_kernel
    net = rs.ResNet(depth=6, alpha=0.7, activation=act)
    Ks = mean_field_kernel(net, K0=K2, all_layers=True)
    fused = _PairIntegrals(net.phi, Ks, n_r=12, n_t=8)
    legacy = _PairIntegrals(net.phi, Ks, n_r=40, n_t=20, fused=False)
    kk, mm = np.triu_indices(6, 1)
    for ab, cd, d in [((0, 1), (0, 1), (0, 0)), ((0, 0), (0, 1), (0, 0)), ((0, 1), (0, 0), (0, 0)),
                      ((0, 1), (0, 1), (1, 1)), ((0, 1), (0, 1), (2, 0)), ((0, 0), (1, 1), (2, 0))]:
        a = fused.cross(kk, mm, ab, cd, d=d)
        b = legacy._cross(kk, mm, ab, cd, "phi", (d[0] + d[1], 0) if cd[0] == cd[1] else d)
        tol = 2e-4 if act == "erf" else 2e-3   # (the legacy relu reference is itself ~1e-3 off here)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.max(np.abs(b)))


def test_fused_path_agrees_with_legacy_end_to_end():
    from resscale.finite_width.walk_integrals import _PairIntegrals
    net = rs.ResNet(depth=12, alpha=0.5, activation="erf", sigma_b2=0.1)
    new = finite_width(net, K0=K2)
    d = _PairIntegrals.__init__.__defaults__
    try:
        _PairIntegrals.__init__.__defaults__ = d[:-1] + (False,)
        old = finite_width(net, K0=K2, n_r=30, n_t=16)
    finally:
        _PairIntegrals.__init__.__defaults__ = d
    np.testing.assert_allclose(new.covariance, old.covariance, rtol=1e-4)
    np.testing.assert_allclose(new.mean_shift, old.mean_shift, rtol=2e-3, atol=1e-4)


def test_split_radial_rules_integrate_moments():
    from resscale.gaussian_quadrature import _outer_points_1d_split
    var = np.array([0.3, 4.0, 1e4])
    u, w = _outer_points_1d_split(var, 12, 3.0 / np.sqrt(np.maximum(var, 1.0)))
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-10)
    np.testing.assert_allclose((w * u ** 2).sum(1), var, rtol=1e-10)
    np.testing.assert_allclose((w * u ** 4).sum(1), 3 * var ** 2, rtol=1e-9)


def test_sensitivity_correction_is_width_independent():
    from resscale.finite_width import sensitivity_correction
    from resscale.sensitivity import sensitivity
    net = rs.ResNet(depth=6, alpha=0.5)
    d = sensitivity_correction(net, 0.7, 1.0)
    s_inf = np.atleast_1d(sensitivity(net, 0.7, 1.0, alphas=[0.5]))[0]
    for N in (16, 64):
        assert abs(sensitivity_finite_width(net, 0.7, 1.0, width=N) - (s_inf + d / N)) < 1e-12
    v = sensitivity_finite_width(net, 0.7, 1.0, width=32, alphas=[0.3, 0.5])
    assert v.shape == (2,) and abs(v[1] - (s_inf + d / 32)) < 1e-12


def test_optimal_alpha_finite_width_small():
    from resscale.optimal_alpha import optimal_alpha_finite_width
    net = rs.ResNet(depth=10)
    r = optimal_alpha_finite_width(net, 0.9, 1.0, width=32, n_points=7)
    assert r["interior"] and abs(r["interp_error"]) < 1e-2 * abs(r["delta"]) + 1e-3
    # S_N at alpha*(N) beats S_N at nearby alphas (exact delta there)
    a = r["alpha"]
    for f in (0.9, 1.1):
        s = sensitivity_finite_width(net, 0.9, 1.0, width=32, alphas=[a * f], n_r=8, n_t=6)[0]
        assert s <= r["sensitivity"] + 1e-6


# ------------------------------------------------------------------ S_N vs simulation (slow)
@pytest.mark.slow
def test_sensitivity_finite_width_vs_simulation():
    """S_N = S_inf + delta/N vs rs.simulate(..., sensitivity=True) (scripts/validate_sensitivity_finite_width.py)."""
    from resscale.finite_width import sensitivity_correction
    from resscale.inputs import two_input_kernel
    from resscale.sensitivity import sensitivity
    net = rs.ResNet(depth=10, alpha=0.5)
    c0 = 0.5
    s_inf = np.atleast_1d(sensitivity(net, c0, 1.0, alphas=[0.5]))[0]
    d = sensitivity_correction(net, c0, 1.0)
    N, S = 16, 60000
    m, se = rs.simulate(net, width=N, n_networks=S, K0=two_input_kernel(c0, 1.0), sensitivity=True,
                        seed=3).sensitivity()
    # the 1/N shift is resolved (> 5 SE) and matched within 3 SE + O(1/N^2) allowance (15% of it)
    assert abs(m - s_inf) > 5 * se
    assert abs(m - (s_inf + d / N)) < 3 * se + 0.15 * abs(d) / N


@pytest.mark.parametrize("act", ["erf", "relu"])
def test_covariance_only_matches_full_call(act):
    net = rs.ResNet(depth=5, alpha=0.5, activation=act)
    a = finite_width(net, K0=K2, mean_shift=False)
    b = finite_width(net, K0=K2)
    np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-12)
    assert a.mean_shift is None  # mean_shift=False: M not computed (issue 12: was an all-NaN array)
