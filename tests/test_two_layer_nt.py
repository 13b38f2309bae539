"""Issue 13 check: the two-layer mean-field kernel against neural-tangents' NNGP (an independent
implementation, stax Dense -> phi -> Dense inside FanOut/FanInSum) to 1e-8.

neural-tangents lives in the separate environment .bench-venv (benchmarks/README.md); the test
skips when it is absent (CI), and runs benchmarks/nt_two_layer.py there in a subprocess.
"""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import resscale as rs

ROOT = Path(__file__).resolve().parent.parent
NT_PY = ROOT / ".bench-venv" / "bin" / "python"


def _nt_available():
    if not NT_PY.exists():
        return False
    r = subprocess.run([str(NT_PY), "-c", "import neural_tangents"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _nt_available(), reason="neural-tangents not installed in .bench-venv")
@pytest.mark.parametrize("act,sb2", [("erf", 0.0), ("erf", 0.2), ("relu", 0.1)])
def test_two_layer_kernel_matches_neural_tangents(tmp_path, act, sb2):
    X = np.random.default_rng(3).standard_normal((5, 7))
    job = dict(X=X.tolist(), depth=12, alpha=0.4, sigma_w2=1.3, sigma_b2=sb2, sigma_in2=1.1, sigma_bin2=0.05,
               activation=act)
    (tmp_path / "job.json").write_text(json.dumps(job))
    r = subprocess.run([str(NT_PY), str(ROOT / "benchmarks" / "nt_two_layer.py"), str(tmp_path / "job.json")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    K_nt = np.array(json.loads(r.stdout.strip().splitlines()[-1])["K"])
    net = rs.ResNet(depth=12, alpha=0.4, sigma_w2=1.3, sigma_b2=sb2, sigma_in2=1.1, sigma_bin2=0.05,
                    activation=act, block="two_layer")
    K = rs.mean_field_kernel(net, X=X)
    np.testing.assert_allclose(K, K_nt, rtol=1e-8, atol=1e-10)
