"""Tabulated equal-norm pair functions (resscale.tabulated_pairs, issue 9) against the quadrature.

The quadrature (``Activation.pair_equal``) is the reference; the tables must agree with it
at random points (q in [1e-3, 1e3], c over [-1, 1] including +-1 and points near them) and
give the same log S along the two-input recursion, and the recursion must actually use them.
"""
import numpy as np
import pytest

import resscale as rs
from resscale import tabulated_pairs as tp
from resscale.activations import from_callable, get_activation
from resscale.optimal_alpha import analytic_alpha


def _algebraic(u):
    return u / np.sqrt(1.0 + u * u)


@pytest.fixture(scope="module")
def acts():
    return {"tanh": get_activation("tanh"), "gelu": get_activation("gelu"),
            "callable": from_callable(_algebraic, name="algebraic", odd=True)}


def _points(n, seed):
    rng = np.random.default_rng(seed)
    q = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), n))
    m = n // 4
    c = np.concatenate([rng.uniform(-1.0, 1.0, n - 3 * m),
                        1.0 - 10.0 ** rng.uniform(-12, -0.5, m),
                        -1.0 + 10.0 ** rng.uniform(-12, -0.5, m),
                        rng.choice([1.0, -1.0, 0.0], m)])
    return q, q * c, c


# gelu (two table halves) costs a ~4-13 s build, so its cases run with -m slow
@pytest.mark.parametrize("name", ["tanh", pytest.param("gelu", marks=pytest.mark.slow), "callable"])
def test_pair_equal_matches_quadrature(acts, name):
    phi = acts[name]
    T = tp.tabulated(phi)
    assert T is not None, tp.refusal_reason(phi)
    assert T.stats["max_rel_err_A"] < 1e-6 and T.stats["max_err_G_over_g"] < 1e-7
    q, k, c = _points(600, 1)
    G0, A0, g0 = phi.pair_equal(q, k)
    G1, A1, g1 = T.pair_equal(q, k)
    # relative on a half tabulated in log form; gelu's A crosses zero near c = -1 (q ~ 2-3), so its
    # c < 0 half is tabulated linearly: absolute error in units of N = E[phi'^2]
    N = phi.pair_equal(q, q)[1]
    logh = np.where(c >= 0, T._modes[1.0][0], T._modes[-1.0 if -1.0 in T._modes else 1.0][0])
    errA = np.abs(A1 - A0) / np.where(logh, np.abs(A0), N)
    assert np.max(errA) < (3e-8 if np.all(logh) else 1e-7)
    tol = 1e-8 if phi.odd else 5e-8        # measured: tanh 2e-9, odd callable ~1e-9, gelu 3e-8
    assert np.max(np.abs(G1 - G0) / g0) < tol
    assert np.max(np.abs(g1 - g0) / g0) < tol
    # g - G (what drives 1 - c) relatively accurate where the reference itself is (1 - c >= 1e-3)
    far = (c > 0.0) & (c < 1.0 - 1e-3)
    assert np.max(np.abs((g1 - G1) - (g0 - G0))[far] / np.abs(g0 - G0)[far]) < 1e-6
    # exact anchors: G = g at c = 1; G(-c) = -G(c) for odd phi
    one = c == 1.0
    assert np.all(G1[one] == g1[one])
    if phi.odd:
        Gm, Am, _ = T.pair_equal(q, -k)
        assert np.array_equal(Gm, -G1) and np.array_equal(Am, A1)
    # outside the table: the quadrature, counted (gelu: the homogeneous limit, tests/test_meanfield_asymptotic.py)
    n_fb = T.n_fallback
    G2, A2, g2 = T.pair_equal(np.array([1e12, 2.0]), np.array([0.5e12, 1.0]))
    if T.asym is not None:
        from resscale import asymptotic_pairs as ap
        assert T.n_fallback == n_fb
        Gr, Ar, gr = ap.pair_equal(np.array([1e12]), np.array([0.5e12]), T.asym)
        assert G2[0] == Gr[0] and A2[0] == Ar[0] and g2[0] == gr[0]
        return
    assert T.n_fallback == n_fb + 1
    Gr, Ar, gr = phi.pair_equal(np.array([1e12]), np.array([0.5e12]))
    assert G2[0] == Gr[0] and A2[0] == Ar[0] and g2[0] == gr[0]


@pytest.mark.parametrize("name,L", [("tanh", 300), pytest.param("gelu", 100, marks=pytest.mark.slow), ("callable", 200)])
def test_log_sensitivity_matches_quadrature_and_uses_table(acts, name, L):
    phi = acts[name]
    net = rs.ResNet(depth=L, activation=phi)
    grid = np.logspace(-3, 1.5, 12)
    T = tp.tabulated(phi)
    before = T.n_table
    with tp.mode("always"):
        l1 = rs.log_sensitivity(net, 0.9, 1.0, grid, strict=False)
    assert T.n_table - before >= L * grid.size * 0.5      # the tabulated path ran (not vacuous)
    with tp.mode("never"):
        n0 = T.n_table
        l0 = rs.log_sensitivity(net, 0.9, 1.0, grid, strict=False)
        assert T.n_table == n0                           # the reference did not touch the table
    ok = np.isfinite(l0)
    assert ok.sum() >= 8 and np.array_equal(ok, np.isfinite(l1))
    assert np.max(np.abs(l1 - l0)[ok]) < 1e-6


def test_auto_mode_threshold_and_flow(acts, monkeypatch):
    phi = acts["tanh"]
    monkeypatch.delenv("RESSCALE_TABULATED", raising=False)
    T = tp.tabulated(phi)
    with tp.mode("auto"):
        assert tp.for_trajectory(phi, 10) is T           # cached: used whatever the work
        assert tp.for_flow(phi) is T
    fresh = get_activation("tanh")                       # a new object, same functions: same cache entry
    assert fresh is not phi and tp.tabulated(fresh, build=False) is T
    monkeypatch.setenv("RESSCALE_TABULATED", "0")
    assert tp.for_trajectory(phi, 10 ** 9) is phi and tp.for_flow(phi) is phi
    assert tp.for_trajectory(get_activation("erf"), 10 ** 9).name == "erf"   # closed forms untouched
    assert tp.tabulated(get_activation("relu")) is None


def test_analytic_alpha_flow_uses_table(acts):
    phi = acts["tanh"]
    net = rs.ResNet(depth=1000, activation=phi)
    T = tp.tabulated(phi)
    n = T.n_table
    with tp.mode("auto"):
        a1, T1, _ = analytic_alpha(net, 0.9)
    assert T.n_table > n
    with tp.mode("never"):
        a0, T0, _ = analytic_alpha(net, 0.9)
    assert abs(T1 / T0 - 1.0) < 1e-6 and abs(a1 / a0 - 1.0) < 1e-6


# ---------------------------------------------------------------- compiled (numba) table path
def _has_numba():
    import os
    if os.environ.get("RESSCALE_NO_NUMBA"):
        return False
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _has_numba(), reason="numba not installed (or RESSCALE_NO_NUMBA set)")
@pytest.mark.parametrize("block,sb2,q0", [("full", 0.0, 1.0), ("full", 0.3, 1.0), ("reduced", 0.2, 1.0),
                                          ("two_layer", 0.1, 2.0)])
def test_compiled_table_trajectory_matches_numpy_and_quadrature(acts, monkeypatch, block, sb2, q0):
    phi = acts["tanh"]
    T = tp.tabulated(phi)
    assert tp._compiled() is not None
    net = rs.ResNet(depth=150, activation=phi, block=block, sigma_b2=sb2)
    # alpha = 1e4 grows q past the table (1e10) after ~100 layers: that alpha falls back to the NumPy path
    grid = np.concatenate([np.logspace(-3, 1.5, 10), [1e4]])
    monkeypatch.setenv("RESSCALE_NUMBA", "1")
    with tp.mode("always"):
        n_c, n_l = getattr(T, "n_compiled", 0), getattr(T, "n_left", 0)
        l1 = rs.log_sensitivity(net, 0.9, q0, grid, strict=False)
        assert T.n_compiled - n_c == grid.size - 1 and T.n_left - n_l == 1   # compiled ran; one alpha left
        monkeypatch.setenv("RESSCALE_NO_NUMBA", "1")
        l2 = rs.log_sensitivity(net, 0.9, q0, grid, strict=False)
        assert T.n_compiled - n_c == grid.size - 1                      # the NumPy table path ran
        monkeypatch.delenv("RESSCALE_NO_NUMBA")
    with tp.mode("never"):
        l0 = rs.log_sensitivity(net, 0.9, q0, grid, strict=False)
    assert np.all(np.isfinite(l1)) and np.array_equal(np.isfinite(l0), np.isfinite(l1))
    assert np.max(np.abs(l1 - l2)) < 1e-10          # measured ~2e-14
    assert np.max(np.abs(l1 - l0)) < 1e-6           # measured ~2e-9


@pytest.mark.skipif(not _has_numba(), reason="numba not installed (or RESSCALE_NO_NUMBA set)")
def test_compiled_table_start_outside_and_scalar_flow(acts, monkeypatch):
    phi = acts["callable"]
    T = tp.tabulated(phi)
    assert tp._compiled() is not None
    net = rs.ResNet(depth=60, activation=phi)
    grid = np.logspace(-2, 1, 5)
    monkeypatch.setenv("RESSCALE_NUMBA", "1")
    with tp.mode("always"):
        n_l = getattr(T, "n_left", 0)
        l1 = rs.log_sensitivity(net, 0.5, 1e-9, grid, strict=False)   # q0 below the table: all fall back
        assert T.n_left - n_l == grid.size
    with tp.mode("never"):
        l0 = rs.log_sensitivity(net, 0.5, 1e-9, grid, strict=False)
    assert np.max(np.abs(l1 - l0)) < 1e-6
    # one-point calls (the continuum flow) use the compiled evaluator: same values as the NumPy table
    q, k = 3.7, 3.7 * (1.0 - 1e-7)
    G, _, _, A = T.pair(np.float64(q), np.float64(q), np.float64(k))
    G1, A1, g1 = (float(v[0]) for v in T.pair_equal(np.array([q]), np.array([k])))
    assert abs(G - G1) < 1e-14 * g1 and abs(A / A1 - 1.0) < 1e-13
    g, dg = T.diag(np.float64(q))
    g2, dg2 = (float(v[0]) for v in T.diag(np.array([q])))
    assert abs(g / g2 - 1.0) < 1e-14 and abs(dg / dg2 - 1.0) < 1e-11


@pytest.fixture(scope="module")
def small_nonodd():
    """A non-odd table (two halves) on a narrow q range [1e-2, 1e3] (cheap to build): covers the
    compiled path's c < 0 half, G(q, -1)/g and E[phi] columns."""
    phi = from_callable(lambda u: np.tanh(u) + 0.5, name="shifted_tanh")
    mp = pytest.MonkeyPatch()
    mp.setattr(tp, "Q_LO", 1e-2)
    mp.setattr(tp, "Q_HI", 1e3)
    try:
        T = tp.TabulatedActivation.build(phi)
    finally:
        mp.undo()
    return phi, T


def test_small_nonodd_table_matches_quadrature(small_nonodd):
    phi, T = small_nonodd
    assert T.stats["max_rel_err_A"] < 1e-6 and T.stats["max_err_G_over_g"] < 1e-7
    rng = np.random.default_rng(3)
    q = np.exp(rng.uniform(np.log(2e-2), np.log(5e2), 200))
    c = np.concatenate([rng.uniform(-1.0, 1.0, 100), 1.0 - 10.0 ** rng.uniform(-10, -1, 50),
                        -1.0 + 10.0 ** rng.uniform(-10, -1, 50)])
    G0, A0, g0 = phi.pair_equal(q, q * c)
    G1, A1, g1 = T.pair_equal(q, q * c)
    assert np.max(np.abs(A1 - A0) / np.abs(A0)) < 1e-7
    assert np.max(np.abs(G1 - G0) / g0) < 1e-7


@pytest.mark.skipif(not _has_numba(), reason="numba not installed (or RESSCALE_NO_NUMBA set)")
@pytest.mark.parametrize("block", ["full", "reduced", "two_layer"])
def test_compiled_nonodd_trajectory_matches_numpy_table(small_nonodd, block):
    import importlib
    sens = importlib.import_module("resscale.sensitivity")
    phi, T = small_nonodd
    assert tp._compiled() is not None
    net = rs.ResNet(depth=80, activation=phi, block=block, sigma_b2=0.1)
    a = np.logspace(-2, -0.3, 7)
    for c0 in (0.9, -0.6):
        r = T.compiled_trajectory(block, net.sigma_w2, net.sigma_b2, net.depth, c0, 1.0, a)
        assert r is not None and np.all(r["ok"])                  # stays inside [1e-2, 1e3]
        q, k, s, lg = sens._plain_recursion(net, T, c0, 1.0, a)  # the NumPy table path
        np.testing.assert_allclose(r["q"], q, rtol=1e-12)
        np.testing.assert_allclose(r["k"], k, rtol=1e-11, atol=1e-12 * np.max(q))
        np.testing.assert_allclose(r["log_dk"], lg, rtol=1e-11, atol=1e-11)
    # one-point evaluator on both halves (c > 0 and c < 0) against the NumPy table evaluation
    for qq, cc in ((0.37, 0.999), (5.0, -0.8), (40.0, -1.0 + 1e-9), (0.05, 0.0)):
        G, _, _, A = T.pair(np.float64(qq), np.float64(qq), np.float64(qq * cc))
        G1, A1, g1 = (float(v[0]) for v in T.pair_equal(np.array([qq]), np.array([qq * cc])))
        assert abs(G - G1) < 1e-13 * g1 and abs(A / A1 - 1.0) < 1e-12


def test_inline_log_exp_of_the_trajectory_kernel():
    """The branch-free log / exp of the vectorized trajectory kernel (resscale.tabulated_compiled) are
    within 2 ulp of NumPy's (measured 2 ulp, mean 0.2 / 0.4), here as plain Python."""
    from resscale import tabulated_compiled as tc
    rng = np.random.default_rng(3)
    z = np.concatenate([np.exp(rng.uniform(-700, 700, 300)), rng.uniform(0.5, 2.0, 300), [1.0, 2.0, np.sqrt(2.0)]])
    lz = np.array([tc._log_fast_py(float(v)) for v in z])
    ref = np.log(z)
    nz = ref != 0.0
    assert np.all(np.abs(lz - ref)[nz] <= 2.0 * np.spacing(np.abs(ref[nz]))) and lz[~nz].tolist() == [0.0]
    x = np.concatenate([rng.uniform(-700, 700, 300), rng.uniform(-1, 1, 300), [0.0]])
    ex = np.array([tc._exp_fast_py(float(v)) for v in x])
    assert np.all(np.abs(ex - np.exp(x)) <= 2.0 * np.spacing(np.exp(x)))
