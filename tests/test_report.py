"""`resscale report`: end-to-end tiny run, resume from the cache, README verdict block."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from resscale import report as R

ROOT = Path(__file__).resolve().parent.parent
FIG_STEMS = ["fig1_signal_propagation", "fig2_response_distance", "fig3_sensitivity", "fig4_alpha_vs_depth",
             "fig5_universality", "fig6_finite_width", "fig7_finite_size", "fig8_universality_map"]


def _tiny(**kw):
    # smaller than the "tiny" preset where it matters for speed (one-process, fixed seeds)
    return R.get_config("tiny", **kw)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rep = R.run_report(out, config=_tiny(), workers=1, progress=False)
    return out, rep


def test_tiny_report_writes_every_file(tiny_report):
    out, rep = tiny_report
    for stem in FIG_STEMS:
        assert (out / f"{stem}.png").stat().st_size > 1000, stem
        rows = (out / f"{stem}.csv").read_text().splitlines()
        assert len(rows) >= 3, stem  # header + data
    md = (out / "report.md").read_text()
    for i in range(1, 9):
        assert f"## Figure {i}:" in md
    assert "Verdict" in md
    data = json.loads((out / "report.json").read_text())
    assert set(data["verdict"]) == {"claim1", "claim2", "claim3", "claim4"}
    assert set(data["figures"]) == {f"fig{i}" for i in range(1, 9)}
    assert "IDENTITY" in data["verdict"]["claim4"] and "Fig. 8" in data["verdict"]["claim4"]
    assert data["meta"]["tasks_computed"] > 10


def test_tiny_report_numbers_are_consistent(tiny_report):
    out, rep = tiny_report
    f3 = rep["figures"]["fig3"]["summary"]["per_depth"]
    import resscale as rs
    for r in f3:  # alpha* in the summary is the theory's argmax
        o = rs.optimal_alpha(rs.ResNet(depth=r["depth"], alpha=0.1), 0.9, 1.0)
        assert r["alpha_star"] == pytest.approx(o.alpha, rel=1e-6)
        assert r["position"] == ("inside" if 0.1 <= o.alpha <= 0.3 else "above" if o.alpha > 0.3 else "below")
        # the verdict text quotes the generated number
        assert f"alpha*={R._f(o.alpha)}" in rep["verdict"]["claim3"]
    # full block, sigma_b2 = 0: alpha* ~ 1/sigma_w exactly at leading order (theory Sec. 6.5)
    assert rep["figures"]["fig5"]["summary"]["sigma_w2"]["full"]["slope"] == pytest.approx(-0.5, abs=0.02)
    # relu (full block) has no interior maximum; reported, not hidden
    assert "relu" in rep["figures"]["fig5"]["summary"]["activation"]["full"]["no_interior"]
    # fig1 table: layer 0 of the simulation equals its input statistics within noise, theory q^0 = q0
    rows = list(_read_csv(out / "fig1_signal_propagation.csv"))
    assert all(float(r["q_theory"]) == pytest.approx(1.0) for r in rows if r["layer"] == "0")


def _read_csv(path):
    import csv
    with open(path) as f:
        yield from csv.DictReader(f)


def test_resume_reuses_cache(tmp_path):
    cfg = _tiny(f5_activations=("erf",), f4_depths=(10, 30))
    rep1 = R.run_report(tmp_path, config=cfg, workers=1, progress=False, figures=["fig3", "fig4", "fig7"])
    n1 = rep1["meta"]["tasks_computed"]
    assert n1 > 0 and rep1["meta"]["tasks_cached"] == 0
    # simulate a killed run: drop one finished point, the rest must be reused
    keys = R.ChunkStore(tmp_path / "cache", format="pickle").keys()
    assert len(keys) == n1
    (tmp_path / "cache" / f"{keys[0]}.pkl").unlink()
    rep2 = R.run_report(tmp_path, config=cfg, workers=1, progress=False, figures=["fig3", "fig4", "fig7"])
    assert rep2["meta"]["tasks_computed"] == 1
    assert rep2["meta"]["tasks_cached"] == n1 - 1
    assert rep2["verdict"] == rep1["verdict"]  # identical numbers (fixed seeds, cached points)
    rep3 = R.run_report(tmp_path, config=cfg, workers=1, progress=False, figures=["fig3", "fig4", "fig7"])
    assert rep3["meta"]["tasks_computed"] == 0


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    """An exception in the middle of a sweep keeps the finished points; the rerun computes only the rest."""
    cfg = _tiny()
    calls = {"n": 0}
    # TaskRunner looks _run_task up in resscale.report.tasks: patch it there
    real = R.tasks._run_task

    def flaky(spec):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(spec)

    monkeypatch.setattr(R.tasks, "_run_task", flaky)
    with pytest.raises(KeyboardInterrupt):
        R.run_report(tmp_path, config=cfg, workers=1, progress=False, figures=["fig2"])
    assert len(R.ChunkStore(tmp_path / "cache", format="pickle").keys()) == 3
    monkeypatch.setattr(R.tasks, "_run_task", real)
    rep = R.run_report(tmp_path, config=cfg, workers=1, progress=False, figures=["fig2"])
    assert rep["meta"]["tasks_cached"] == 3
    assert rep["meta"]["tasks_computed"] == 2 * len(cfg.f2_sim_distances) - 3


def test_fit_power_exp_identifies_the_form():
    x = np.arange(10, 200, 7.0)
    p = R.fit_power_exp(x, 3 * x ** -0.7)
    assert p["better"] == "power law" and p["p"] == pytest.approx(0.7, rel=1e-9)
    e = R.fit_power_exp(x, 2 * np.exp(-x / 13.0))
    assert e["better"] == "exponential" and e["xi"] == pytest.approx(13.0, rel=1e-9)


def test_quad_argmax_and_control_variate():
    a = np.exp(np.linspace(-1, 1, 7))
    S = 2 - (np.log(a) - 0.2) ** 2
    est, se = R._quad_argmax(a, S, np.full(7, 1e-3))
    assert est == pytest.approx(math.exp(0.2), rel=1e-6) and se < 0.01
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 1))
    y = 1.0 + 3 * x[:, 0] + 0.1 * rng.standard_normal(4000)
    m, s = R._cv_mean(y, x, np.zeros(1))
    assert abs(m - 1.0) < 4 * s and s < 0.1 * y.std() / math.sqrt(4000)


# ---------------------------------------------------------------- README verdict script
def _script():
    spec = importlib.util.spec_from_file_location("update_readme_verdict", ROOT / "scripts" / "update_readme_verdict.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_report(d: Path):
    d.mkdir(parents=True, exist_ok=True)
    rep = {"config": {"mode": "quick"}, "meta": {"elapsed_s": 12.0, "finite_width_theory": True},
           "verdict": {"claim1": "claim 1: V agrees", "claim2": "claim 2: power law",
                       "claim3": "claim 3: alpha*=0.455 above the band", "claim4": "claim 4: slope -0.5"}}
    (d / "report.json").write_text(json.dumps(rep))
    return rep


def test_verdict_block_update(tmp_path):
    mod = _script()
    _fake_report(tmp_path / "rep")
    readme = tmp_path / "README.md"
    head, tail = "# title\n\nintro\n\n## Verdict\n", "\n## After\n\nkept text\n"
    readme.write_text(head + "<!-- verdict:start -->\nold text\n<!-- verdict:end -->" + tail)
    assert mod.main([str(tmp_path / "rep"), "--readme", str(readme)]) == 0
    new = readme.read_text()
    assert new.startswith(head) and new.endswith(tail)
    assert "old text" not in new
    for k in ("claim 1: V agrees", "claim 3: alpha*=0.455 above the band", "claim 4: slope -0.5"):
        assert f"- {k}" in new
    # idempotent
    assert mod.main([str(tmp_path / "rep"), "--readme", str(readme)]) == 0
    assert readme.read_text() == new


@pytest.mark.parametrize("text", ["# no markers\n", "<!-- verdict:start -->\nx\n",
                                  "<!-- verdict:end -->\n<!-- verdict:start -->\n",
                                  "<!-- verdict:start --><!-- verdict:end --><!-- verdict:start --><!-- verdict:end -->"])
def test_verdict_block_missing_markers_fail(tmp_path, capsys, text):
    mod = _script()
    _fake_report(tmp_path / "rep")
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert mod.main([str(tmp_path / "rep"), "--readme", str(readme)]) == 1
    assert "verdict:start" in capsys.readouterr().err
    assert readme.read_text() == text  # untouched


def test_verdict_block_missing_report(tmp_path, capsys):
    mod = _script()
    readme = tmp_path / "README.md"
    readme.write_text("<!-- verdict:start -->\n<!-- verdict:end -->\n")
    assert mod.main([str(tmp_path / "nothing"), "--readme", str(readme)]) == 1
    assert "report.json" in capsys.readouterr().err


def test_verdict_block_from_real_report(tiny_report, tmp_path):
    out, rep = tiny_report
    mod = _script()
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- verdict:start -->\n<!-- verdict:end -->\nb\n")
    assert mod.main([str(out), "--readme", str(readme)]) == 0
    txt = readme.read_text()
    for v in rep["verdict"].values():
        assert v in txt


def test_cli_tiny(tmp_path):
    from typer.testing import CliRunner

    from resscale.cli import app

    res = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--tiny", "--workers", "1", "--no-progress",
                                   "--figures", "fig3,fig4"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fig3_sensitivity.png").exists() and (tmp_path / "report.md").exists()
    assert not (tmp_path / "fig1_signal_propagation.png").exists()
    assert "claim 3" in res.output
    bad = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--figures", "fig9"])
    assert bad.exit_code == 2 and "fig8" in bad.output   # every figure of the package is selectable


def test_every_figure_module_is_selectable():
    from resscale.report.runner import FIGURE_NAMES, FIGURES

    assert FIGURE_NAMES == tuple(f"fig{i}" for i in range(1, len(FIGURES) + 1))


def test_training_results_land_in_the_report(tmp_path):
    """The committed GPU training sweep (docs/training_gpu) is included: table, figure, per-depth summary."""
    import json
    from pathlib import Path

    tdir = Path(__file__).resolve().parents[1] / "docs" / "training_gpu"
    rep = R.run_report(tmp_path, config=_tiny(), workers=1, progress=False, figures=["fig4"], training=tdir)
    md = (tmp_path / "report.md").read_text()
    assert "Training validation on real data" in md and "| depth |" in md
    assert (tmp_path / "training_accuracy_vs_alpha.png").stat().st_size > 10_000
    summary = json.loads((tdir / "results.json").read_text())["summary"]
    assert set(rep["training"]["per_depth"]) == set(summary) == {"20", "50", "100"}
    assert rep["training"]["per_depth"]["50"]["best_alpha"] == summary["50"]["best_alpha"]
    with pytest.raises(FileNotFoundError, match="results.json"):
        R.run_report(tmp_path, config=_tiny(), workers=1, progress=False, figures=["fig4"], training=tmp_path)
