"""Issue 12, remaining items for ``train`` / plotting / CLI help / ``simulate --scheduler``.

* item 8: summary.md, results.json and the PNG of a sweep, and every figure of
  :func:`resscale.plotting.save_figure`, are written to a unique temporary file in
  the target directory and moved into place with os.replace;
* item 5: the process pool of ``train`` uses the die-with-parent initializer, and
  its workers end within seconds of a SIGKILL of the parent;
* item 7: one seed prints no "± 0.0000"; flags have no ``<bool>`` placeholder;
  an unreachable ``--scheduler`` is a one-line error (exit 2) within seconds.
"""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import record_replace


def _cli(args):
    from typer.testing import CliRunner

    from resscale.cli import app

    return CliRunner().invoke(app, args, env={"COLUMNS": "250"})


# ------------------------------------------------------------------ item 8: atomic writes

def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    return fig


def test_save_figure_unique_tmp_in_same_dir(tmp_path, monkeypatch):
    from resscale.plotting import save_figure

    calls = record_replace(monkeypatch)
    target = tmp_path / "fig.png"
    save_figure(_figure(), target)
    save_figure(_figure(), target)
    assert [dst for _, dst in calls] == [str(target)] * 2
    srcs = [src for src, _ in calls]
    assert len(set(srcs)) == 2, "two writes of one path must not share a temporary file"
    for src in srcs:
        assert os.path.dirname(src) == str(tmp_path)
        assert ".partial" not in src and src != str(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]  # no stray tmp file


def test_save_figure_failure_keeps_old_file_and_no_tmp(tmp_path, monkeypatch):
    from resscale.plotting import save_figure

    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    fig = _figure()

    def boom(*a, **k):
        with open(a[0], "wb") as f:  # a partial file, then a crash
            f.write(b"\x89PN")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError):
        save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_save_figure_pdf_format_from_extension(tmp_path):
    from resscale.plotting import save_figure

    save_figure(_figure(), tmp_path / "fig.pdf")
    assert (tmp_path / "fig.pdf").read_bytes()[:4] == b"%PDF"


# ------------------------------------------------------------------ train: tiny sweeps
torch_available = True
try:  # noqa: SIM105
    import torch  # noqa: F401
    import sklearn  # noqa: F401
except ImportError:  # pragma: no cover
    torch_available = False
needs_torch = pytest.mark.skipif(not torch_available, reason="needs torch and sklearn ('.[train]')")

TINY = dict(dataset="digits", width=8, epochs=1, batch_size=256)


@needs_torch
def test_sweep_writes_every_output_atomically(tmp_path, monkeypatch):
    from resscale.training import TrainConfig, run_sweep

    calls = record_replace(monkeypatch)
    run_sweep(TrainConfig(**TINY), [2], "0.1,1", 1, tmp_path, progress=False, plot=True)
    by_dst = {os.path.basename(dst): src for src, dst in calls}
    for name in ("results.json", "summary.md", "accuracy_vs_alpha.png"):
        assert name in by_dst, f"{name} not written through os.replace"
        src = by_dst[name]
        assert os.path.dirname(src) == str(tmp_path) and os.path.basename(src) != name
    assert (tmp_path / "accuracy_vs_alpha.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no stray tmp files


def test_format_mean_spread_one_seed():
    from resscale.training import format_mean_spread

    assert format_mean_spread(0.5, 0.0, 1) == "0.5000 ± n/a (1 seed)"
    assert format_mean_spread(0.5, 0.01, 3) == "0.5000 ± 0.0100"


@needs_torch
def test_one_seed_prints_no_zero_spread(tmp_path):
    r = _cli(["train", "--out", str(tmp_path), "--depth", "2", "--width", "8", "--epochs", "1",
              "--batch-size", "256", "--alphas", "0.1,1", "--seeds", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = (tmp_path / "summary.md").read_text()
    for text in (r.output, summary):
        assert "± 0.0000" not in text and "+- 0.0000" not in text
        assert "n/a (1 seed)" in text


# ------------------------------------------------------------------ item 5: train workers die with the parent
@needs_torch
def test_train_pool_uses_die_with_parent_initializer(tmp_path, monkeypatch):
    import concurrent.futures

    from resscale import training

    seen = {}

    class FakePool:
        def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=()):
            seen.update(initializer=initializer, initargs=initargs)
            raise RuntimeError("stop here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", FakePool)
    with pytest.raises(RuntimeError, match="stop here"):
        training.run_sweep(training.TrainConfig(**TINY), [2], "0.1,1", 1, tmp_path,
                           workers=2, threads=1, progress=False, plot=False)
    assert seen["initializer"] is training._worker_init
    assert seen["initargs"] == (1, os.getpid())


def test_worker_init_calls_parallel_init_worker(monkeypatch):
    pytest.importorskip("torch")
    from resscale import parallel, training

    got = []
    monkeypatch.setattr(parallel, "_init_worker", lambda threads, pid: got.append((threads, pid)))
    import torch

    old = torch.get_num_threads()
    try:
        training._worker_init(1, 12345)
    finally:
        torch.set_num_threads(old)
    assert got == [(1, 12345)]


@needs_torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_train_workers_die_on_sigkill_of_parent(tmp_path, kill_parent):
    """Two workers train long runs (many epochs); SIGKILL of the parent ends them within 6 s."""
    script = textwrap.dedent(f"""
        from resscale.training import TrainConfig, run_sweep
        cfg = TrainConfig(dataset="digits", width=8, epochs=100000, batch_size=256)
        run_sweep(cfg, [2], "0.1,1", 1, {str(tmp_path)!r}, workers=2, threads=1, progress=False, plot=False)
    """)
    # the workers import torch and run the initializer: 4 s after they appear
    kill_parent(script, signal.SIGKILL, min_children=2, start_timeout=60.0, settle=4.0, grace=6.0)


# ------------------------------------------------------------------ item 7: help and --scheduler
@pytest.mark.parametrize("command", ["simulate", "train", "finite", "kernel", "optimal", "report"])
def test_help_has_no_bool_placeholder(command):
    r = _cli([command, "--help"])
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output
    assert "--help" in r.output


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on it now
    return port


def test_unreachable_scheduler_is_a_one_line_error(tmp_path):
    port = _closed_port()
    t0 = time.time()
    r = _cli(["simulate", "--out", str(tmp_path / "s"), "--width", "4", "--networks", "2",
              "--depth", "2", "--scheduler", f"tcp://127.0.0.1:{port}", "--no-progress"])
    assert time.time() - t0 < 10
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    err = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and "--scheduler" in err[0] and f"127.0.0.1:{port}" in err[0], r.output


@pytest.mark.parametrize("address,msg", [("tcp://host:abc", "malformed"), ("tcp://:8786", "malformed"),
                                         ("  ", "empty")])
def test_malformed_scheduler_address(address, msg):
    from resscale.commands.simulate import check_scheduler_reachable

    with pytest.raises(ValueError, match=msg) as e:
        check_scheduler_reachable(address)
    assert "--scheduler" in str(e.value)


def test_scheduler_check_times_out_quickly(monkeypatch):
    from resscale.commands.simulate import check_scheduler_reachable

    def slow(addr, timeout=None):
        assert timeout is not None and timeout <= 5
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", slow)
    with pytest.raises(ValueError, match="within 5 s"):
        check_scheduler_reachable("tcp://192.0.2.1:8786")


def test_reachable_scheduler_passes_check():
    from resscale.commands.simulate import check_scheduler_reachable

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        check_scheduler_reachable(f"127.0.0.1:{srv.getsockname()[1]}")
    finally:
        srv.close()
