"""Fast mean-field paths (issue 9) against the reference paths they replace.

- erf, full/reduced block: the fused two-input recursion (numba kernel when numba is
  installed, in-place NumPy otherwise, a math-module loop for 1-2 alphas) against the
  generic layer-by-layer recursion: log S and c^L to 1e-10 (measured ~1e-11 at L = 1000).
- Activation.pair_equal (the per-layer quantities of the two-input recursion) against
  pair/diag for every built-in activation and a callable: 1e-13 (closed forms) / exact
  (quadrature: the same calls).
- optimal_alpha (alpha*, S(alpha*)) on the fast path against the reference path.
"""
import importlib
import math

import numpy as np
import pytest

import resscale as rs

sens = importlib.import_module("resscale.sensitivity")
GRID = np.logspace(-4, 2, 200)


def _logS(tr, q0):
    return tr["log_dk"] + np.log(q0) - tr["log_q"]


@pytest.mark.parametrize("block", ["full", "reduced"])
@pytest.mark.parametrize("sb2", [0.0, 0.3])
@pytest.mark.parametrize("c0", [0.9, 1.0, -0.5])
def test_erf_fast_path_equals_reference(block, sb2, c0, monkeypatch):
    net = rs.ResNet(depth=300, activation="erf", block=block, sigma_w2=1.7, sigma_b2=sb2)
    ref = sens._reference_trajectory(net, c0, 1.3, GRID)
    paths = [("default", None)]
    if sens._numba_kernel(force=True) is not None:
        paths.append(("numpy", "numpy"))
    for label, kind in paths:
        if kind == "numpy":
            monkeypatch.setattr(sens, "_nb_erf", None)
        for al in (GRID, GRID[90:92], GRID[100:101]):
            fast = sens._erf_trajectory(net, c0, 1.3, al)
            r = {k: v[np.searchsorted(GRID, al)] for k, v in ref.items()}
            lf, lr = _logS(fast, 1.3), _logS(r, 1.3)
            np.testing.assert_allclose(lf, lr, rtol=1e-10, atol=1e-10, err_msg=label)
            np.testing.assert_allclose(fast["c"], r["c"], rtol=0, atol=1e-12, err_msg=label)
        monkeypatch.undo()


def test_small_q0_keeps_relative_precision():
    net = rs.ResNet(depth=50, activation="erf")
    a = np.array([0.05, 0.5, 3.0])
    fast, ref = sens._erf_trajectory(net, 0.3, 1e-10, a), sens._reference_trajectory(net, 0.3, 1e-10, a)
    np.testing.assert_allclose(fast["log_q"], ref["log_q"], rtol=1e-12)


@pytest.mark.parametrize("name", ["erf", "relu", "linear", "tanh", "gelu", "callable"])
def test_pair_equal_matches_pair_and_diag(name):
    phi = rs.from_callable(lambda u: np.sin(u) + 0.3 * u, name="sinlin") if name == "callable" \
        else rs.get_activation(name)
    q = np.array([1e-3, 0.3, 1.0, 7.0, 1e3])[:, None] * np.ones((1, 4))
    k = q * np.array([-0.9, 0.2, 0.99, 1.0])[None, :]
    G, A, g = phi.pair_equal(q, k)
    R = phi.pair(q, q, k)
    np.testing.assert_allclose(G, R[0], rtol=1e-13, atol=1e-15 * np.max(np.abs(R[0])))
    np.testing.assert_allclose(A, R[3], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g, phi.diag(q)[0], rtol=1e-13)


def test_scalar_erf_pair_matches_array():
    phi = rs.get_activation("erf")
    for args in [(0.3, 0.3, 0.1), (2.0, 5.0, -1.5), (1e-8, 1e-8, 1e-8)]:
        s = phi.pair(*(np.float64(x) for x in args))
        v = phi.pair(*(np.array([x]) for x in args))
        np.testing.assert_allclose(np.array(s, dtype=float), np.array(v)[:, 0], rtol=1e-14)
        assert float(phi.diag(np.float64(args[0]))[0]) == pytest.approx(float(phi.diag(np.array([args[0]]))[0][0]),
                                                                        rel=1e-15)


@pytest.mark.parametrize("block", ["full", "reduced"])
def test_optimal_alpha_fast_equals_reference(block, monkeypatch):
    net = rs.ResNet(depth=200, activation="erf", block=block, sigma_w2=1.3, sigma_b2=0.1)
    fast = rs.optimal_alpha(net, c0=0.9, analytic=False)
    monkeypatch.setattr(sens, "two_input_trajectory", sens._reference_trajectory)
    ref = rs.optimal_alpha(net, c0=0.9, analytic=False)
    assert fast.alpha == pytest.approx(ref.alpha, rel=1e-7)
    assert fast.sensitivity == pytest.approx(ref.sensitivity, rel=1e-10)


@pytest.mark.parametrize("act, block", [("relu", "full"), ("relu", "reduced"), ("tanh", "full"),
                                        ("gelu", "reduced"), ("erf", "feedforward")])
def test_other_paths_unchanged(act, block):
    """Activations/blocks on the generic path: S equals the response-function entry."""
    net = rs.ResNet(depth=6, alpha=0.4, sigma_w2=1.2, sigma_b2=0.05, activation=act, block=block)
    c0, q0 = 0.8, 1.3
    K0 = q0 * np.array([[1, c0], [c0, 1]])
    chi = rs.response_function(net, K0=K0)
    KL = rs.mean_field_kernel(net, K0=K0)
    E = np.array([[0.0, 1.0], [1.0, 0.0]]) * q0
    S_chi = np.einsum("abcd,cd->ab", chi, E)[0, 1] / KL[0, 0]
    assert rs.sensitivity(net, c0, q0) == pytest.approx(S_chi, rel=1e-8)


oa = importlib.import_module("resscale.optimal_alpha")


@pytest.mark.parametrize("kw,c0", [(dict(depth=1000, activation="erf"), 0.9),
                                   (dict(depth=300, activation="erf", block="reduced", sigma_w2=1.3, sigma_b2=0.1), 0.9),
                                   (dict(depth=3, activation="erf"), 0.9),
                                   (dict(depth=200, activation="erf", sigma_b2=0.2), 0.9),
                                   (dict(depth=500, activation="erf"), 0.99)])
def test_refinement_few_trajectories_matches_zoom(kw, c0, monkeypatch):
    """The 5 + 5 + 1-point refinement (optimal_alpha._refine_argmax) against the former 41-point zoom
    passes (_refine_argmax_zoom): alpha* to 1e-7 (measured ~1e-9), S never lower; 11 trajectories."""
    net = rs.ResNet(**kw)
    calls = []
    orig = oa.log_sensitivity

    def counting(*args, **kwargs):
        calls.append(np.size(args[3]))
        return orig(*args, **kwargs)

    monkeypatch.setattr(oa, "log_sensitivity", counting)
    new = rs.optimal_alpha(net, c0=c0, analytic=False)
    n_new = sum(calls) - 200
    monkeypatch.setattr(oa, "_refine_argmax", lambda f, lo, hi, xatol, mid=None, y3=None, n=41:
                        oa._refine_argmax_zoom(f, lo, hi, xatol, n))
    old = rs.optimal_alpha(net, c0=c0, analytic=False)
    assert new.interior and old.interior
    assert new.alpha == pytest.approx(old.alpha, rel=1e-7)
    assert new.sensitivity >= old.sensitivity * (1.0 - 1e-12)
    assert n_new <= 11


def test_refinement_quartic_and_fallback():
    # an exact quartic in log alpha: the maximum to rounding
    x0 = math.log(0.0123)
    f = lambda a: -(np.log(a) - x0) ** 2 * (1.0 + 0.3 * (np.log(a) - x0)) - 0.1 * (np.log(a) - x0) ** 4  # noqa: E731
    g = np.logspace(-4, 2, 200)
    i = int(np.argmax(f(g)))
    a, l = oa._refine_argmax(f, g[i - 1], g[i + 1], 1e-7, mid=g[i], y3=f(g[i - 1:i + 2]))
    assert abs(math.log(a) - x0) < 1e-9
    # a maximum the 5-point passes cannot centre (a kink just outside the first window): the zoom fallback
    k = lambda a: -np.abs(np.log(a) - (np.log(g[i]) + 0.06))   # noqa: E731
    a2, _ = oa._refine_argmax(k, g[i - 1], g[i + 1], 1e-7, mid=g[i], y3=k(g[i - 1:i + 2]))
    assert abs(math.log(a2) - (math.log(g[i]) + 0.06)) < 1e-3
