"""Issue 12 item 5: worker processes of run_tasks / simulate end with their parent (SIGTERM and SIGKILL)."""
import signal
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

SCRIPT = ("import time\n"
          "from resscale.parallel import run_tasks\n"
          "run_tasks(time.sleep, [60.0] * 2, workers=2)\n")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_parent(sig, kill_parent):
    rc = kill_parent(SCRIPT, sig, min_children=2, start_timeout=30.0, settle=3.0, grace=6.0)
    if sig == signal.SIGTERM:
        assert rc == 128 + signal.SIGTERM
