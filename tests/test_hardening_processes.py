"""Issue 12 item 5: worker processes of run_tasks / simulate end with their parent (SIGTERM and SIGKILL)."""
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

SCRIPT = ("import time\n"
          "from resscale.parallel import run_tasks\n"
          "run_tasks(time.sleep, [60.0] * 2, workers=2)\n")


def _children(pid):
    """PIDs whose parent is ``pid`` (from /proc), excluding zombies."""
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


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_parent(sig):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        kids = []
        while time.time() - t0 < 30:  # two spawned workers (+ the resource tracker) and their initializer ran
            kids = _children(proc.pid)
            if len(kids) >= 2:
                time.sleep(3.0)  # let the workers import resscale and run the initializer
                kids = _children(proc.pid)
                break
            time.sleep(0.2)
        assert len(kids) >= 2, f"workers did not start: {proc.stderr.read() if proc.poll() is not None else ''}"
        os.kill(proc.pid, sig)
        proc.wait(10)
        t1 = time.time()
        while time.time() - t1 < 6 and any(_alive(k) for k in kids):
            time.sleep(0.1)
        left = [k for k in kids if _alive(k)]
        assert not left, f"processes {left} outlived their parent by 6 s"
        if sig == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
