"""The 1/N fit of scripts/fit_next_order.py (issue 10): WLS recovery and SE calibration on synthetic
data (no Monte-Carlo of networks)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from fit_next_order import WIDTHS, allocate, wls_fit  # noqa: E402

NS = np.array(WIDTHS, dtype=float)
TRUE = (53.7, 64.2, -380.0)          # V, V1, V2 of the size met at point B


def _synthetic(rng, se, coef=TRUE):
    y = sum(c / NS ** k for k, c in enumerate(coef))
    return y + se * rng.standard_normal(NS.size)


def test_exact_polynomial_recovered():
    coef = (2.0, -3.0, 50.0, -700.0)
    y = sum(c / NS ** k for k, c in enumerate(coef))
    c, cov, chi2, dof = wls_fit(NS, y, np.full(NS.size, 1e-3), degree=3)
    assert np.allclose(c, coef, rtol=1e-8, atol=1e-8)
    assert chi2 < 1e-12 and dof == NS.size - 4
    c2, _, _, dof2 = wls_fit(NS[:3], y[:3], np.ones(3), degree=2)
    assert dof2 == 0 and c2.shape == (3,)
    with pytest.raises(ValueError):
        wls_fit(NS[:3], y[:3], np.ones(3), degree=3)


def test_v1_within_4se_and_se_calibrated():
    rng = np.random.default_rng(20261202)
    se = 0.05 + 0.1 * (NS / 512)            # heteroscedastic, known
    c, cov, chi2, dof = wls_fit(NS, _synthetic(rng, se), se, degree=2)
    assert abs(c[1] - TRUE[1]) < 4 * np.sqrt(cov[1, 1])
    pulls, pulls0, chis = [], [], []
    for _ in range(400):
        c, cov, chi2, dof = wls_fit(NS, _synthetic(rng, se), se, degree=2)
        pulls.append((c[1] - TRUE[1]) / np.sqrt(cov[1, 1]))
        pulls0.append((c[0] - TRUE[0]) / np.sqrt(cov[0, 0]))
        chis.append(chi2 / dof)
    pulls, pulls0 = np.array(pulls), np.array(pulls0)
    # 400 draws: sd of the sample sd ~ 0.035, of the mean ~ 0.05
    assert abs(pulls.mean()) < 0.2 and abs(pulls.std() - 1) < 0.12
    assert abs(pulls0.mean()) < 0.2 and abs(pulls0.std() - 1) < 0.12
    assert abs(np.mean(chis) - 1) < 0.1            # chi^2/dof, dof = 5: sd of the mean ~ 0.03
    assert np.mean(np.abs(pulls) > 3) < 0.02


def test_truncation_bias_seen_by_cubic():
    """A 1/N^3 term the quadratic fit omits biases its V1; the cubic fit is unbiased."""
    rng = np.random.default_rng(7)
    se = np.full(NS.size, 0.002)
    coef = TRUE + (40000.0,)
    q = [wls_fit(NS, _synthetic(rng, se, coef), se, 2) for _ in range(50)]
    cu = [wls_fit(NS, _synthetic(rng, se, coef), se, 3) for _ in range(50)]
    zq = np.mean([(c[1] - TRUE[1]) / np.sqrt(v[1, 1]) for c, v, _, _ in q])
    zc = np.mean([(c[1] - TRUE[1]) / np.sqrt(v[1, 1]) for c, v, _, _ in cu])
    assert abs(zq) > 3 and abs(zc) < 0.6


def test_allocation():
    cost = 17.7e-6 + 1.62e-6 * NS
    f = allocate(WIDTHS, cost, floor=0.03)
    assert abs(f.sum() - 1) < 1e-9 and f.min() >= 0.03 - 1e-12
    # the information on V1 is at small N: N = 16, 24 get more than a uniform share
    assert f[0] + f[1] > 2 / NS.size
