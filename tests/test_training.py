"""Training validation (issue 6): model family, data, sweep/CLI, resume, errors.

All tests use fixed seeds and finish in seconds (tiny nets, 1 epoch).
"""
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import resscale as rs  # noqa: E402
from resscale.datasets import load_dataset  # noqa: E402
from resscale.training import (TrainConfig, build_model, data_kernel_stats, parse_alphas,  # noqa: E402
                               parse_ints, run_sweep, train_run)

TINY = dict(dataset="digits", width=16, epochs=1, batch_size=128)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny matmuls: intra-op threads only add contention (restored afterwards)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cli(args):
    from typer.testing import CliRunner

    from resscale.cli import app

    return CliRunner().invoke(app, ["train", *args])


# ------------------------------------------------------------------ the model is the SPEC family
@pytest.mark.parametrize("block,activation,alpha,sb2", [
    ("full", "erf", 0.5, 0.1),
    ("reduced", "relu", 0.5, 0.1),   # non-odd phi: the residual stream has a mean (uncentered kernel)
    ("feedforward", "tanh", 0.0, 0.05),
    ("two_layer", "relu", 0.5, 0.1),  # V phi(W h + b) + a: two Linear layers per block
])
def test_initial_output_kernel_matches_mean_field(block, activation, alpha, sb2):
    """Khat^L = h^L h^L^T / N of the torch model at init, averaged over 20 inits at N = 512,
    equals rs.mean_field_kernel within 4 standard errors (SE over inits) plus 1% (O(1/N) bias).
    The same statistic rejects a wrong alpha / sigma_w2, so the test has power."""
    N, n_init, depth = 512, 20, 5
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 10))
    X[1] = 0.8 * X[0] + 0.6 * X[1]          # a correlated pair
    net = rs.ResNet(depth=depth, alpha=alpha, sigma_w2=1.5, sigma_b2=sb2, sigma_in2=1.2,
                    sigma_bin2=0.1, activation=activation, block=block)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    Ks = []
    for seed in range(n_init):
        model = build_model(net, d=10, width=N, n_classes=3, seed=seed, dtype=torch.float64)
        with torch.no_grad():
            h = model.features(Xt).numpy()
        Ks.append(h @ h.T / N)
    Ks = np.array(Ks)
    mean, se = Ks.mean(0), Ks.std(0, ddof=1) / math.sqrt(n_init)
    K_mf = rs.mean_field_kernel(net, X=X)

    def z(K):
        return np.abs(mean - K) / (se + 0.01 * np.abs(K).max())

    assert z(K_mf).max() < 4.0, (z(K_mf), mean, K_mf)
    wrong = net.replace(alpha=1.5 * alpha) if block != "feedforward" else net.replace(sigma_w2=2.0)
    assert z(rs.mean_field_kernel(wrong, X=X)).max() > 4.0


def test_model_init_variances_and_readout():
    net = rs.ResNet(depth=3, alpha=0.2, sigma_w2=2.0, sigma_b2=0.3, sigma_in2=0.5, sigma_bin2=0.7)
    m = build_model(net, d=40, width=300, n_classes=10, seed=0, dtype=torch.float64)
    assert np.isclose(m.inp.weight.var().item(), 0.5 / 40, rtol=0.05)
    assert np.isclose(m.blocks[0][0].weight.var().item(), 2.0 / 300, rtol=0.05)
    assert np.isclose(m.readout.weight.var().item(), 1.0 / 300, rtol=0.1)
    assert np.isclose(torch.cat([lin.bias for mods in m.blocks for lin in mods]).var().item(), 0.3, rtol=0.2)
    assert torch.all(m.readout.bias == 0)
    z = build_model(net, d=40, width=30, n_classes=10, seed=0, readout="zero")
    assert torch.all(z.readout.weight == 0)
    # same seed, same network
    m2 = build_model(net, d=40, width=300, n_classes=10, seed=0, dtype=torch.float64)
    assert torch.equal(m.blocks[2][0].weight, m2.blocks[2][0].weight)


# ------------------------------------------------------------------ data and c0/q0
def test_dataset_split_fixed_stratified_standardized():
    d = load_dataset("digits")
    assert d.X_train.shape == (1347, 64) and d.X_test.shape == (450, 64)
    assert np.allclose(d.X_train.mean(0), 0, atol=1e-5)
    assert np.all(np.bincount(d.y_test) >= 44)        # stratified: ~45 per class
    d2 = load_dataset.__wrapped__("digits", 0.25, 0)  # uncached reload: identical split
    assert np.array_equal(d.y_test, d2.y_test) and np.allclose(d.X_test, d2.X_test)
    d3 = load_dataset.__wrapped__("digits", 0.25, 1)
    assert not np.allclose(d.X_test, d3.X_test)


def test_data_kernel_stats_definitions():
    d = load_dataset("digits")
    net = rs.ResNet(sigma_in2=2.0, sigma_bin2=0.1)
    st = data_kernel_stats(net, d.X_train, d.y_train, n_sub=200, seed=3)
    idx = np.sort(np.random.default_rng(3).choice(len(d.y_train), 200, replace=False))
    X = d.X_train[idx].astype(float)
    assert np.isclose(st["q0"], np.mean(2.0 * (X ** 2).sum(1) / 64 + 0.1))
    assert -1 <= st["c0_between"] < st["c0_within"] <= 1
    assert st["c0_between"] < st["c0_nearest"] < 1 and st["c0_one"] == 1.0


# ------------------------------------------------------------------ sweep, CLI, resume
def test_cli_tiny_sweep_end_to_end(tmp_path):
    out = tmp_path / "sweep"
    res = _cli(["--dataset", "digits", "--depth", "2", "--width", "16", "--alphas", "0.1,1",
                "--epochs", "1", "--seeds", "2", "--batch-size", "64", "--lr", "0.01", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert len(r["runs"]) == 4
    assert {(x["alpha"], x["seed"]) for x in r["runs"]} == {(0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)}
    for x in r["runs"]:
        assert 0.0 <= x["test_accuracy"] <= 1.0 and x["train_loss"] > 0 and x["depth"] == 2
        assert x["test_accuracy"] > 0.5          # one epoch (21 Adam steps) beats chance (0.1) by far
    assert "alpha_star" in r and r["depth"] == 2 and r["width"] == 16
    assert -1 <= r["c0"] <= 1 and r["q0"] > 0
    th = r["theory"]["2"]
    assert th["available"] and len(th["curve"]["alpha"]) == len(th["curve"]["S"])
    assert th["band"][0] <= th["band"][1]
    assert set(r["theory_by_c0"]) >= {"between", "all", "within", "nearest", "one"}
    assert r["summary"]["2"]["best_alpha"] in (0.1, 1.0)
    png = (out / "accuracy_vs_alpha.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (out / "summary.md").read_text().startswith("dataset `digits`")
    assert len(list((out / "runs").glob("*.json"))) == 4


def test_resume_skips_finished_runs(tmp_path):
    cfg = TrainConfig(**TINY)
    r1 = run_sweep(cfg, [2], "0.1,1", 1, tmp_path, progress=False, plot=False)
    assert r1["timing"]["n_trained"] == 2 and r1["timing"]["n_cached"] == 0
    files = sorted((tmp_path / "runs").glob("*.json"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    r2 = run_sweep(cfg, [2], "0.1,1,3", 1, tmp_path, progress=False, plot=False)
    assert r2["timing"]["n_trained"] == 1 and r2["timing"]["n_cached"] == 2
    assert [f.stat().st_mtime_ns for f in files] == mtimes          # finished runs untouched
    old = {(x["alpha"], x["seed"]): x["test_accuracy"] for x in r1["runs"]}
    assert all(old[(x["alpha"], x["seed"])] == x["test_accuracy"] for x in r2["runs"] if x["alpha"] != 3)
    assert not list((tmp_path / "runs").glob(".*tmp"))                # atomic writes leave no tmp
    # a different config (width) never reuses these caches
    r3 = run_sweep(TrainConfig(**{**TINY, "width": 8}), [2], "0.1", 1, tmp_path, progress=False, plot=False)
    assert r3["timing"]["n_trained"] == 1


def test_runs_are_reproducible():
    cfg = TrainConfig(**TINY)
    a = train_run(cfg, 2, 0.3, seed=5)
    b = train_run(cfg, 2, 0.3, seed=5)
    c = train_run(cfg, 2, 0.3, seed=6)
    assert a["test_accuracy"] == b["test_accuracy"] and a["train_loss"] == b["train_loss"]
    assert a["train_loss"] != c["train_loss"]


@pytest.mark.slow  # spawned workers each import torch: ~10-50 s depending on machine load
def test_parallel_workers_match_serial(tmp_path):
    cfg = TrainConfig(**TINY)
    par = run_sweep(cfg, [2], "0.3,1", 1, tmp_path / "p", workers=2, progress=False, plot=False)
    ser = run_sweep(cfg, [2], "0.3,1", 1, tmp_path / "s", workers=1, progress=False, plot=False)
    assert [x["test_accuracy"] for x in par["runs"]] == [x["test_accuracy"] for x in ser["runs"]]


# ------------------------------------------------------------------ grids and errors
def test_parse_alphas_and_depths():
    assert parse_alphas("0.03,0.3,3") == (0.03, 0.3, 3.0)
    g = parse_alphas("logspace:0.01:3:9")
    assert len(g) == 9 and g[0] == 0.01 and g[-1] == 3.0 and np.allclose(np.diff(np.log(g)), np.log(300) / 8, rtol=1e-4)
    assert parse_ints("50,20,50", "depths") == (20, 50)
    for bad in ("-0.1,1", "0,1", "logspace:0:1:3", "logspace:0.1:1", "a,b", ""):
        with pytest.raises(ValueError, match="alpha"):
            parse_alphas(bad)


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "nosuchdata"], "unknown dataset 'nosuchdata'"),
    (["--alphas", "-0.5,1"], "alpha must be finite and > 0"),
    (["--depth", "0"], "depth must be >= 1"),
    (["--depths", "20,0"], "depths must be >= 1"),
    (["--width", "0"], "width must be a positive integer"),
    (["--activation", "softplus"], "training supports activations"),
    (["--block", "dense"], "block must be one of"),
    (["--device", "tpu"], "device must be"),
    (["--c0", "1.5"], "c0 must be in [-1, 1]"),
])
def test_cli_bad_inputs_give_clear_errors(tmp_path, args, msg):
    res = _cli(["--out", str(tmp_path / "x"), "--epochs", "1", "--no-progress", *args])
    assert res.exit_code == 2
    assert msg in res.output
    assert not (tmp_path / "x" / "results.json").exists()
