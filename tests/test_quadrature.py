"""Accuracy of the generic Gaussian-integral quadrature (resscale/activation_quadrature.py, theory.md Sec. 2.3).

The base-class path (``Activation`` without closed form) is checked against
closed forms (erf, relu), against adaptive scipy references (tanh, gelu) and
its derivatives against central differences of G. Errors are measured on the
natural scale of each quantity (Cauchy-Schwarz bounds), so that G = 0 (rho = 0,
odd phi) is tested in absolute terms:

    |G| <= sqrt(E phi_a^2 E phi_b^2),  |dG/dkab| <= sqrt(E phi'_a^2 E phi'_b^2),
    |dG/dkaa| <= 1/2 sqrt(E phi''_a^2 E phi_b^2).
"""
import math

import numpy as np
import pytest
from scipy import integrate, special

import resscale as rs
from resscale.activations import (Activation, _erf_d1, _erf_d2, _gelu, _gelu_d1, _gelu_d2, _relu,
                                  _relu_d1, _zero, from_callable)

SQ2PI = math.sqrt(2.0 * math.pi)
TOL = 1e-9


def _moment(act, k, f):
    return act._expect(np.asarray(k, dtype=float), lambda u: (f(u),), 1, False)[0]


def _scales(act, ka, kb):
    p2 = lambda k: _moment(act, k, lambda u: act.fn(u) ** 2)
    q2 = lambda k: _moment(act, k, lambda u: act.d1(u) ** 2)
    r2 = lambda k: _moment(act, k, lambda u: act.d2(u) ** 2)
    return (np.sqrt(p2(ka) * p2(kb)), 0.5 * np.sqrt(r2(ka) * p2(kb)), 0.5 * np.sqrt(p2(ka) * r2(kb)),
            np.sqrt(q2(ka) * q2(kb)))


def _grid(kvals, rhos):
    ka, kb, r = np.meshgrid(kvals, kvals, rhos, indexing="ij")
    return ka, kb, r * np.sqrt(ka * kb)


RHOS = np.array([-1.0, -0.9999999, -0.9, -0.5, 0.0, 0.3, 0.7, 0.95, 0.999, 0.999999, 1 - 1e-12, 1.0])


@pytest.mark.parametrize("odd", [True, False])
def test_erf_quadrature_matches_closed_form(odd):
    quad = Activation("erf_quad", special.erf, _erf_d1, _erf_d2, odd=odd)
    exact = rs.get_activation("erf")
    ka, kb, kab = _grid(np.logspace(-4, 4, 9), RHOS)
    P, C, S = quad.pair(ka, kb, kab), exact.pair(ka, kb, kab), _scales(quad, ka, kb)
    for j in range(4):
        err = np.abs(P[j] - C[j]) / S[j]
        assert np.all(np.isfinite(P[j]))
        assert err.max() < TOL, (j, err.max())
    np.testing.assert_allclose(quad.kernel(ka, kb, kab), P[0], rtol=0, atol=0)


def test_erf_quadrature_diag_and_extremes():
    quad = Activation("erf_quad", special.erf, _erf_d1, _erf_d2, odd=True)
    exact = rs.get_activation("erf")
    k = np.logspace(-6, 6, 49)
    g, dg = quad.diag(k)
    ge, dge = exact.diag(k)
    assert np.max(np.abs(g - ge) / ge) < TOL
    scale = np.sqrt(_moment(quad, k, lambda u: quad.d1(u) ** 2) ** 2)
    assert np.max(np.abs(dg - dge) / scale) < TOL
    # extreme variances k in [1e-6, 1e6], including exactly (anti)correlated pairs
    ka, kb, kab = _grid(np.array([1e-6, 1e6]), np.array([-1.0, 0.0, 0.5, 1.0]))
    P, C, S = quad.pair(ka, kb, kab), exact.pair(ka, kb, kab), _scales(quad, ka, kb)
    for j in range(4):
        assert (np.abs(P[j] - C[j]) / S[j]).max() < TOL


def test_non_odd_mean_matches_closed_form():
    # erf shifted: E[erf(u + c)] = erf(c / sqrt(1 + 2k)); 1/2 E[phi''] = d/dk of it
    c = 0.7
    act = Activation("erf_shift", lambda u: special.erf(u + c), lambda u: _erf_d1(u + c),
                     lambda u: _erf_d2(u + c))
    k = np.logspace(-6, 6, 25)
    m, dm = act.mean(k)
    x = c / np.sqrt(1.0 + 2.0 * k)
    np.testing.assert_allclose(m, special.erf(x), rtol=TOL, atol=1e-12)
    dexact = _erf_d1(x) * (-c) * (1.0 + 2.0 * k) ** -1.5
    scale = 0.5 * np.sqrt(_moment(act, k, lambda u: act.d2(u) ** 2))  # |1/2 E phi''| <= this
    assert np.max(np.abs(dm - dexact) / scale) < TOL


def test_relu_quadrature_kink_limited():
    """relu has a kink at 0: the rules are spectral only for smooth phi.

    Measured: |G - G_exact| <= 1.3e-2 sqrt(kaa kbb), |dG/dkab - exact| <= 6e-2,
    mean 2e-2 relative, diag 5e-12 relative over k in [1e-4, 1e4] (the relu closed
    form is what the package uses). phi'' is a delta function, so dG/dkaa is not
    available by quadrature and is not tested.
    """
    quad = Activation("relu_quad", _relu, _relu_d1, _zero)
    exact = rs.get_activation("relu")
    ka, kb, kab = _grid(np.logspace(-4, 4, 5), np.linspace(-1.0, 1.0, 21))
    P, C = quad.pair(ka, kb, kab), exact.pair(ka, kb, kab)
    assert np.max(np.abs(P[0] - C[0]) / np.sqrt(ka * kb)) < 2e-2
    assert np.max(np.abs(P[3] - C[3])) < 8e-2
    k = np.logspace(-4, 4, 9)
    np.testing.assert_allclose(quad.diag(k)[0], exact.diag(k)[0], rtol=1e-9)
    np.testing.assert_allclose(quad.mean(k)[0], exact.mean(k)[0], rtol=3e-2)  # kink at a node


# ------------------------------------------------------------------ references
def _q1(f, lo, hi):
    pts = [lo, hi] + [p for p in (-20.0, -6.0, -2.0, -0.5, 0.0, 0.5, 2.0, 6.0, 20.0) if lo < p < hi]
    b = sorted(set(pts))
    return sum(integrate.quad(f, x, y, epsabs=1e-15, epsrel=1e-13, limit=200)[0] for x, y in zip(b[:-1], b[1:]))


def _ref_pair(f, g, ka, kb, kab):
    """E[f(u_a) g(u_b)] by nested adaptive quadrature with break points at phi's features."""
    sa, beta = math.sqrt(ka), kab / ka
    tau = math.sqrt(max(kb - beta * kab, 0.0))

    def inner(a):
        mu = beta * a
        if tau == 0.0:
            return g(mu)
        return _q1(lambda v: g(v) * math.exp(-0.5 * ((v - mu) / tau) ** 2) / (tau * SQ2PI), mu - 9 * tau, mu + 9 * tau)

    return _q1(lambda a: f(a) * inner(a) * math.exp(-0.5 * (a / sa) ** 2) / (sa * SQ2PI), -9 * sa, 9 * sa)


def _ref_1d(f, k):
    s = math.sqrt(k)
    return _q1(lambda u: f(u) * math.exp(-0.5 * (u / s) ** 2) / (s * SQ2PI), -9 * s, 9 * s)


_tanh = math.tanh
_tanh1 = lambda u: 1.0 - math.tanh(u) ** 2
_tanh2 = lambda u: -2.0 * math.tanh(u) * (1.0 - math.tanh(u) ** 2)


@pytest.mark.parametrize("ka,kb,rho", [(50.0, 50.0, 0.5), (50.0, 20.0, 0.99), (1e4, 1e4, 0.3),
                                       (1e4, 1e4, 1.0), (1e-3, 1e-3, 0.7), (1.0, 1.0, -0.9999),
                                       (1e-6, 1.0, 0.9), (300.0, 300.0, 0.99999),
                                       (1e4, 1e4, 0.9999), (1e6, 4e5, 0.99999)])
def test_tanh_against_adaptive_reference(ka, kb, rho):
    act = rs.get_activation("tanh")
    kab = rho * math.sqrt(ka * kb)
    G, Gaa, _, Gab = act.pair(ka, kb, kab)
    S = _scales(act, np.array(ka), np.array(kb))
    assert abs(G - _ref_pair(_tanh, _tanh, ka, kb, kab)) < TOL * S[0]
    assert abs(Gab - _ref_pair(_tanh1, _tanh1, ka, kb, kab)) < TOL * S[3]
    assert abs(Gaa - 0.5 * _ref_pair(_tanh2, _tanh, ka, kb, kab)) < TOL * S[1]


@pytest.mark.parametrize("k", [1e-6, 0.3, 1.0, 50.0, 1e4, 1e6])
def test_tanh_gelu_diag_against_reference(k):
    t = rs.get_activation("tanh")
    g, dg = t.diag(k)
    assert abs(g - _ref_1d(lambda u: _tanh(u) ** 2, k)) < TOL * max(g, 1e-300) + 1e-300
    d1sq = _ref_1d(lambda u: _tanh1(u) ** 2, k)   # E[tanh'(u)^2]: badly wrong with plain GH at k = 50
    assert abs(t.pair(k, k, k)[3] - d1sq) < TOL * d1sq
    assert abs(dg - _ref_1d(lambda u: _tanh1(u) ** 2 + _tanh(u) * _tanh2(u), k)) < TOL * d1sq
    ge = rs.get_activation("gelu")
    m, _ = ge.mean(k)
    gf = lambda u: float(_gelu(np.float64(u)))
    assert abs(m - _ref_1d(gf, k)) < TOL * math.sqrt(k)
    assert abs(ge.diag(k)[0] - _ref_1d(lambda u: gf(u) ** 2, k)) < TOL * k


@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_derivatives_match_finite_differences(name):
    act = rs.get_activation(name)
    ka = np.array([0.01, 0.5, 2.0, 30.0, 400.0, 5.0])
    kb = np.array([0.02, 0.7, 2.0, 10.0, 400.0, 5.0])
    rho = np.array([0.3, -0.6, 0.9, 0.5, 0.999, 0.0])
    kab = rho * np.sqrt(ka * kb)
    G, Gaa, Gbb, Gab = act.pair(ka, kb, kab)
    S = _scales(act, ka, kb)
    for d, (da, db, dab) in ((Gaa, (1, 0, 0)), (Gbb, (0, 1, 0)), (Gab, (0, 0, 1))):
        h = 1e-5 * np.minimum(ka, kb) * np.maximum(1.0 - np.abs(rho), 1e-2)  # (FD error ~ h^2)
        fd = (act.kernel(ka + da * h, kb + db * h, kab + dab * h)
              - act.kernel(ka - da * h, kb - db * h, kab - dab * h)) / (2 * h)
        scale = np.maximum(np.abs(d), S[3] if dab else S[1])
        assert np.max(np.abs(fd - d) / scale) < 1e-6
    g, dg = act.diag(ka)
    h = 1e-4 * ka
    fd = (act.diag(ka + h)[0] - act.diag(ka - h)[0]) / (2 * h)
    assert np.max(np.abs(fd - dg) / np.sqrt(_moment(act, ka, lambda u: act.d1(u) ** 2) ** 2)) < 1e-6


def test_user_callable_without_derivatives():
    # G uses only phi itself: full accuracy; derivatives use central differences of phi (~1e-7)
    act = from_callable(lambda u: np.tanh(u), name="mytanh")
    ref = rs.get_activation("tanh")
    ka, kb, kab = _grid(np.array([1e-3, 1.0, 100.0]), np.array([-1.0, 0.2, 0.99, 1.0]))
    P, R, S = act.pair(ka, kb, kab), ref.pair(ka, kb, kab), _scales(ref, ka, kb)
    assert np.max(np.abs(P[0] - R[0]) / S[0]) < TOL
    assert np.max(np.abs(P[3] - R[3]) / S[3]) < 1e-6


def test_shapes_broadcasting_and_degenerate_inputs():
    act = rs.get_activation("tanh")
    out = act.pair(np.ones((3, 1)), np.ones((1, 4)), 0.5)
    assert all(o.shape == (3, 4) for o in out)
    assert all(o.shape == (0,) for o in act.pair(np.zeros(0), np.zeros(0), np.zeros(0)))
    # zero variance: u = 0 exactly
    G, Gaa, Gbb, Gab = act.pair(0.0, 2.0, 0.0)   # = tanh(0) E tanh, tanh'(0) E tanh'
    assert G == 0.0 and abs(Gab - _ref_1d(_tanh1, 2.0)) < 1e-13
    gel = rs.get_activation("gelu")
    G, _, _, Gab = gel.pair(0.0, 0.0, 0.0)
    assert G == 0.0 and abs(Gab - 0.25) < 1e-15  # phi'(0)^2 = 1/4
    # rho slightly above 1 through rounding is treated as rho = 1
    q = 3.7
    a = act.pair(q, q, q * (1 + 1e-15))
    b = act.pair(q, q, q)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert np.isclose(b[0], act.diag(q)[0], rtol=1e-12)
