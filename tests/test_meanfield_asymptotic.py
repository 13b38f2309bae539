"""Homogeneous-limit continuation of the tabulated pair functions beyond Q_HI (issue 9).

Reference: the quadrature (``Activation.pair_equal``, RESSCALE_TABULATED=0). Error bound
(docs/theory.md Sec. 5.1, resscale/asymptotic_pairs.py): phi = p + r, r localized; relative
error of A ~ |2 int p' r' + int r'^2| / (sqrt(2 pi q) N) for theta <~ q^-1/2 (softplus:
~1.4 / sqrt(q), gelu ~0.2 / sqrt(q); the same absolute, in units of N, at c -> -1), O(1/q) elsewhere;
G off by O(1/q) g. Tolerances below:
A 2 / sqrt(q) (relative, |dA| / N on c < 0), G 1e-9 g, g 1e-11 g, g - G 1e-8 relative (1 - c >= 1e-3;
closer to 1 the quadrature's own g - G loses digits). The softplus with finite-difference
derivatives is compared only up to q = 1e12 (beyond, the reference's phi' by central differences
at |u| ~ 1e6-1e7 is itself off by ~1e-6).
"""
import numpy as np
import pytest
from scipy.special import expit

import resscale as rs
from resscale import asymptotic_pairs as ap
from resscale import tabulated_pairs as tp
from resscale.activations import from_callable, get_activation


def _softplus_exact():
    return from_callable(lambda u: np.logaddexp(0.0, u), d1=expit, d2=lambda u: expit(u) * expit(-u),
                         name="softplus_exact")


def _softplus_fd():
    return from_callable(lambda u: np.logaddexp(0.0, u), name="softplus")


_C = np.array([1.0, 1 - 1e-8, 1 - 1e-6, 1 - 1e-3, 0.9, 0.5, 0.0, -0.5, -0.99, -1 + 1e-6, -1.0])


@pytest.mark.parametrize("make,qmax", [(lambda: get_activation("gelu"), 1e14), (_softplus_exact, 1e14),
                                       (_softplus_fd, 1e12)])
def test_limit_pair_functions_match_quadrature(make, qmax):
    phi = make()
    sl = ap.slopes(phi)
    assert sl == (1.0, 0.0)
    for q0 in (1e10, 1e11, 1e12, 1e14):
        if q0 > qmax:
            continue
        q = np.full(_C.shape, q0)
        k = q * _C
        G0, A0, g0 = phi.pair_equal(q, k)
        G1, A1, g1 = ap.pair_equal(q, k, sl)
        N = A0[0]
        tolA = 2.0 / np.sqrt(q0)
        pos = _C >= 0
        assert np.max(np.abs(A1 - A0)[pos] / A0[pos]) < tolA
        assert np.max(np.abs(A1 - A0)[~pos] / N) < tolA
        assert np.max(np.abs(G1 - G0) / g0) < 1e-9
        assert np.max(np.abs(g1 - g0) / g0) < 1e-11
        far = (_C < 1 - 1e-4) & (_C > -1)
        assert np.max(np.abs((g1 - G1) - (g0 - G0))[far] / np.abs(g0 - G0)[far]) < 1e-8
        assert np.all(G1[0] == g1[0])       # exact anchor at c = 1


def test_limit_closed_forms_relu_and_scalar():
    """slopes (1, 0) is relu exactly: against its closed forms; the scalar form against the arrays."""
    relu = get_activation("relu")
    q = np.array([0.3, 2.0, 1e12])[:, None] * np.ones((1, _C.size))
    k = q * _C[None, :]
    G0, A0, g0 = relu.pair_equal(q, k)
    G1, A1, g1 = ap.pair_equal(q, k, (1.0, 0.0))
    assert np.max(np.abs(G1 - G0) / g0) < 5e-14 and np.max(np.abs(g1 - g0) / g0) < 1e-15   # (measured 1.3e-14, c -> -1)
    assert np.max(np.abs(A1 - A0)) < 1e-7        # relu's closed form: asin, ~sqrt(eps) near c = -1
    sl = (1.3, -0.4)
    a2, b2, b = ap.coefficients(sl)
    for qq, cc in ((3.0, 0.7), (1e11, 1 - 1e-9), (1e11, 0.2), (5.0, -1 + 1e-10)):
        G, A, g = (float(v) for v in ap.pair_equal(qq, qq * cc, sl))
        Gs, As, gs, mu = ap.pair_scalar(qq, qq * cc, a2, b2, b)
        assert abs(Gs - G) <= 1e-15 * g and abs(As - A) <= 1e-15 and gs == g
        assert mu == pytest.approx(float(ap.mean(qq, sl)[0]), rel=1e-15)


@pytest.mark.parametrize("fn,expect", [(lambda u: np.logaddexp(0.0, u), (1.0, 0.0)),
                                       (lambda u: u * np.tanh(u), (1.0, -1.0)),
                                       (lambda u: 2.0 * u + np.exp(-u * u), (2.0, 2.0)),
                                       (lambda u: u ** 3, None), (np.sin, None), (np.tanh, None),
                                       (lambda u: u + np.sin(u), None), (lambda u: np.exp(-u * u), None),
                                       (lambda u: np.logaddexp(0.0, u) + 1.0, None),
                                       (lambda u: u + 1.0 / (1.0 + np.abs(u)), None)])
def test_detect_slopes(fn, expect):
    assert ap.detect_slopes(fn) == expect
    if expect is None:        # through from_callable: not asymptotically linear, no continuation
        assert ap.slopes(from_callable(fn, name="x", kinks=[])) is None


def test_declared_slopes():
    assert ap.slopes(get_activation("gelu")) == (1.0, 0.0)
    assert ap.slopes(get_activation("tanh")) is None
    from resscale.activations import Activation
    phi = get_activation("gelu")
    off = Activation("gelu_off", phi.fn, phi.d1, phi.d2, asymptotic_slopes=False)
    assert ap.slopes(off) is None


@pytest.fixture(scope="module")
def narrow():
    """Tables of the exact-derivative softplus on narrow q ranges (cheap builds): [1e8, 1e10]
    (continuation accepted) and [10, 1e4] (refused: the limit is off by ~1e-2 at q = 1e4)."""
    phi = _softplus_exact()
    out = {}
    mp = pytest.MonkeyPatch()
    try:
        for name, lo, hi in (("ok", 1e8, 1e10), ("low", 1e1, 1e4)):
            mp.setattr(tp, "Q_LO", lo)
            mp.setattr(tp, "Q_HI", hi)
            out[name] = tp.TabulatedActivation.build(phi)
    finally:
        mp.undo()
    return phi, out


def test_table_continuation_numpy_path(narrow):
    phi, tabs = narrow
    T = tabs["ok"]
    info = T.stats["asymptotic"]
    assert T.asym == (1.0, 0.0) and info["used"]
    assert info["junction_err_A_over_N"] < 2e-5 and info["junction_err_G_over_g"] < 1e-7
    q = np.array([2e10, 1e13, 1e300, 5e8, np.inf, 1e5])
    k = q * np.array([0.3, 1 - 1e-9, -0.7, 0.5, 1.0, 0.5])
    n0, f0, a0 = T.n_table, T.n_fallback, T.n_asymptotic
    G, A, g = T.pair_equal(q, k)
    assert T.n_asymptotic - a0 == 3 and T.n_table - n0 == 1 and T.n_fallback - f0 == 1
    Gl, Al, gl = ap.pair_equal(q[:3], k[:3], T.asym)
    assert np.array_equal(G[:3], Gl) and np.array_equal(A[:3], Al) and np.array_equal(g[:3], gl)
    assert np.all(np.isnan([G[4], A[4], g[4]]))                   # non-finite input: NaN, not silently finite
    assert np.all(np.isfinite(G[[0, 1, 2, 3, 5]]))
    Gr, Ar, gr = phi.pair_equal(q[5:], k[5:])                      # below the table: the quadrature
    assert G[5] == Gr[0] and A[5] == Ar[0]
    gd, dgd = T.diag(np.array([3e11, 3e9]))
    assert gd[0] == 0.5 * 3e11 and dgd[0] == 0.5
    assert gd[1] == pytest.approx(float(phi.diag(np.array([3e9]))[0][0]), rel=1e-9)
    mu, dmu = T.mean(np.array([3e11]))
    assert mu[0] == pytest.approx(0.5 * np.sqrt(2 * 3e11 / np.pi), rel=1e-15)
    assert tabs["low"].asym is None and not tabs["low"].stats["asymptotic"]["used"]
    f0 = tabs["low"].n_fallback
    G2, A2, g2 = tabs["low"].pair_equal(np.array([1e6]), np.array([0.5e6]))
    assert tabs["low"].n_fallback == f0 + 1                        # refused: the quadrature as before
    Gr, Ar, gr = phi.pair_equal(np.array([1e6]), np.array([0.5e6]))
    assert G2[0] == Gr[0] and A2[0] == Ar[0]


def _has_numba():
    import os
    if os.environ.get("RESSCALE_NO_NUMBA"):
        return False
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.parametrize("c0", [0.9, 1.0])
def test_log_sensitivity_beyond_table_matches_quadrature(narrow, monkeypatch, c0):
    """Trajectories from q0 = 2e8 that leave the table (alpha >= ~0.4 at L = 100; the largest
    overflow float64): the compiled and NumPy table paths agree, and match the quadrature to
    3e-5 in log S (the bound ~2 (1.4 / sqrt(Q_HI)) at c0 = 1; measured 1.3e-5; ~1e-8 at c0 = 0.9)."""
    import importlib
    sens = importlib.import_module("resscale.sensitivity")
    phi, tabs = narrow
    T = tabs["ok"]
    net = rs.ResNet(depth=100, activation=phi)
    a = np.array([0.05, 0.3, 0.6, 1.0, 2.0, 5.0, 100.0])
    q0 = 2e8
    res = {}
    if _has_numba():
        r = T.compiled_trajectory("full", 1.0, 0.0, 100, c0, q0, a)
        assert r is not None and np.all(r["ok"])                    # no alpha left for the NumPy path
        res["nb"] = r["log_dk"] + np.log(q0) - np.log(r["q"])
    q, k, s, lg = sens._plain_recursion(net, T, c0, q0, a)
    res["np"] = lg + np.log(q0) - np.log(q)
    with tp.mode("never"):
        ref = rs.log_sensitivity(net, c0, q0, a, strict=False)
    big = np.log(q) > np.log(1e10)
    assert big.sum() >= 4
    ok = np.isfinite(ref)
    assert not ok[-1] and ok[:-1].all()                                 # alpha = 100 overflows in both
    for key, l in res.items():
        assert np.array_equal(np.isfinite(l), ok), key
        assert np.max(np.abs(l - ref)[ok]) < (3e-5 if c0 == 1.0 else 1e-6), key
    if "nb" in res:
        assert np.max(np.abs(res["nb"] - res["np"])[ok]) < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gelu", "softplus"])
def test_optimal_alpha_l1000_no_quadrature_fallback(name):
    """The full tables: optimal_alpha at L = 1000 no longer falls back to the quadrature, and
    log S on a grid reaching beyond 1e10 matches the quadrature (L = 200)."""
    phi = get_activation("gelu") if name == "gelu" else _softplus_fd()
    T = tp.tabulated(phi)
    assert T.asym == (1.0, 0.0)
    net = rs.ResNet(depth=1000, activation=phi)
    f0 = T.n_fallback
    with tp.mode("auto"):
        rs.optimal_alpha(net, c0=0.9)
    assert T.n_fallback == f0
    grid = np.logspace(-1, np.log10(0.6), 6)      # q^200 up to ~1e14
    net = rs.ResNet(depth=200, activation=phi)
    with tp.mode("always"):
        l1 = rs.log_sensitivity(net, 0.9, 1.0, grid, strict=False)
    with tp.mode("never"):
        l0 = rs.log_sensitivity(net, 0.9, 1.0, grid, strict=False)
    # (softplus by finite differences: the reference's phi' at q ~ 1e13 is off by ~1e-6 itself)
    assert np.max(np.abs(l1 - l0)) < (1e-6 if name == "gelu" else 1e-5)
