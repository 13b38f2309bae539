import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def sqrtm_psd(C):
    """Symmetric square root of a (batch of) PSD matrices (negative rounding eigenvalues clipped)."""
    lam, U = np.linalg.eigh(C)
    return (U * np.sqrt(np.maximum(lam, 0.0))[..., None, :]) @ np.swapaxes(U, -1, -2)


def simulate_inline(net, K0, width, n_networks, seed=0):
    """Tiny independent reference simulator of the SPEC family (tests only).

    h^0_i ~ N(0, K0) i.i.d. over neurons; returns Khat^L for each network (S, P, P).
    """
    rng = np.random.default_rng(seed)
    P = K0.shape[0]
    w, V = np.linalg.eigh(K0)
    root = V * np.sqrt(np.clip(w, 0, None))
    out = np.empty((n_networks, P, P))
    phi = net.phi.fn
    for s in range(n_networks):
        h = rng.standard_normal((width, P)) @ root.T
        for _ in range(net.depth):
            W = rng.standard_normal((width, width)) * np.sqrt(net.sigma_w2 / width)
            b = rng.standard_normal((width, 1)) * np.sqrt(net.sigma_b2)
            if net.block == "full":
                h = h + net.alpha * (W @ phi(h) + b)
            elif net.block == "reduced":
                h = h + net.alpha * phi(W @ h + b)
            else:
                h = W @ phi(h) + b
        out[s] = h.T @ h / width
    return out


# ------------------------------------------------------------------ processes (issue 12 item 5)
def proc_children(pid):
    """PIDs whose parent is ``pid`` (from /proc, Linux), excluding zombies."""
    import os

    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d))
    return out


def proc_alive(pid):
    """Whether ``pid`` runs (exists and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_parent_and_check_children(script, sig, *, min_children=2, start_timeout=30.0, settle=3.0, grace=6.0):
    """Run ``script`` (python -c), wait for ``min_children`` child processes (and ``settle`` s more for
    their initializers), send ``sig`` to the parent, and assert that every child ends within ``grace``
    s. Returns the parent's exit code. Cleans up (SIGKILL) whatever is left if the check fails."""
    import os
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kids = []
    try:
        t0 = time.time()
        while time.time() - t0 < start_timeout:
            kids = proc_children(proc.pid)
            if len(kids) >= min_children:
                time.sleep(settle)
                kids = proc_children(proc.pid)
                break
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        assert len(kids) >= min_children, \
            f"workers did not start: {proc.stderr.read() if proc.poll() is not None else ''}"
        os.kill(proc.pid, sig)
        proc.wait(10)
        t1 = time.time()
        while time.time() - t1 < grace and any(proc_alive(k) for k in kids):
            time.sleep(0.1)
        left = [k for k in kids if proc_alive(k)]
        assert not left, f"processes {left} outlived their parent by {grace:g} s"
        return proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in kids:  # only if the check failed: no orphans left behind by the test itself
            if proc_alive(k):
                try:
                    os.kill(k, 9)
                except OSError:
                    pass


@pytest.fixture
def kill_parent():
    """:func:`kill_parent_and_check_children` as a fixture (shared by the process tests)."""
    return kill_parent_and_check_children


def record_replace(monkeypatch):
    """Record every os.replace (src, dst) of the test while still performing it (atomic-write checks)."""
    calls = []
    real = os.replace

    def replace(src, dst, *a, **k):
        calls.append((os.fspath(src), os.fspath(dst)))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def validate_finite_width():
    """The Monte-Carlo machinery of scripts/validate_finite_width.py (exact finite-N dynamics with
    control variates, 1/N extrapolation), shared by the statistical tests."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
    import validate_finite_width as vf

    return vf
