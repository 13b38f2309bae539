"""The interpolated (node-layer) full-block path against the exact layer sums (docs/theory.md Sec. 4.9).

The exact path evaluates every layer pair; the interpolated one evaluates the walk tables at
~70 node layers and interpolates the layer sums. Target: 1e-3 relative on V and M (issue 9);
measured deviations are 1e-9..2e-4 (benchmarks/README.md). The error estimate the path reports
(nested coarse nodes) must bound the true deviation.
"""
import numpy as np
import pytest

import resscale as rs

K2 = np.array([[1.0, 0.6], [0.6, 1.3]])
K3 = np.array([[1.0, 0.6, 0.2], [0.6, 1.3, -0.1], [0.2, -0.1, 0.8]])


def _compare(net, K0, tol=1e-3, n_nodes=32, ref_order=None):
    """``ref_order`` (n_r, n_t): raise the exact path's quadrature orders so that its own error
    (larger than the node path's for P >= 3 at the default orders, docs/theory.md Sec. 4.10) stays
    below the interpolation error the comparison is about."""
    kw = {} if ref_order is None else dict(n_r=ref_order[0], n_t=ref_order[1])
    ex = rs.finite_width(net, K0=K0, method="exact", **kw)
    fa = rs.finite_width(net, K0=K0, method="interpolated", n_nodes=n_nodes)
    assert ex.extras["method"] == "exact" and fa.extras["method"] == "interpolated"
    assert len(fa.extras["nodes"]) < net.depth          # really interpolating
    for name, a, b in (("V", ex.covariance, fa.covariance), ("M", ex.mean_shift, fa.mean_shift)):
        scale = np.max(np.abs(a))
        assert scale > 0 and np.all(np.isfinite(b))
        dev = np.max(np.abs(a - b)) / scale
        assert dev < tol, f"{name}: relative deviation {dev:.2e} from the exact path"
        est = fa.extras["interp_error"][name]
        # with a raised-order reference the node path's own default-order quadrature error enters
        # too (measured 1.6e-5 on V, 4.5e-5 on M; benchmarks/README.md "P growth")
        floor = 5e-5 if ref_order is not None else 1e-8
        assert dev <= max(est, floor), f"{name}: error estimate {est:.2e} below the true deviation {dev:.2e}"
    np.testing.assert_allclose(fa.kernel, ex.kernel, rtol=1e-12)


@pytest.mark.parametrize("act, L, alpha, sb2", [("erf", 100, 0.3, 0.1), ("relu", 90, 0.2, 0.0)])
def test_interpolated_matches_exact(act, L, alpha, sb2):
    _compare(rs.ResNet(depth=L, alpha=alpha, activation=act, sigma_b2=sb2), K2)


def test_auto_method_switches_with_depth():
    assert rs.finite_width(rs.ResNet(depth=20), K0=K2, mean_shift=False).extras["method"] == "exact"
    assert rs.finite_width(rs.ResNet(depth=80), K0=K2, mean_shift=False).extras["method"] == "interpolated"
    assert rs.finite_width(rs.ResNet(depth=80, block="reduced"), K0=K2, mean_shift=False).extras["method"] == "exact"
    with pytest.raises(ValueError, match="method"):
        rs.finite_width(rs.ResNet(depth=80, block="reduced"), K0=K2, method="interpolated")
    with pytest.raises(ValueError, match="method"):
        rs.finite_width(rs.ResNet(depth=80), K0=K2, method="fast")


def test_exact_path_refuses_what_does_not_fit_with_an_estimate():
    with pytest.raises(MemoryError, match="GB"):
        rs.finite_width(rs.ResNet(depth=3000), K0=K2, method="exact")


def test_deep_network_runs_and_has_a_continuum_limit():
    """L = 10^4 runs (MemoryError before); at fixed T = alpha^2 L the theory converges (Sec. 4.9)."""
    out = {}
    for L in (1000, 10000):
        fw = rs.finite_width(rs.ResNet(depth=L, alpha=np.sqrt(2.0 / L)), K0=K2)
        assert np.all(np.isfinite(fw.covariance)) and np.all(np.isfinite(fw.mean_shift))
        out[L] = fw
    for attr in ("covariance", "mean_shift"):
        a, b = getattr(out[1000], attr), getattr(out[10000], attr)
        assert np.max(np.abs(a - b)) / np.max(np.abs(b)) < 0.02     # O(1/L) discreteness


@pytest.mark.slow
@pytest.mark.parametrize("act, L, alpha, sb2, K0, n_nodes", [("erf", 300, 0.15, 0.0, K2, 32),
                                                              ("tanh", 30, 0.3, 0.05, K2, 8),
                                                              ("erf", 40, 0.3, 0.1, K3, 10),
                                                              ("relu", 250, 0.1, 0.1, K2, 32)])
def test_interpolated_matches_exact_slow(act, L, alpha, sb2, K0, n_nodes):
    """tanh (quadrature) and P = 3 use the slow generic quadrature on the exact path, so they are
    compared at moderate depth with few nodes (~25 node layers for 30-40 layers)."""
    _compare(rs.ResNet(depth=L, alpha=alpha, activation=act, sigma_b2=sb2), K0, n_nodes=n_nodes,
             ref_order=(24, 16) if K0.shape[0] > 2 else None)


@pytest.mark.slow
def test_analytic_finite_width_optimum_against_numerical_argmax():
    """alpha*(N) = sqrt((T* + t1/N)/L) (docs/theory.md Eq. 6.10) vs the argmax of S_N = S + delta/N.

    Measured (erf, full, c0 = 0.9): relative error -2.2% (L = 100), -0.8% (300), -0.2% (1000), i.e.
    the O(1/L) error of T*; the 1/N shift itself, 0.62% / 0.15% at N = 32 / 128, agrees with the
    numerical shift (0.57% / 0.13% at L = 1000) to ~10%.
    """
    from resscale.optimal_alpha import analytic_alpha_finite_width, optimal_alpha_finite_width
    net = rs.ResNet(depth=1000)
    a_inf = rs.optimal_alpha(net, 0.9).alpha
    a_an_inf = rs.analytic_alpha(net, 0.9)[0]
    for N in (32, 128):
        an = analytic_alpha_finite_width(net, 0.9, 1.0, N)
        num = optimal_alpha_finite_width(net, 0.9, 1.0, N)["alpha"]
        assert abs(an["alpha"] / num - 1) < 10.0 / net.depth
        shift_an, shift_num = an["alpha"] / a_an_inf - 1, num / a_inf - 1
        assert shift_num > 0 and shift_an > 0
        assert abs(shift_an / shift_num - 1) < 0.25, (shift_an, shift_num)


@pytest.mark.slow
def test_interpolated_path_against_simulation_at_depth_1000():
    """The fast path at L = 1000 (where the exact path needs ~9 GB) against the exact finite-N
    dynamics of the full block (scripts/validate_finite_width.py, reference-particle control
    variate for M), N = 32 and 64 extrapolated in 1/N: V and M within 4 SE."""
    from conftest import validate_finite_width
    net = rs.ResNet(depth=1000, alpha=0.1, activation="erf")
    K = np.array([[1.0, 0.5], [0.5, 1.2]])
    fw = rs.finite_width(net, K0=K)
    assert fw.extras["method"] == "interpolated"
    Mx, Mse, Vx, Vse = validate_finite_width().extrapolated_estimates(net, K, fw, (32, 64), 3000, 100)
    assert np.max(Vse) < 0.1 * np.max(np.abs(fw.covariance))      # resolves V to ~10%
    for ix in [(0, 0, 0, 0), (0, 1, 0, 1), (0, 0, 1, 1), (1, 1, 1, 1)]:
        assert abs(fw.covariance[ix] - Vx[ix]) < 4 * Vse[ix], (ix, fw.covariance[ix], Vx[ix], Vse[ix])
    for ix in [(0, 0), (1, 1)]:
        assert abs(fw.mean_shift[ix] - Mx[ix]) < 4 * Mse[ix], (ix, fw.mean_shift, Mx, Mse)


# ---------------------------------------------------------------- quadrature activations: tabulated inner path
def _need_compiled_inner():
    """The tabulated inner path needs numba and no RESSCALE_NO_NUMBA (else the quadrature path runs)."""
    import os
    pytest.importorskip("numba")
    if os.environ.get("RESSCALE_NO_NUMBA"):
        pytest.skip("RESSCALE_NO_NUMBA is set: the finite-width inner expectations use the quadrature")


@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_smoothed_table_inner_expectations_against_gauss_hermite(act):
    """The tabulated smoothed-activation inner expectations (docs/theory.md Sec. 4.10, "Quadrature
    activations on the node path") against a 64 x 64 Gauss-Hermite pass: table accuracy <= 1e-8
    (checked at build time) plus the w rule (< 1e-11), so 2e-8 absolute."""
    _need_compiled_inner()
    from resscale.activations import get_activation
    from resscale.finite_width.smoothed import smoothed_bundle
    from resscale.finite_width.walk_integrals import _gh_bundle
    from resscale.gaussian_quadrature import inner_bundle
    phi = get_activation(act)
    rng = np.random.default_rng(3)
    m = rng.normal(0.0, 1.2, (24, 20, 2))
    A = rng.normal(0.0, 0.3, (24, 2, 2))
    S = A @ np.swapaxes(A, 1, 2)
    S *= np.minimum(1.0, 0.6 / np.max(np.diagonal(S, axis1=1, axis2=2), axis=1))[:, None, None]
    S[:4] *= 0.01                                       # (the 64-point reference loses ~1e-8 at var > 1)
    S[4, 0, 1] = S[4, 1, 0] = 0.0                       # uncorrelated: single w node
    keys = ("pp", "d11", "d20", "d02")
    new = smoothed_bundle(phi, m, S, keys)
    assert new is not None
    ref = _gh_bundle(phi, m, S, keys, n_gh=64)
    for k in keys:
        assert np.max(np.abs(new[k] - ref[k])) < 2e-8, k
    new = smoothed_bundle(phi, m, S, ("sq0", "sq1"))
    ref = inner_bundle(phi, m, S, ("sq0", "sq1"))
    for k in ("sq0", "sq1"):
        assert np.max(np.abs(new[k] - ref[k])) < 2e-8, k


@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_tabulated_inner_path_matches_quadrature_path(act):
    """V and M of the node path with the tabulated inner expectations against the Gauss-Hermite
    quadrature path (RESSCALE_FW_INNER=quadrature), P = 2, small depth (measured at L = 100 / 1000:
    1e-11 (V), 1e-9 (M), benchmarks/README.md); tolerance 1e-6. P >= 3: the shared-grid inner
    columns (:func:`walk_integrals._inner_cols`) on random conditional laws, 2e-8 absolute."""
    _need_compiled_inner()
    from resscale.finite_width.smoothed import inner_mode
    from resscale.finite_width.walk_integrals import _inner_cols
    net = rs.ResNet(depth=24, alpha=0.3, activation=act, sigma_b2=0.05)
    fa = rs.finite_width(net, K0=K2, method="interpolated", n_nodes=8)
    with inner_mode("quadrature"):
        fq = rs.finite_width(net, K0=K2, method="interpolated", n_nodes=8)
    for a, b in ((fa.covariance, fq.covariance), (fa.mean_shift, fq.mean_shift)):
        assert np.max(np.abs(a - b)) / np.max(np.abs(b)) < 1e-6
    rng = np.random.default_rng(5)
    M = rng.normal(0.0, 1.0, (6, 15, 3))
    A = rng.normal(0.0, 0.3, (6, 3, 3))
    S = A @ np.swapaxes(A, 1, 2)
    S *= np.minimum(1.0, 0.4 / np.max(np.diagonal(S, axis1=1, axis2=2), axis=1))[:, None, None]
    rc, sc = np.array([0, 0, 1, 2, 0]), np.array([0, 1, 1, 2, 2])
    new = _inner_cols(net.phi, M, S, rc, sc)
    with inner_mode("quadrature"):
        ref = _inner_cols(net.phi, M, S, rc, sc)
    assert np.max(np.abs(new - ref)) < 2e-8
