"""The CLI runs on defaults, prints JSON, reads data files and fails cleanly on bad input."""
import json

import numpy as np
from typer.testing import CliRunner

import resscale as rs
from resscale.cli import app

runner = CliRunner()


def test_optimal_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["optimal"])
    assert r.exit_code == 0, r.output
    assert "alpha*" in r.output and (tmp_path / "resscale_optimal.png").stat().st_size > 10_000


def test_optimal_json_matches_api(tmp_path):
    r = runner.invoke(app, ["optimal", "--json", "--depth", "50", "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    ref = rs.optimal_alpha(rs.ResNet(depth=50), 0.9)
    assert out["alpha"] == ref.alpha and out["alpha_analytic"] == ref.alpha_analytic
    assert out["sensitivity"] == ref.sensitivity and out["network"]["depth"] == 50


def test_kernel_from_csv_and_npy(tmp_path):
    X = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]])
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    np.save(tmp_path / "x.npy", X)
    ref = rs.mean_field_kernel(rs.ResNet(depth=7, alpha=0.3), X=X)
    for name in ("x.csv", "x.npy"):
        r = runner.invoke(app, ["kernel", str(tmp_path / name), "--depth", "7", "--alpha", "0.3", "--json"])
        assert r.exit_code == 0, r.output
        np.testing.assert_allclose(json.loads(r.output)["kernel"], ref, rtol=1e-12)


def test_cli_bad_input_names_the_parameter(tmp_path):
    r = runner.invoke(app, ["optimal", "--c0", "2", "--no-plot"])
    assert r.exit_code == 2 and "c0" in r.output
    r = runner.invoke(app, ["optimal", "--activation", "swish", "--no-plot"])
    assert r.exit_code == 2 and "activation" in r.output
    r = runner.invoke(app, ["kernel", str(tmp_path / "missing.npy")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_one_array_reader_for_every_command(tmp_path):
    """commands/_files.read_array: the loader of kernel, simulate and optimal --data (errors name the option)."""
    import numpy as np
    import pytest

    from resscale.commands._files import read_array

    A = np.array([[1.0, 0.5], [0.5, 2.0]])
    np.save(tmp_path / "a.npy", A)
    (tmp_path / "a.csv").write_text("x,y\n1,0.5\n0.5,2\n")
    (tmp_path / "a.txt").write_text("1 0.5\n0.5 2\n")
    (tmp_path / "b.txt").write_text("1,0.5\n0.5,2\n")
    assert np.array_equal(read_array(tmp_path / "a.npy", "--x"), A)
    assert np.array_equal(read_array(tmp_path / "a.csv", "--x", csv_header=True), A)
    assert np.array_equal(read_array(tmp_path / "a.txt", "--x"), A)
    assert np.array_equal(read_array(tmp_path / "b.txt", "--x"), A)
    with pytest.raises(ValueError, match="--x: cannot read .* as numeric CSV"):
        read_array(tmp_path / "a.csv", "--x")          # header not allowed here
    with pytest.raises(ValueError, match=r"--d: expected a \.npy or \.csv file"):
        read_array(tmp_path / "a.txt", "--d", (".npy", ".csv"))
    with pytest.raises(ValueError, match="--k: file not found"):
        read_array(tmp_path / "missing.npy", "--k")
