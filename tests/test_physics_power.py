"""Tests with power for every term of the finite-width theory (issue 14).

Each check compares the public API against a truth that does not use the code under test:

* M and V of the full, reduced and feed-forward blocks at depth L = 2, 3 against the
  von Mises reference of tests/_ref_vonmises.py (the exact finite-N structure written as a
  functional of the empirical seed measure; only 2x2 closed-form Gaussian integrals, no
  layer-pair tables, no Psi'', no self-interaction bookkeeping), with tolerances of
  4 standard errors (randomized QMC) plus the stated quadrature accuracy of the theory;
* the finite-width response against central differences of M in K0 (any direction);
* the delta method of S_N against the classical expectation of an (uncentered) sample
  correlation (alpha = 0), and against an independent numerical delta method;
* the simulator (default gram sampler and the weights sampler) against closed forms of the
  linear full block WITH bias, at every width: E[Khat^L] and Var(Khat^1).

Runtime ~15 s on 2 cores. Checked by scripts/mutation_check.py (docs/validation.md).
"""
import math

import numpy as np
import pytest

import resscale as rs
from _ref_vonmises import reference
from resscale.finite_width import finite_width, finite_width_response, sensitivity_correction

K0 = np.array([[1.0, 0.6], [0.6, 1.5]])
# (block, activation, L, alpha, sigma_w2, sigma_b2): small depth (the exact layer sums are used),
# non-trivial bias, alpha large enough that every term of M is a visible fraction of it
CONFIGS = {
    "full-erf-L3": ("full", "erf", 3, 0.8, 1.5, 0.2),
    "full-relu-L3": ("full", "relu", 3, 0.7, 1.5, 0.2),
    "full-erf-L2": ("full", "erf", 2, 1.0, 1.5, 0.2),
    "full-relu-L4": ("full", "relu", 4, 0.8, 1.5, 0.2),
    "reduced-relu-L3": ("reduced", "relu", 3, 0.7, 1.5, 0.2),
    "reduced-relu-L2": ("reduced", "relu", 2, 1.0, 2.0, 0.3),
    "reduced-relu-L4": ("reduced", "relu", 4, 1.0, 1.5, 0.5),
    "reduced-erf-L2": ("reduced", "erf", 2, 0.8, 1.5, 0.2),
    "feedforward-erf-L3": ("feedforward", "erf", 3, 1.0, 1.5, 0.2),
}
# relative accuracy of the theory's quadrature at the default orders (docs/theory.md Sec. 4.7)
QUAD_M, QUAD_V = 1.5e-3, 5e-4
IU = [(0, 0), (0, 1), (1, 1)]


def _net(cfg):
    block, act, L, a, sw2, sb2 = cfg
    return rs.ResNet(depth=L, alpha=a, sigma_w2=sw2, sigma_b2=sb2, activation=act, block=block)


_REF = {}


def _ref(name, log2n=16):
    key = (name, log2n)
    if key not in _REF:
        block, act, L, a, sw2, sb2 = CONFIGS[name]
        _REF[key] = reference(block, act, L, a, sw2, sb2, K0, log2n=log2n, reps=8, seed=7)
    return _REF[key]


def check_against_reference(name, log2n=16, nsig=4.0):
    M, Mse, V, Vse = _ref(name, log2n)
    fw = finite_width(_net(CONFIGS[name]), K0=K0)
    # never vacuous: the reference resolves M and V
    assert np.max(np.abs(M)) > 20 * np.max(Mse), (M, Mse)
    tolM = nsig * Mse + QUAD_M * np.max(np.abs(M))
    errM = np.abs(fw.mean_shift - M)
    assert np.all(errM <= tolM), f"{name}: M theory {fw.mean_shift.ravel()} ref {M.ravel()} +- {Mse.ravel()}"
    tolV = nsig * Vse + QUAD_V * np.max(np.abs(V))
    errV = np.abs(fw.covariance - V)
    assert np.all(errV <= tolV), f"{name}: V theory {fw.covariance.ravel()} ref {V.ravel()} +- {Vse.ravel()}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_M_and_V_against_von_mises_reference(name):
    """Every term of M (curvature, self-interaction, walk cross term, m-K coupling) and of V
    (same-layer, cross-layer, output, alpha^3 t3) at the few-percent level."""
    check_against_reference(name)


def test_reference_is_exact_for_linear_phi_with_bias():
    """Sanity of the reference itself: linear phi with bias has M = 0 and V from the walk."""
    M, Mse, V, Vse = reference("full", "linear", 3, 0.7, 1.3, 0.4, K0, log2n=12, reps=8)
    assert np.all(np.abs(M) < 4 * Mse)
    fw = finite_width(rs.ResNet(depth=3, alpha=0.7, sigma_w2=1.3, sigma_b2=0.4, activation="linear"), K0=K0)
    np.testing.assert_allclose(fw.covariance, V, rtol=4 * np.max(Vse / np.abs(V)) + 1e-3)


# ------------------------------------------------------------------ finite-width response
@pytest.mark.parametrize("name", ["full-erf-L3", "reduced-relu-L2"])
def test_finite_width_response_vs_finite_differences_of_M(name):
    """d E[Khat^L]/dK0 contracted with symmetric directions (diagonal, off-diagonal, mixed)
    against central differences of finite_width(...).mean_shift and of the mean-field K^L."""
    net = _net(CONFIGS[name])
    N = 3
    R = finite_width_response(net, N, K0=K0)
    h = 2e-3
    dirs = [np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0]]),
            np.array([[0.3, -0.7], [-0.7, 0.5]])]
    for D in dirs:
        fp, fm = finite_width(net, K0=K0 + h * D), finite_width(net, K0=K0 - h * D)
        dM = (fp.mean_shift - fm.mean_shift) / (2 * h)
        dK = (fp.kernel - fm.kernel) / (2 * h)
        want = dK + dM / N
        got = np.einsum("abcd,cd->ab", R, D)
        assert np.max(np.abs(dM)) > 0.02 * np.max(np.abs(dK))      # the 1/N part is not negligible
        np.testing.assert_allclose(got, want, atol=2e-3 * np.max(np.abs(dM)) / N + 1e-6 * np.max(np.abs(dK)))


# ------------------------------------------------------------------ finite-width sensitivity
@pytest.mark.parametrize("c0", [0.2, 0.5, 0.8])
def test_sensitivity_correction_alpha0_is_sample_correlation(c0):
    """alpha = 0: Khat^L = Khat^0 is a Wishart matrix, c_hat the uncentered sample correlation of
    N Gaussian pairs with E c_hat = c0 - c0 (1 - c0^2) / (2N) + O(1/N^2) (classical), so
    delta = d/dc0 [-c0 (1 - c0^2) / 2] = -(1 - 3 c0^2) / 2: the 1/2 Hess c : V term alone."""
    net = rs.ResNet(depth=2, alpha=0.0, activation="erf")
    d = sensitivity_correction(net, c0, q0=1.3)
    assert abs(d - (-(1 - 3 * c0 ** 2) / 2)) < 1e-5


def _c_of(K):
    return K[0, 1] / math.sqrt(K[0, 0] * K[1, 1])


def _delta_numeric(fw, h=1e-3):
    """grad c . M + 1/2 Hess c : V with grad and Hessian of c(K) by central differences over the
    three free entries of a symmetric 2x2 K (independent of resscale's closed-form derivatives)."""
    K, M, V = fw.kernel, fw.mean_shift, fw.covariance
    basis = []
    for a, b in IU:
        E = np.zeros((2, 2))
        E[a, b] = E[b, a] = 1.0
        basis.append(E)
    sc = h * np.max(np.diag(K))
    g = np.array([(_c_of(K + sc * E) - _c_of(K - sc * E)) / (2 * sc) for E in basis])
    H = np.empty((3, 3))
    for i, Ei in enumerate(basis):
        for j, Ej in enumerate(basis):
            H[i, j] = (_c_of(K + sc * (Ei + Ej)) - _c_of(K + sc * (Ei - Ej)) - _c_of(K - sc * (Ei - Ej))
                       + _c_of(K - sc * (Ei + Ej))) / (4 * sc * sc)
    m = np.array([M[a, b] for a, b in IU])
    C = np.array([[V[a, b, c, d] for c, d in IU] for a, b in IU])
    return g @ m, 0.5 * np.sum(H * C)


@pytest.mark.parametrize("block,act", [("full", "erf"), ("reduced", "relu")])
def test_sensitivity_correction_vs_independent_delta_method(block, act):
    """delta = d/dc0 [grad c . M + 1/2 Hess c : V] recomputed with numerical derivatives of c and a
    central difference in c0 (both parts must be a visible fraction of delta)."""
    net = rs.ResNet(depth=3, alpha=0.8, sigma_w2=1.5, sigma_b2=0.2, activation=act, block=block)
    c0, q0, dc = 0.5, 1.2, 2e-3
    lin, quad = [], []
    for c in (c0 - dc, c0 + dc):
        fw = finite_width(net, K0=q0 * np.array([[1.0, c], [c, 1.0]]))
        a, b = _delta_numeric(fw)
        lin.append(a)
        quad.append(b)
    dlin, dquad = (lin[1] - lin[0]) / (2 * dc), (quad[1] - quad[0]) / (2 * dc)
    want = dlin + dquad
    got = sensitivity_correction(net, c0, q0=q0)
    # both terms are tested: 10% of the smaller one is > 5x the tolerance below
    assert min(abs(dlin), abs(dquad)) > 0.05 * (abs(dlin) + abs(dquad))
    assert abs(got - want) < 1e-3 * (abs(dlin) + abs(dquad))


# ------------------------------------------------------------------ simulator identities with bias
def _linear_bias_mean(K0_, L, a, sw2, sb2):
    """E[Khat^l] = Khat^{l-1}-linear: E Khat^l = (1+s) E Khat^{l-1} + alpha^2 sb2 11^T, exact at every N."""
    s = a * a * sw2
    K = K0_.copy()
    for _ in range(L):
        K = (1 + s) * K + a * a * sb2
    return K


@pytest.mark.parametrize("method", ["gram", "weights"])
def test_simulator_linear_with_bias_mean_exact(method):
    """E[Khat^L] of the linear full block with bias at width 6 (exact at every width): catches a
    10% change of the weight or of the bias variance of either sampler (4 SE)."""
    a, sw2, sb2, L, N = 1.0, 1.0, 1.0, 2, 6
    net = rs.ResNet(depth=L, alpha=a, sigma_w2=sw2, sigma_b2=sb2, activation="linear")
    K0_ = 0.5 * np.array([[1.0, 0.3], [0.3, 1.0]])
    S = 40000
    res = rs.simulate(net, width=N, n_networks=S, K0=K0_, seed=11, method=method)
    want = _linear_bias_mean(K0_, L, a, sw2, sb2)
    m, se = res.mean(), res.sem()
    assert np.all(np.abs(m - want) < 4 * se), (m, want, se)
    # power: a 10% change of sb2 or sw2 moves some entry by > 8 SE
    for da in (dict(sb2=1.1 * sb2), dict(sw2=1.1 * sw2)):
        alt = _linear_bias_mean(K0_, L, a, da.get("sw2", sw2), da.get("sb2", sb2))
        assert np.max(np.abs(alt - want) / se) > 8


def _linear_bias_var1(k0, N, a, sw2, sb2):
    """Var(Khat^1), P = 1, linear full block with bias, width N (exact): given h^0 the N
    increments are i.i.d. N(0, c), c = sw2 Khat^0 + sb2, Khat^0 ~ k0 chi2_N / N."""
    s = a * a * sw2
    EK2 = k0 * k0 * (1 + 2 / N)
    E_Kc = sw2 * EK2 + sb2 * k0
    E_c2 = sw2 * sw2 * EK2 + 2 * sw2 * sb2 * k0 + sb2 * sb2
    return (1 + s) ** 2 * 2 * k0 * k0 / N + (4 * a * a * E_Kc + 2 * a ** 4 * E_c2) / N


@pytest.mark.parametrize("method", ["gram", "weights"])
def test_simulator_linear_with_bias_variance_exact(method):
    a, sw2, sb2, N, k0 = 1.0, 0.3, 1.0, 5, 0.5
    net = rs.ResNet(depth=1, alpha=a, sigma_w2=sw2, sigma_b2=sb2, activation="linear")
    res = rs.simulate(net, width=N, n_networks=100000, K0=np.array([[k0]]), seed=5, method=method)
    x = res.kernels[:, 0, 0]
    mean_want = (1 + a * a * sw2) * k0 + a * a * sb2
    var_want = _linear_bias_var1(k0, N, a, sw2, sb2)
    d = x - mean_want
    v = d * d                       # unbiased for Var with the exact mean
    se = v.std(ddof=1) / math.sqrt(v.size)
    assert abs(v.mean() - var_want) < 4 * se, (v.mean(), var_want, se)
    alt = _linear_bias_var1(k0, N, a, sw2, 1.1 * sb2)
    assert abs(alt - var_want) > 8 * se   # power against a 10% bias-variance change
