"""Universality map of alpha* (issue 13; resscale.universality, docs/theory.md Sec. 6.4)."""
import math

import numpy as np
import pytest

import resscale as rs
from resscale import universality as U


@pytest.mark.parametrize("act", ["erf", "tanh"])
def test_exact_rescalings_between_blocks(act):
    """Odd phi, sigma_b2 = 0 (Eq. 6.14): with Z = sigma_w2 K the reduced and two-layer maps are the full
    block's map at unit weight variance, with alpha^2 -> alpha^2 sigma_w2 (reduced) or alpha^2 sigma_w2^2
    (two_layer) and q0 -> sigma_w2 q0; the correlation (hence S) is unchanged by the rescaling of K."""
    alphas = np.array([0.05, 0.2, 0.6])
    sw2, q0, c0, L = 2.7, 0.8, 0.7, 40

    def S(block, s, q, a):
        return rs.sensitivity(rs.ResNet(depth=L, block=block, sigma_w2=s, activation=act), c0, q, alphas=a)

    np.testing.assert_allclose(S("reduced", sw2, q0, alphas), S("full", 1.0, sw2 * q0, alphas * math.sqrt(sw2)),
                               rtol=1e-12)
    np.testing.assert_allclose(S("two_layer", sw2, q0, alphas), S("full", 1.0, sw2 * q0, alphas * sw2), rtol=1e-12)
    np.testing.assert_allclose(S("full", sw2, q0, alphas), S("full", 1.0, q0, alphas * math.sqrt(sw2)), rtol=1e-12)


def test_widest_flat_range_and_classify():
    sw = 0.25 * 2.0 ** (np.arange(25) / 4)
    a = sw ** -0.5                                   # the identity: max/min <= 1.3 over a factor 1.69
    lo, hi = U._widest_flat_range(sw, a, 0.30)
    assert 1.3 ** -2 <= lo / hi and hi / lo <= 1.3 ** 2 and hi / lo >= 2 ** 0.5
    flat = np.where(sw < 1, 1.0, 1.0 + 0.01 * np.log(sw))
    assert U._widest_flat_range(sw, flat, 0.10) == (sw[0], sw[-1])
    s = dict(block="reduced", convention="shared", sigma_b2=0.0, n_interior=25, range30=(1.0, 16.0))
    assert U.classify(s) == "weak"
    assert U.classify(dict(s, range30=(1.0, 2.0))) == "strong"
    assert U.classify(dict(s, block="full", convention="fixed")) == "identity"
    assert U.classify(dict(s, n_interior=0)) == "no optimum"


def test_map_full_block_identity_and_shared_convention():
    pts = U.map_points(["full", "reduced"], U.CONVENTIONS, (0.0,), (1.0, 2.0, 4.0, 8.0, 16.0), 100, "erf", 0.9)
    rows = [U.compute_point(p, n_grid=60) for p in pts]
    summ = U.summarise(rows)
    assert summ[("full", "fixed", 0.0)]["slope"] == pytest.approx(-0.5, abs=2e-3)
    assert summ[("full", "fixed", 0.0)]["verdict"] == "identity"
    # Eq. 6.14: full with shared input variance == reduced with fixed input variance, point by point
    np.testing.assert_allclose(summ[("full", "shared", 0.0)]["alpha"], summ[("reduced", "fixed", 0.0)]["alpha"],
                               rtol=1e-6)
    # the reduced block with shared input variance is the flattest curve over [1, 16]
    assert abs(summ[("reduced", "shared", 0.0)]["slope"]) < 0.5 * abs(summ[("reduced", "fixed", 0.0)]["slope"])
    md = U.table_markdown(summ)
    assert md.count("\n") == 1 + len(summ) and "identity" in md


def test_bad_convention():
    with pytest.raises(ValueError, match="convention"):
        U.q0_of("both", 1.0)
