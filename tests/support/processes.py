"""Whether a process is still there, for the tests that kill a parent and expect its
children to end (shared/service/parent.py)."""

from __future__ import annotations

from pathlib import Path


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an orphan's exit is reaped by whoever adopted
    it, maybe never in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
