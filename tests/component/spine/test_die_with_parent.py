"""shared.service.parent: a child armed with die_with_parent gets SIGTERM once its parent
is gone, through prctl or, where prctl is missing, the watch of its parent pid; and a
child whose parent died before it armed signals itself at once (the race)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import running
from tests.support.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(20)

# The middle process starts the armed grandchild, prints its pid and waits to be killed.
MIDDLE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
time.sleep(60)
"""
ARMED = """
import os, sys, time
from shared.service.parent import die_with_parent
print(die_with_parent(os.getppid(), poll_interval=0.05, use_prctl={use_prctl}), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("use_prctl", [True, False])
def test_the_child_ends_with_its_killed_parent(use_prctl: bool) -> None:
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, ARMED.format(use_prctl=use_prctl)], cwd=ROOT,
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert middle.stdout is not None
    pid_text, how = middle.stdout.readline().split()
    child = int(pid_text)
    try:
        assert how == ("prctl" if use_prctl else "poll")
        assert running(child)
        middle.kill()
        middle.wait(5)
        eventually_sync(lambda: not running(child), 10, "the orphan gone", interval=0.05)
    finally:
        middle.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_ends_at_once() -> None:
    # The pid it expects is not its parent: as if the parent died before prctl took effect.
    code = ("import os\nfrom shared.service.parent import die_with_parent\n"
            "die_with_parent(os.getppid() + 1 if os.getppid() > 1 else 2)\n"
            "print('still running')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=10, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == -signal.SIGTERM, done
    assert "still running" not in done.stdout
