"""Tests of the reduced-block 1/N theory (resscale.finite_width.reduced, docs/theory.md Sec. 4.8)."""
import numpy as np
import pytest

import resscale as rs
from conftest import sqrtm_psd
from resscale.finite_width import finite_width
from resscale.finite_width.reduced import reduced_block_theory

K2 = np.array([[1.0, 0.5], [0.5, 1.2]])
K3 = np.array([[1.0, 0.4, 0.1], [0.4, 1.2, 0.3], [0.1, 0.3, 0.9]])


def _simulate(net, K0, N, S, seed):
    """Exact conditional-Gaussian simulation of the reduced block: Khat^L and mhat^L per network."""
    rng = np.random.default_rng(seed)
    P = K0.shape[0]
    h = rng.standard_normal((S, N, P)) @ sqrtm_psd(K0).T
    for _ in range(net.depth):
        Kh = np.matmul(np.swapaxes(h, 1, 2), h) / N
        C = net.sigma_w2 * Kh + net.sigma_b2
        z = np.matmul(rng.standard_normal((S, N, P)), np.swapaxes(sqrtm_psd(C), 1, 2))
        h = h + net.alpha * net.phi.fn(z)
    return np.matmul(np.swapaxes(h, 1, 2), h) / N, h.mean(1)


def _net(act, **kw):
    base = dict(depth=6, alpha=0.5, sigma_w2=1.0, sigma_b2=0.0, activation=act, block="reduced")
    base.update(kw)
    return rs.ResNet(**base)


# ------------------------------------------------------------------ exact identities
@pytest.mark.parametrize("sb2", [0.0, 0.3])
def test_linear_reduced_equals_full(sb2):
    """phi linear: h + alpha phi(W h + b) == h + alpha (W phi(h) + b): same law, same M and V."""
    nr = _net("linear", alpha=0.4, sigma_w2=1.3, sigma_b2=sb2)
    a = finite_width(nr, K0=K3)
    b = finite_width(nr.replace(block="full"), K0=K3)
    assert np.allclose(a.kernel, b.kernel, rtol=1e-12)
    assert np.allclose(a.covariance, b.covariance, rtol=1e-6, atol=1e-8)
    assert np.allclose(a.mean_shift, 0.0, atol=1e-9) and np.allclose(b.mean_shift, 0.0, atol=1e-6)


def test_linear_closed_form():
    """Linear, sb2 = 0: Khat^l = (1+s) Khat^{l-1} + noise; V by hand for P = 1."""
    L, a, sw2, k0 = 5, 0.3, 1.5, 0.7
    net = _net("linear", depth=L, alpha=a, sigma_w2=sw2)
    V = finite_width(net, K0=np.array([[k0]])).covariance[0, 0, 0, 0]
    s = a * a * sw2
    var, k = 2 * k0 ** 2, k0
    for _ in range(L):
        # Q = N Var(alpha (2 h z) + alpha^2 (z^2 - Z)) with z ~ N(0, sw2 k): 4 a^2 k Z + 2 a^4 Z^2
        Z = sw2 * k
        var = (1 + s) ** 2 * var + 4 * a * a * k * Z + 2 * a ** 4 * Z * Z
        k = (1 + s) * k
    assert abs(V - var) < 1e-9 * var


def test_alpha_zero():
    """alpha = 0: Khat^L = Khat^0 (Gaussian layer): V = K K + K K, M = 0."""
    for net in (_net("relu", alpha=0.0), _net("erf", alpha=0.0, depth=1)):
        fw = finite_width(net, K0=K2)
        Vg = np.einsum("ac,bd->abcd", K2, K2) + np.einsum("ad,bc->abcd", K2, K2)
        assert np.allclose(fw.covariance, Vg, atol=1e-12)
        assert np.allclose(fw.mean_shift, 0.0, atol=1e-12)
        assert np.allclose(fw.kernel, K2)


def test_small_alpha_expansion():
    """Order alpha^2 by hand (erf, odd: no mean channel). Khat^L = Khat^0 + alpha sum_l xi_l
    + alpha^2 sum_l G(sw2 Khat^0 + sb2) + O(alpha^3):
      V = V0 + alpha^2 L [4-term K0 x C0 noise + sw2 (G' V0 + V0 G'^T)],
      M = alpha^2 L sw2^2 / 2  G'' : V0;   relu: both corrections scale as alpha^2 too."""
    from resscale.finite_width.linalg import _hess_G, _jac_G
    L, sw2, sb2, al = 6, 1.3, 0.1, 1e-3
    net = _net("erf", depth=L, sigma_w2=sw2, sigma_b2=sb2, alpha=al)
    fw = finite_width(net, K0=K2)
    V0 = np.einsum("ac,bd->abcd", K2, K2) + np.einsum("ad,bc->abcd", K2, K2)
    Z = sw2 * K2 + sb2
    G, JG = _jac_G(net.phi, Z)
    t1 = (np.einsum("ac,bd->abcd", K2, G) + np.einsum("ad,bc->abcd", K2, G)
          + np.einsum("bc,ad->abcd", K2, G) + np.einsum("bd,ac->abcd", K2, G))
    V0f = V0.reshape(4, 4)
    dV = t1 + sw2 * (JG @ V0f + V0f @ JG.T).reshape(2, 2, 2, 2)
    assert np.allclose((fw.covariance - V0) / (al * al * L), dV, rtol=1e-2, atol=1e-3)
    M2 = 0.5 * sw2 ** 2 * np.einsum("gef,ef->g", _hess_G(net.phi, Z), V0f).reshape(2, 2)
    assert np.allclose(fw.mean_shift / (al * al * L), M2, rtol=1e-2, atol=1e-4)
    r = [finite_width(_net("relu", alpha=a), K0=K2) for a in (0.0, 1e-3, 2e-3)]
    ratio = (r[2].covariance - r[0].covariance)[0, 0, 0, 0] / (r[1].covariance - r[0].covariance)[0, 0, 0, 0]
    assert abs(ratio - 4.0) < 0.01
    assert np.allclose(r[2].mean_shift / r[1].mean_shift, 4.0, rtol=1e-2)


def test_symmetries_and_shapes():
    fw = finite_width(_net("relu"), K0=K3, width=32)
    V, M = fw.covariance, fw.mean_shift
    assert V.shape == (3, 3, 3, 3) and M.shape == (3, 3)
    assert np.allclose(V, V.transpose(1, 0, 2, 3)) and np.allclose(V, V.transpose(2, 3, 0, 1))
    assert np.allclose(M, M.T)
    # V is a covariance: PSD on symmetric matrices
    ev = np.linalg.eigvalsh(V.reshape(9, 9))
    assert ev.min() > -1e-8 * ev.max()
    assert np.all(np.isnan(fw.covariance_independent))
    assert np.allclose(fw.expected_kernel, fw.kernel + M / 32)


def test_odd_phi_has_no_mean_channel():
    out = reduced_block_theory(_net("erf"), K2)
    assert np.allclose(out["ms"], 0.0) and np.allclose(out["M_mean"], 0.0)
    P2 = 4
    assert np.allclose(out["Sigma"][:P2, P2:], 0.0)


def test_quadrature_activation_user_callable():
    """Quadrature path (non-odd, no closed forms): gelu built in vs gelu as a user callable
    (finite-difference derivatives). (A kinked callable such as relu passed via from_callable
    loses phi'' = delta, hence mu'; use the built-in relu.)"""
    from scipy.special import erf
    gq = rs.from_callable(lambda u: 0.5 * u * (1 + erf(u / np.sqrt(2))), name="gelu_q")
    a = finite_width(_net("gelu", depth=4), K0=K2)
    b = finite_width(_net(gq, depth=4), K0=K2)
    assert np.allclose(a.covariance, b.covariance, rtol=1e-4)
    assert np.allclose(a.mean_shift, b.mean_shift, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("act", ["erf", "relu", "gelu"])
def test_monte_carlo_quick(act):
    """A fast (few-second) statistical check: N = 32, 6000 networks, loose 5-sigma bounds."""
    net = _net(act, depth=4, alpha=0.5)
    fw = finite_width(net, K0=K2)
    N, S = 32, 6000
    Kh, mh = _simulate(net, K2, N, S, seed=7)
    d = Kh - Kh.mean(0)
    Vmc = N * np.einsum("sab,scd->abcd", d, d) / (S - 1)
    for ix in [(0, 0, 0, 0), (0, 1, 0, 1), (0, 0, 1, 1)]:
        # O(1/N) bias + sampling error of a fourth moment (~ sqrt(2/S) x kurtosis factor)
        assert abs(Vmc[ix] - fw.covariance[ix]) < 0.12 * fw.covariance[0, 0, 0, 0], ix


# ------------------------------------------------------------------ slow statistical validation
@pytest.mark.slow
@pytest.mark.parametrize("act", ["erf", "relu"])
def test_monte_carlo_extrapolated(act):
    """V and M vs simulation at N = 16, 32, 64, extrapolated in 1/N, with control variates
    (the validation script's estimator); |dev| < 4 SE."""
    from conftest import validate_finite_width
    net = _net(act, depth=8, alpha=0.5, sigma_b2=0.05)
    fw = finite_width(net, K0=K2)
    Mx, Mse, Vx, Vse = validate_finite_width().extrapolated_estimates(net, K2, fw, (16, 32, 64), 40000, 11)
    for ix in [(0, 0, 0, 0), (0, 1, 0, 1), (0, 0, 1, 1)]:
        assert abs(fw.covariance[ix] - Vx[ix]) < 4 * Vse[ix], ix
    for ix in [(0, 0), (0, 1), (1, 1)]:
        assert abs(fw.mean_shift[ix] - Mx[ix]) < 4 * Mse[ix], ix


@pytest.mark.slow
def test_real_weights_match_conditional_simulator():
    """The conditional-Gaussian simulator has the law of the network with drawn weights:
    mean and variance of Khat^L from rs-style weight draws (tests/conftest) vs theory at N = 32."""
    from conftest import simulate_inline
    net = _net("relu", depth=4, alpha=0.5)
    fw = finite_width(net, K0=K2)
    N, S = 32, 3000
    Kh = simulate_inline(net, K2, N, S, seed=3)
    z = N * (Kh - fw.kernel)
    se = z.std(0) / np.sqrt(S)
    assert np.all(np.abs(z.mean(0) - fw.mean_shift) < 5 * se + 0.15 * np.abs(fw.mean_shift))
    Vmc = N * Kh[:, 0, 0].var()
    assert abs(Vmc - fw.covariance[0, 0, 0, 0]) < 0.2 * fw.covariance[0, 0, 0, 0]
