"""`resscale simulate` CLI, process pool, and resume after a real Ctrl-C / SIGKILL (issue 3)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import resscale as rs
from resscale.cli import app
from resscale.inputs import two_input_kernel
from resscale.parallel import run_tasks
from resscale.simulation import SimulationResult, simulate

ROOT = Path(__file__).resolve().parents[1]


def test_cli_smoke_and_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--out", str(tmp_path / "a"), "--width", "8", "--networks", "6",
                              "--depth", "3", "--c0", "0.3", "--sensitivity", "--workers", "1",
                              "--no-progress", "--all-layers"])
    assert res.exit_code == 0, res.output
    assert "E[Khat^L]" in res.output and "d E[c^L]/d c^0" in res.output
    r = SimulationResult.load(tmp_path / "a" / "result.npz")
    net = rs.ResNet(depth=3, alpha=0.5)
    ref = simulate(net, 8, 6, K0=two_input_kernel(0.3), sensitivity=True, all_layers=True)
    assert np.array_equal(r.kernels, ref.kernels) and np.array_equal(r.sens_c, ref.sens_c)
    np.save(tmp_path / "k0.npy", np.eye(3))
    res = runner.invoke(app, ["simulate", "--out", str(tmp_path / "b"), "--width", "4", "--networks", "2",
                              "--k0-file", str(tmp_path / "k0.npy"), "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["simulate", "--out", str(tmp_path / "c"), "--width", "0", "--networks", "2"])
    assert res.exit_code == 2 and "width" in res.output
    res = runner.invoke(app, ["simulate", "--out", str(tmp_path / "c"), "--width", "4", "--networks", "2",
                              "--backend", "jax"])
    assert res.exit_code == 2 and "backend" in res.output


def _square(x):
    return x * x


def test_run_tasks_process_pool_and_store(tmp_path):
    from resscale._storage import ChunkStore

    store = ChunkStore(tmp_path, format="pickle")
    out = run_tasks(_square, [1, 2, 3, 4], keys=["a", "b", "c", "d"], store=store, workers=1)
    assert out == [1, 4, 9, 16] and store.keys() == ["a", "b", "c", "d"]
    store.save("b", -1)  # a stored result is reused, not recomputed
    assert run_tasks(_square, [1, 2, 3, 4], keys=["a", "b", "c", "d"], store=store, workers=1)[1] == -1
    with pytest.raises(ValueError, match="workers"):
        run_tasks(_square, [1], workers=0)


def test_simulate_process_pool_identical():
    net = rs.ResNet(depth=3, alpha=0.5, sigma_b2=0.1, activation="relu", block="reduced")
    kw = dict(width=16, n_networks=12, K0=two_input_kernel(0.2), seed=1, chunk_size=3, sensitivity=True)
    a = simulate(net, workers=2, **kw)
    b = simulate(net, **kw)
    assert np.array_equal(a.kernels, b.kernels) and np.array_equal(a.sens_c, b.sens_c)


CLI_ARGS = ["--width", "96", "--networks", "160", "--chunk-size", "8", "--depth", "25", "--method", "weights",
            "--c0", "0.4", "--sensitivity", "--workers", "1", "--no-progress", "--seed", "3"]


def _start(out):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", "from resscale.cli import app; app()", "simulate",
                             "--out", str(out)] + CLI_ARGS, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_chunks(out, n, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        files = list((out / "chunks").glob("*.npz")) if (out / "chunks").is_dir() else []
        if len(files) >= n:
            return len(files)
        if proc.poll() is not None:
            pytest.fail(f"simulation ended before it could be interrupted: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail("no chunks appeared")


def test_interrupted_cli_run_resumes_identically(tmp_path):
    """Ctrl-C, then SIGKILL, then resume: identical to an uninterrupted run, no finished chunk lost."""
    out = tmp_path / "run"
    p = _start(out)
    _wait_chunks(out, 3, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "resume" in err
    n1 = len(list((out / "chunks").glob("*.npz")))
    assert 3 <= n1 < 20

    p = _start(out)  # resumes, then is killed hard
    _wait_chunks(out, n1 + 2, p)
    p.kill()
    p.wait(timeout=30)
    n2 = len(list((out / "chunks").glob("*.npz")))
    assert n1 + 2 <= n2 < 20 and not (out / "result.npz").exists()

    seen = []
    net = rs.ResNet(depth=25, alpha=0.5)
    kw = dict(width=96, n_networks=160, K0=two_input_kernel(0.4), seed=3, method="weights", sensitivity=True)
    resumed = simulate(net, out=out, _on_chunk=lambda i, r: seen.append(i), **kw)
    assert len(seen) == 20 - n2  # only the missing chunks were computed
    ref = simulate(net, chunk_size=40, **kw)  # uninterrupted, other chunking
    assert np.array_equal(resumed.kernels, ref.kernels) and np.array_equal(resumed.sens_c, ref.sens_c)
