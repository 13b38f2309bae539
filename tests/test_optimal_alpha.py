"""Optimal alpha: argmax is a true maximum, analytic expression within its stated validity."""
import math
import warnings

import numpy as np
import pytest

import resscale as rs


@pytest.mark.parametrize("block", ["full", "reduced"])
def test_numerical_argmax_is_a_maximum(block):
    net = rs.ResNet(depth=200, block=block)
    res = rs.optimal_alpha(net, 0.9)
    assert res.interior
    S = rs.sensitivity(net, 0.9, alphas=res.alpha * np.array([0.99, 1.0, 1.01]))
    assert S[1] >= S[0] and S[1] >= S[2]
    assert res.sensitivity == pytest.approx(S[1], rel=1e-12)
    assert res.sensitivity > 1.0
    # the scan grid itself never beats the refined optimum
    assert res.sensitivity >= res.sensitivities.max() - 1e-12


# Validity of alpha_analytic = sqrt(T*/L) (docs/theory.md Sec. 6.2): the relative error is
# C/L + O(1/L^2) with |C| <= 10 over this grid (measured C from -2.2 to -9.0).
GRID = [("full", 0.25, 0.9, 0.0), ("full", 1.0, 0.9, 0.0), ("full", 4.0, 0.99, 0.1), ("full", 16.0, 0.9, 0.1),
        ("reduced", 0.25, 0.9, 0.0), ("reduced", 1.0, 0.99, 0.1), ("reduced", 16.0, 0.99, 0.0),
        ("full", 0.25, 0.99, 0.1)]


@pytest.mark.parametrize("block, sw2, c0, sb2", GRID)
def test_analytic_alpha_error_is_order_one_over_L(block, sw2, c0, sb2):
    errs = {}
    for L in (100, 1000):
        res = rs.optimal_alpha(rs.ResNet(depth=L, sigma_w2=sw2, sigma_b2=sb2, block=block), c0)
        assert res.interior and math.isfinite(res.alpha_analytic)
        errs[L] = res.alpha_analytic / res.alpha - 1.0
        assert abs(errs[L]) <= 10.0 / L
    # O(1/L) scaling: L * error approaches a constant
    assert abs(1000 * errs[1000] - 100 * errs[100]) < 0.15 * abs(1000 * errs[1000]) + 0.05


def test_alpha_star_scales_like_one_over_sqrt_L():
    a = [rs.optimal_alpha(rs.ResNet(depth=L), 0.9).alpha for L in (300, 3000)]
    assert math.log(a[0] / a[1]) / math.log(10) == pytest.approx(0.5, abs=0.01)


def test_full_block_alpha_star_times_sigma_w_is_universal():
    # full block, sigma_b2 = 0: the continuum flow depends on sigma_w2 T only (Eq. 6.5)
    T = [rs.analytic_alpha(rs.ResNet(depth=100, sigma_w2=s), 0.9)[1] * s for s in (0.25, 1.0, 16.0)]
    np.testing.assert_allclose(T, T[0], rtol=1e-6)


def test_no_interior_maximum_is_reported():
    net = rs.ResNet(depth=50, activation="relu")
    with pytest.warns(rs.NoInteriorMaximumWarning, match="no interior maximum"):
        res = rs.optimal_alpha(net, 0.9)
    assert not res.interior and math.isnan(res.alpha) and "no interior maximum" in res.message
    assert math.isnan(res.alpha_analytic) and res.analytic_note
    with pytest.warns(rs.NoInteriorMaximumWarning, match="constant"):
        rs.optimal_alpha(net, 1.0)  # relu, c0 = 1: S = 1 exactly


def test_reduced_block_non_odd_activation_has_no_analytic_value():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rs.NoInteriorMaximumWarning)
        res = rs.optimal_alpha(rs.ResNet(depth=50, activation="relu", block="reduced"), 0.9)
    assert math.isnan(res.alpha_analytic) and "zero-mean" in res.analytic_note


def test_finite_width_optimum_maximises_S_N():
    from resscale.finite_width import sensitivity_finite_width

    net = rs.ResNet(depth=20)
    res = rs.optimal_alpha(net, 0.9, width=64)
    assert res.interior and res.width == 64
    S = sensitivity_finite_width(net, 0.9, 1.0, width=64, alphas=res.alpha * np.array([0.97, 1.0, 1.03]))
    assert S[1] >= S[0] and S[1] >= S[2]
    assert res.sensitivity == pytest.approx(S[1], rel=1e-3)  # spline of delta vs exact delta
    # a 1/N correction: alpha*(N) stays within a few percent of the mean-field optimum
    assert abs(res.alpha / rs.optimal_alpha(net, 0.9).alpha - 1) < 0.05
    with pytest.raises(ValueError, match="width"):
        rs.optimal_alpha(net, 0.9, width=0)


def test_optimal_alpha_width_returns_the_analytic_finite_width_value():
    """optimal_alpha(width=N).alpha_analytic is sqrt(T*_N / L) with T*_N = T* + t1/N (Eq. 6.10)."""
    import math

    import resscale as rs
    net = rs.ResNet(depth=40)
    r = rs.optimal_alpha(net, 0.9, width=32)
    T_inf = rs.analytic_alpha(net, 0.9)[1]
    assert r.T_star != T_inf and math.isclose(r.alpha_analytic, math.sqrt(r.T_star / 40), rel_tol=1e-12)
    assert "t1" in r.analytic_note


def test_finite_width_shift_follows_the_slope_of_delta():
    """alpha*(N) - alpha*_inf = -S_N'(alpha*_inf) / S_N'' to leading order in the (small) shift; the
    slope of S_N = S + delta/N at alpha*_inf comes from an independent central difference of the
    exact delta (step 1% of alpha*: truncation ~3% of the slope here). erf, full, L = 30, c0 = 0.9,
    N = 32: the shift is +4.8e-4 (the earlier 7-node spline gave the wrong sign, -6.9e-4)."""
    from resscale.finite_width.sensitivity import sensitivity_correction
    from resscale.optimal_alpha import optimal_alpha_finite_width

    net = rs.ResNet(depth=30)
    N, c0 = 32, 0.9
    a0 = rs.optimal_alpha(net, c0=c0).alpha
    r = optimal_alpha_finite_width(net, c0, 1.0, N, alpha_inf=a0)
    h = 0.01 * a0
    al = np.array([a0 - h, a0, a0 + h])
    SN = np.asarray(rs.sensitivity(net, c0, 1.0, alphas=al), float) \
        + np.asarray(sensitivity_correction(net, c0, 1.0, alphas=al), float) / N
    slope = (SN[2] - SN[0]) / (2 * h)
    curv = (SN[2] - 2 * SN[1] + SN[0]) / h ** 2
    expected = -slope / curv
    assert r["method"] == "local" and expected > 0
    assert abs((r["alpha"] - a0) - expected) < 0.1 * abs(expected), (r["alpha"] - a0, expected)
