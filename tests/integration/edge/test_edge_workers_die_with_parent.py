"""An edge with two workers whose supervisor is killed with SIGKILL (it cannot forward
the stop): the workers are told by the kernel (PR_SET_PDEATHSIG) and end too, rather than
running on orphaned with the SIP port."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
from edge_harness import start_edge, stop_process

from tests.support.processes import running
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(30)


def test_workers_end_when_the_supervisor_is_killed() -> None:
    edge = start_edge({"SIPMESH_EDGE_WORKERS": "2"})
    workers: list[int] = []
    try:
        assert edge.proc.stdout is not None
        lines = [edge.lines[0], edge.proc.stdout.readline()]
        assert edge.proc.stdout.readline().startswith("edge workers 2 ready")
        for line in lines:
            words = line.split()
            workers.append(int(words[words.index("pid") + 1]))
        assert all(running(pid) for pid in workers) and edge.proc.pid not in workers
        edge.proc.send_signal(signal.SIGKILL)
        edge.proc.wait(5)
        eventually_sync(lambda: not any(running(pid) for pid in workers), 15,
                        "the workers gone with their supervisor", interval=0.1)
    finally:
        stop_process(edge.proc)
        for pid in workers:  # never leave one behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
