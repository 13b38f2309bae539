"""Issue 12: bad CLI options give a one-line error, exit code 2, no traceback."""
import json

import pytest
from typer.testing import CliRunner

from resscale.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args, needle", [
    (["optimal", "--c0", "1.5", "--no-plot"], "c0"),
    (["optimal", "--q0", "0", "--no-plot"], "q0"),
    (["optimal", "--alpha-min", "1", "--alpha-max", "0.1", "--no-plot"], "--alpha-min"),
    (["optimal", "-b", "feedforward", "--no-plot"], "feedforward"),
    (["optimal", "--n-grid", "2", "--no-plot"], "n_grid"),
    (["optimal", "--plot", "/nonexistent/dir/x.png", "-L", "5"], "--plot"),
    (["simulate", "--out", "{tmp}/s", "--width", "8", "--networks", "2", "--workers", "-1"], "--workers"),
    (["simulate", "--out", "{tmp}/s", "--width", "8", "--networks", "2", "--depth", "200", "--alpha", "100",
      "--activation", "relu", "--no-progress"], "alpha = 100"),
    (["simulate", "--out", "{tmp}/s", "--width", "0", "--networks", "2"], "width"),
    (["finite", "--c0", "2"], "c0"),
    (["kernel", "{tmp}/missing.npy"], "does not exist"),
])
def test_cli_bad_options_one_line_exit_2(tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    err = r.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and needle in err[0], r.output
    assert "Traceback" not in r.output


def test_cli_version_and_gelu_optimal(tmp_path):
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("resscale ")
    r = runner.invoke(app, ["optimal", "-a", "gelu", "-L", "10", "--no-plot", "--json", "--n-grid", "40"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["alpha_analytic"] is not None and d["alpha"] is not None


def test_cli_finite_json_is_valid_json():
    r = runner.invoke(app, ["finite", "--block", "reduced", "--depth", "3", "--json"])
    assert r.exit_code == 0, r.output
    json.loads(r.output)  # no bare NaN


def test_cli_kernel_reads_whitespace_txt(tmp_path):
    p = tmp_path / "k0.txt"
    p.write_text("1 0.5\n0.5 1\n")
    r = runner.invoke(app, ["kernel", str(p), "--k0", "-L", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)["kernel"]) == 2
