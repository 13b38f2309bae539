"""Data-level sensitivity and rs.optimal_alpha(net, X=X) (docs/theory.md Sec. 8, issue 11)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import resscale as rs
from resscale.data_sensitivity import (data_kernel_entries, data_sensitivity,
                                       nearest_pairs, optimal_alpha_data, sample_pairs)

ROOT = Path(__file__).resolve().parents[1]


def two_point_X(c0, q0, d=6, seed=0):
    """Two rows whose input-layer kernel (sigma_in2 = 1, sigma_bin2 = 0) is q0 [[1, c0], [c0, 1]]."""
    r = np.random.default_rng(seed)
    e1, e2 = np.linalg.qr(r.normal(size=(d, 2)))[0].T
    s = math.sqrt(q0 * d)
    return np.stack([s * e1, s * (c0 * e1 + math.sqrt(1 - c0 * c0) * e2)])


def correlated_X(P=30, d=12, rho=0.85, seed=1):
    """Rows = shared direction + noise, unequal norms: pair correlations spread around ~0.6-0.9."""
    r = np.random.default_rng(seed)
    base = r.normal(size=d)
    X = rho * base + math.sqrt(1 - rho ** 2) * r.normal(size=(P, d))
    return X * r.uniform(0.6, 1.5, size=(P, 1))


# ------------------------------------------------------------------ reduces to the two-input S
@pytest.mark.parametrize("act,block,sb2", [("erf", "full", 0.0), ("erf", "reduced", 0.3), ("relu", "full", 0.0),
                                           ("relu", "reduced", 0.1), ("tanh", "full", 0.2)])
def test_two_point_data_equals_two_input_sensitivity(act, block, sb2):
    net = rs.ResNet(depth=15, activation=act, block=block, sigma_b2=sb2, sigma_w2=1.3)
    X = two_point_X(0.7, 0.8)
    alphas = np.array([0.03, 0.3, 1.0, 2.5])
    d = data_sensitivity(net, X=X, alphas=alphas)
    ref = rs.sensitivity(net, 0.7, 0.8, alphas)
    assert d.n_pairs == d.n_pairs_total == 1 and d.exact
    np.testing.assert_allclose(d.value, ref, rtol=1e-10)
    np.testing.assert_array_equal(d.stderr, 0.0)
    for m in ("rms", "geomean", "corr2"):
        np.testing.assert_allclose(data_sensitivity(net, X=X, alphas=alphas, measure=m).value, ref, rtol=1e-10)


def test_two_point_optimal_alpha_equals_two_input_optimum():
    net = rs.ResNet(depth=30)
    X = two_point_X(0.9, 1.0)
    r2 = rs.optimal_alpha(net, 0.9, 1.0)
    rd = rs.optimal_alpha(net, X=X)
    assert rd.interior and isinstance(rd, rs.OptimalAlphaResult)
    assert rd.alpha == pytest.approx(r2.alpha, rel=1e-6)
    assert rd.sensitivity == pytest.approx(r2.sensitivity, rel=1e-9)
    # the continuum value of the data-level code and of the ODE of Sec. 6 (same limit, two methods)
    assert rd.alpha_analytic == pytest.approx(r2.alpha_analytic, rel=2e-3)
    assert rd.to_dict()["alpha"] == rd.alpha


# ------------------------------------------------------------------ against the mean-field kernel
@pytest.mark.parametrize("act,block,sb2", [("erf", "full", 0.0), ("erf", "reduced", 0.2), ("relu", "full", 0.1),
                                           ("relu", "reduced", 0.0), ("erf", "two_layer", 0.2),
                                           ("relu", "two_layer", 0.0)])
def test_pair_sensitivities_match_finite_differences_of_mean_field_kernel(act, block, sb2):
    """S_ab from central differences of rs.mean_field_kernel in c0_ab (diagonals fixed), unequal norms."""
    try:
        net = rs.ResNet(depth=12, activation=act, block=block, sigma_b2=sb2, alpha=0.6, sigma_w2=1.4)
    except ValueError:
        pytest.skip(f"block {block!r} not available in this checkout")
    X = correlated_X(P=4, d=7, rho=0.6, seed=3)
    d = data_sensitivity(net, X=X)
    K0 = rs.inputs.input_kernel(net, X=X)
    q = np.diag(K0)
    h = 1e-5
    for (a, b), s_ab in zip(zip(*d.pairs), d.S[0]):
        cs = []
        for sgn in (1, -1):
            K = K0.copy()
            K[a, b] = K[b, a] = K0[a, b] + sgn * h * math.sqrt(q[a] * q[b])
            KL = rs.mean_field_kernel(net, K0=K)
            cs.append(KL[a, b] / math.sqrt(KL[a, a] * KL[b, b]))
        assert s_ab == pytest.approx((cs[0] - cs[1]) / (2 * h), rel=1e-6)
    assert d.value[0] == pytest.approx(d.S[0].mean(), rel=1e-14)


def test_correlation_jacobian_is_diagonal_in_pairs_response_function():
    """Sec. 8.1: from chi (resscale.response), dc^L_ab/dc^0_cd with diagonals fixed is 0 for {c,d} != {a,b}
    and equals S_ab on the diagonal: every norm of the data-level Jacobian is a statistic of S_ab."""
    net = rs.ResNet(depth=8, activation="erf", alpha=0.7, sigma_b2=0.1)
    X = correlated_X(P=4, d=5, rho=0.5, seed=4)
    K0 = rs.inputs.input_kernel(net, X=X)
    chi = rs.response_function(net, K0=K0)
    KL = rs.mean_field_kernel(net, K0=K0)
    q0, qL = np.diag(K0), np.diag(KL)
    I, J = np.triu_indices(4, 1)
    # a symmetric unit perturbation of c0_cd: dK0_cd = dK0_dc = sqrt(q_c q_d); chi is symmetric in (c, d)
    Jac = np.empty((I.size, I.size))
    for m, (c, dd) in enumerate(zip(I, J)):
        dKL = 2.0 * chi[:, :, c, dd] * math.sqrt(q0[c] * q0[dd])
        Jac[:, m] = dKL[I, J] / np.sqrt(qL[I] * qL[J])  # diagonals of K^L do not move (pair locality)
    S = data_sensitivity(net, K0=K0).S[0]
    np.testing.assert_allclose(np.diag(Jac), S, rtol=1e-9)
    off = Jac - np.diag(np.diag(Jac))
    assert np.max(np.abs(off)) < 1e-12 * np.max(np.abs(Jac))


def test_unequal_norms_matter():
    """The exact unequal-norm S_ab differs from the equal-norm approximation at the mean q0 (erf)."""
    net = rs.ResNet(depth=20, alpha=0.8)
    X = np.array([[3.0, 0.3, 0.0], [0.4, 0.5, 0.1]])
    d = data_sensitivity(net, X=X)
    q0, Kf = data_kernel_entries(net, X=X)
    c0 = float(Kf(np.array([0]), np.array([1]))[0] / math.sqrt(q0[0] * q0[1]))
    approx = rs.sensitivity(net, c0, float(q0.mean()))
    assert abs(d.value[0] / approx - 1) > 1e-3


# ------------------------------------------------------------------ subsampling
def test_subsample_error_bars_cover_exact_value():
    net = rs.ResNet(depth=20)
    X = correlated_X(P=90, d=10, rho=0.8, seed=5)            # 4005 pairs
    alphas = np.array([0.1, 0.5, 1.2, 3.0])
    exact = data_sensitivity(net, X=X, alphas=alphas, max_pairs=10_000)
    assert exact.exact and exact.n_pairs == 4005 and np.all(exact.stderr == 0)
    pulls = []
    for seed in range(6):
        sub = data_sensitivity(net, X=X, alphas=alphas, max_pairs=400, seed=seed)
        assert not sub.exact and sub.n_pairs == 400 and np.all(sub.stderr > 0)
        z = (sub.value - exact.value) / sub.stderr
        assert np.all(np.abs(z) < 4.0), z
        pulls.append(z)
        for m in ("rms", "geomean", "corr2"):
            v, se = sub.stat(m)
            ve, _ = exact.stat(m)
            assert np.all(np.abs(v - ve) < 4.0 * se + 1e-3 * np.abs(ve)), m   # ratio/delta-method SEs
    pulls = np.concatenate(pulls)
    assert 0.3 < np.std(pulls) < 2.0   # the stated SE has the right size


def test_sample_pairs_uniform_and_distinct():
    I, J, n = sample_pairs(50, max_pairs=300, seed=1)
    assert n == 1225 and I.size == 300
    assert np.all(I < J) and np.all(J < 50)
    assert len(set(zip(I.tolist(), J.tolist()))) == 300
    I2, J2, _ = sample_pairs(50, max_pairs=5000)
    assert I2.size == 1225


def test_optimal_alpha_data_subsampled_and_bootstrap():
    net = rs.ResNet(depth=20)
    X = correlated_X(P=80, d=10, rho=0.85, seed=6)
    full = optimal_alpha_data(net, X=X, max_pairs=10_000, n_grid=60)
    sub = rs.optimal_alpha(net, X=X, max_pairs=300, n_grid=60, seed=2)
    assert full.interior and sub.interior
    se = sub.data["alpha_stderr"]
    assert se is not None and se > 0
    assert abs(sub.alpha - full.alpha) < 4 * se + 1e-6
    assert full.data["band90"][0] < full.alpha < full.data["band90"][1]


def test_continuum_limit_matches_deep_numerical_optimum():
    """alpha_analytic = sqrt(T*/L) of the continuum flow (Eq. 8.5) vs the exact argmax: error O(1/L)."""
    X = correlated_X(P=12, d=8, rho=0.9, seed=7)
    err = []
    for L, tol in ((50, 0.1), (400, 0.015)):
        r = rs.optimal_alpha(rs.ResNet(depth=L), X=X, n_grid=80)
        err.append(abs(r.alpha_analytic / r.alpha - 1))
        assert r.interior and err[-1] < tol, (L, r.alpha, r.alpha_analytic)
    assert err[1] < err[0] / 4          # shrinks like 1/L (measured 5.1% -> 0.9%)


def test_no_interior_maximum_for_uncorrelated_data_warns():
    X = np.random.default_rng(0).normal(size=(40, 30))        # c0 ~ 0: S_ab < 1, largest as alpha -> 0
    with pytest.warns(rs.NoInteriorMaximumWarning, match="data-level"):
        r = rs.optimal_alpha(rs.ResNet(depth=20), X=X, n_grid=40)
    assert not r.interior and math.isnan(r.alpha) and r.data["band90"][1] < 1.0


def test_nearest_pairs():
    X = correlated_X(P=20, d=6, rho=0.3, seed=8)
    net = rs.ResNet(depth=5)
    q0, Kf = data_kernel_entries(net, X=X)
    I, J = nearest_pairs(q0, Kf)
    K = rs.inputs.input_kernel(net, X=X)
    C = K / np.sqrt(np.outer(q0, q0))
    np.fill_diagonal(C, -np.inf)
    want = {tuple(sorted((a, int(np.argmax(C[a]))))) for a in range(20)}
    assert set(zip(I.tolist(), J.tolist())) == want
    d = data_sensitivity(net, X=X, pairs="nearest")
    assert d.n_pairs == len(want)


def test_labels_within_between():
    X = correlated_X(P=20, d=6, seed=9)
    y = np.arange(20) % 3
    net = rs.ResNet(depth=5, alpha=0.5)
    dw = data_sensitivity(net, X=X, labels=y, pairs="within")
    db = data_sensitivity(net, X=X, labels=y, pairs="between")
    da = data_sensitivity(net, X=X)
    assert dw.n_pairs + db.n_pairs == da.n_pairs
    assert (dw.value * dw.n_pairs + db.value * db.n_pairs) / da.n_pairs == pytest.approx(da.value, rel=1e-12)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("X,match", [
    (np.ones(5), "X must be a 2-D"),
    (np.ones((1, 4)), "X must hold at least 2"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "X contains NaN"),
    (np.array([[1.0, 2.0], [0.0, 0.0]]), "X row 1"),
    (np.array([[1 + 1j, 2.0], [1.0, 0.0]]), "X must be real"),
    ("data.csv", "X must be a real numeric array"),
    (np.ones((2, 2, 2)), "X must be a 2-D"),
])
def test_bad_X_named(X, match):
    with pytest.raises(ValueError, match=match):
        rs.optimal_alpha(rs.ResNet(depth=3), X=X)
    with pytest.raises(ValueError, match=match):
        data_sensitivity(rs.ResNet(depth=3), X=X)


def test_bad_arguments():
    X = correlated_X(P=5, d=3)
    net = rs.ResNet(depth=3)
    with pytest.raises(ValueError, match="not both c0 and X"):
        rs.optimal_alpha(net, 0.5, X=X)
    with pytest.raises(ValueError, match="width.*not available with X"):
        rs.optimal_alpha(net, X=X, width=32)
    with pytest.raises(ValueError, match="needs c0"):
        rs.optimal_alpha(net)
    with pytest.raises(ValueError, match="only apply with X"):
        rs.optimal_alpha(net, 0.5, max_pairs=10)
    with pytest.raises(ValueError, match="measure"):
        rs.optimal_alpha(net, X=X, measure="median")
    with pytest.raises(ValueError, match="feedforward"):
        rs.optimal_alpha(rs.ResNet(depth=3, block="feedforward"), X=X)
    with pytest.raises(ValueError, match="needs labels"):
        data_sensitivity(net, X=X, pairs="within")
    with pytest.raises(ValueError, match="exactly one of X"):
        data_sensitivity(net)
    with pytest.raises(ValueError, match="max_pairs"):
        data_sensitivity(net, X=X, max_pairs=1)
    with pytest.raises(TypeError):
        rs.optimal_alpha("net", X=X)
    # the two-input call keeps working positionally
    assert rs.optimal_alpha(net, 0.9, 1.0).interior in (True, False)


# ------------------------------------------------------------------ CLI
def test_cli_optimal_data_npy_and_csv(tmp_path):
    from typer.testing import CliRunner

    from resscale.cli import app

    X = correlated_X(P=25, d=6, rho=0.85, seed=10)
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    np.savetxt(tmp_path / "xh.csv", X, delimiter=",", header=",".join(f"f{i}" for i in range(6)), comments="")
    ref = rs.optimal_alpha(rs.ResNet(depth=20), X=X, n_grid=60)
    runner = CliRunner()
    for name in ("x.npy", "x.csv", "xh.csv"):
        r = runner.invoke(app, ["optimal", "--data", str(tmp_path / name), "--depth", "20", "--n-grid", "60",
                                "--json", "--no-plot"])
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["alpha"] == pytest.approx(ref.alpha, rel=1e-6) and out["P"] == 25
        assert out["data_sensitivity"]["n_pairs"] == 300
    r = runner.invoke(app, ["optimal", "--data", str(tmp_path / "x.npy"), "--depth", "20", "--n-grid", "40",
                            "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 0 and "alpha*" in r.output and (tmp_path / "s.png").stat().st_size > 5000
    r = runner.invoke(app, ["optimal", "--data", str(tmp_path / "x.npy"), "--c0", "0.3", "--no-plot"])
    assert r.exit_code == 2 and "--data and --c0" in r.output
    (tmp_path / "bad.csv").write_text("1,2\nfoo,bar\n")
    for bad, msg in (("nope.npy", "not found"), ("bad.csv", "numeric CSV"), ("x.txt", ".npy or .csv")):
        if bad == "x.txt":
            (tmp_path / bad).write_text("1")
        r = runner.invoke(app, ["optimal", "--data", str(tmp_path / bad), "--no-plot"])
        assert r.exit_code == 2 and msg in r.output, r.output
    np.save(tmp_path / "one.npy", X[:1])
    r = runner.invoke(app, ["optimal", "--data", str(tmp_path / "one.npy"), "--no-plot"])
    assert r.exit_code == 2 and "X" in r.output


# ------------------------------------------------------------------ tiny end-to-end training sweep
def _tiny_sweep(tmp_path, block, *extra):
    """validate_data_alpha.py on a tiny grid (digits, depth 2, width 8, 1 epoch, 2 seeds, 3 alphas,
    60 theory inputs) into tmp_path; returns (command, finished process)."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    cmd = [sys.executable, str(ROOT / "scripts" / "validate_data_alpha.py"), "--out", str(tmp_path / "o"),
           "--datasets", "digits", "--depths", "2", "--blocks", block, "--activations", "erf", "--seeds", "2",
           "--epochs", "1", "--width", "8", "--n-alpha", "3", "--n-theory", "60", *extra,
           "--doc", str(tmp_path / "doc.md")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                              "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return cmd, r


def test_validate_script_tiny_sweep(tmp_path):
    cmd, _ = _tiny_sweep(tmp_path, "full", "--lrs", "0.001,0.003")
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["n_runs"] == 12 and len(res["summary"]) == 1
    row = res["summary"][0]
    assert row["best_alpha"] in row["alphas"] and len(row["per_seed_best"]) == 2
    assert "| digits | 2 | full | erf |" in (tmp_path / "doc.md").read_text()
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300)   # resumes: nothing retrained
    assert r2.returncode == 0 and "12 runs (0 new)" in r2.stdout


def test_validate_script_sgd_axis(tmp_path):
    """--optimizers sgd: its own lr grid, its own training config (cfg name *_sgd), the same theory."""
    cmd, _ = _tiny_sweep(tmp_path, "two_layer", "--lrs-sgd", "0.01,0.03", "--optimizers", "sgd")
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["n_runs"] == 12 and len(res["summary"]) == 1
    row = res["summary"][0]
    assert row["config"]["optimizer"] == "sgd" and row["lrs_tried"] == [0.01, 0.03]
    assert all(r_["config"]["optimizer"] == "sgd" for r_ in res["runs"])
    assert "| digits | 2 | two_layer | erf | sgd |" in (tmp_path / "doc.md").read_text()
    bad = subprocess.run(cmd[:-2] + ["--optimizers", "rmsprop"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--optimizers" in bad.stderr


# ------------------------------------------------------------------ Monte Carlo (slow)
@pytest.mark.slow
def test_data_level_sensitivity_matches_simulation():
    """Finite-width networks (rs.simulate, N = 256) vs the mean-field data-level sensitivity, P = 4 inputs
    of unequal norms, erf full block, L = 10: per-network central differences in each pair's c0 with
    common random numbers (same seed => same weights; h^0 = Z F^T with F the Cholesky factor of K0)."""
    net = rs.ResNet(depth=10, alpha=0.6)
    X = correlated_X(P=4, d=6, rho=0.7, seed=11)
    K0 = rs.inputs.input_kernel(net, X=X)
    q = np.diag(K0)
    pred = data_sensitivity(net, K0=K0)
    h, S_net, N = 2e-3, 4000, 256
    per_net = []
    for a, b in zip(*pred.pairs):
        cs = []
        for sgn in (1, -1):
            K = K0.copy()
            K[a, b] = K[b, a] = K0[a, b] + sgn * h * math.sqrt(q[a] * q[b])
            res = rs.simulate(net, width=N, n_networks=S_net, K0=K, seed=123)
            C = res.correlations()
            cs.append(C[:, a, b])
        per_net.append((cs[0] - cs[1]) / (2 * h))
    per_net = np.mean(per_net, axis=0)          # data-level (mean over pairs) per network
    est, se = per_net.mean(), per_net.std(ddof=1) / math.sqrt(S_net)
    assert abs(est - pred.value[0]) < 4 * se + 0.01 * pred.value[0], (est, se, pred.value[0])
    # power: the prediction at a different alpha is rejected by the same statistic
    other = data_sensitivity(net.replace(alpha=1.2), K0=K0).value[0]
    assert abs(est - other) > 4 * se
