"""Issue 12: a small fuzz of the CLI (typer CliRunner, in-process).

Every case is one ``resscale <command>`` call from a cheap valid baseline with ONE option replaced
by an invalid value (wrong type, NaN/inf, out of range, unknown choice, empty, huge). The property:

* the exit code is non-zero (2 for our one-line ``Error: ...``, 2 for Click's usage errors);
* the output names the option (``--sigma-w2``, or the parameter ``sigma_w2`` / ``sigma-w2``);
* no Python traceback (no ``Traceback`` in the output, and no exception other than SystemExit
  escaped the command).

All cases fail at validation, before any computation: ~3 s in all.
"""
from __future__ import annotations

import numpy as np
import pytest

typer_testing = pytest.importorskip("typer.testing")

from resscale.cli import app  # noqa: E402

INT_BAD = ["abc", "1.5", "", "nan", "1e3x"]
POS_INT_BAD = INT_BAD + ["0", "-1"]
DEPTH_BAD = POS_INT_BAD + ["10000000000"]           # > inputs.MAX_DEPTH (10**6)
NONNEG_BAD = ["abc", "", "nan", "inf", "-inf", "-1", "1e400"]
C0_BAD = ["abc", "nan", "1.5", "-2", "inf"]
Q0_BAD = ["abc", "nan", "inf", "0", "-1"]
ACT_BAD = ["sigmoid", "", "er f"]
BLOCK_BAD = ["resnet", ""]

COMMON_NET = {"--depth": DEPTH_BAD, "--sigma-w2": NONNEG_BAD, "--sigma-b2": NONNEG_BAD,
              "--activation": ACT_BAD, "--block": BLOCK_BAD}

# command -> (baseline options, {option: invalid values})
COMMANDS = {
    "kernel": (["--k0", "-L", "3"],
               {**COMMON_NET, "--alpha": NONNEG_BAD, "--sigma-in2": NONNEG_BAD, "--sigma-bin2": NONNEG_BAD}),
    "optimal": (["--depth", "10", "--n-grid", "16", "--no-plot", "--json"],
                {**COMMON_NET, "--c0": C0_BAD, "--q0": Q0_BAD, "--width": POS_INT_BAD,
                 "--alpha-min": ["abc", "nan", "0", "-1", "1e400"], "--alpha-max": ["abc", "nan", "inf", "1e-9"],
                 "--n-grid": ["abc", "2", "0", "-5", "1.5"], "--block": BLOCK_BAD + ["feedforward"]}),
    "finite": (["--depth", "3", "--json"],
               {**COMMON_NET, "--alpha": NONNEG_BAD, "--c0": C0_BAD, "--q0": Q0_BAD, "--width": POS_INT_BAD,
                "--method": ["fast", "", "EXACT"]}),
    "simulate": (["--width", "4", "--networks", "2", "--depth", "2", "--no-progress", "--workers", "1"],
                 {**COMMON_NET, "--alpha": NONNEG_BAD, "--width": POS_INT_BAD, "--networks": POS_INT_BAD + ["1e308"],
                  "--c0": C0_BAD, "--q0": Q0_BAD, "--seed": ["abc", "-1", "1.5"],
                  "--backend": ["jax", ""], "--dtype": ["float16", "int"], "--method": ["fast"],
                  "--chunk-size": POS_INT_BAD, "--workers": ["abc", "-1", "1.5"]}),
}
OPTION_LIMIT = {"--depth": ["depth"], "--networks": ["networks", "n_networks"]}


def _names(option):
    base = option.lstrip("-")
    return {option, base, base.replace("-", "_"), *OPTION_LIMIT.get(option, [])}


CASES = [(cmd, opt, val) for cmd, (_, opts) in COMMANDS.items() for opt, vals in opts.items() for val in vals]


@pytest.fixture(scope="module")
def k0_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli_fuzz") / "k0.npy"
    np.save(p, np.array([[1.0, 0.5], [0.5, 1.0]]))
    return str(p)


def _args(cmd, option, value, k0_file, tmp_path):
    base, _ = COMMANDS[cmd]
    args = [cmd]
    if cmd == "kernel":
        args.append(k0_file)
    if cmd == "simulate":
        args += ["--out", str(tmp_path / "run")]
    args += list(base)
    if option in base:  # the replaced option overrides the baseline's value
        i = base.index(option)
        args = args[:len(args) - len(base)] + base[:i] + base[i + 2:]
    return args + [option, value]


@pytest.mark.parametrize("cmd,option,value", CASES, ids=[f"{c}{o}={v!r}" for c, o, v in CASES])
def test_cli_bad_option_is_a_clear_error(cmd, option, value, k0_file, tmp_path):
    r = typer_testing.CliRunner().invoke(app, _args(cmd, option, value, k0_file, tmp_path),
                                         env={"COLUMNS": "250", "RESSCALE_MAX_MEMORY_GB": "4"})
    out = r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        f"raw exception {type(r.exception).__name__}: {r.exception}"
    assert r.exit_code != 0, f"exit 0 for {option} {value!r}: {out[-500:]}"
    assert "Traceback" not in out, out[-2000:]
    assert any(n in out for n in _names(option)), f"message does not name {option}: {out[-800:]}"


def test_baselines_are_valid(k0_file, tmp_path):
    """The fuzz is meaningful only if each baseline itself succeeds."""
    for cmd, (base, _) in COMMANDS.items():
        args = [cmd] + ([k0_file] if cmd == "kernel" else []) + \
            (["--out", str(tmp_path / "base")] if cmd == "simulate" else []) + list(base)
        r = typer_testing.CliRunner().invoke(app, args, env={"COLUMNS": "250"})
        assert r.exit_code == 0, f"{cmd}: {r.output[-1000:]}"
