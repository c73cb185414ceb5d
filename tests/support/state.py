"""Keeping services' state files out of the engineer's home during tests.

Every service writes its default files under ``$XDG_STATE_HOME/sipmesh`` (falling back
to ``~/.local/state``): the edge's ``edge-rr.key``, the registrar's subscriber store, the
dialog/media/... SQLite files. ``tests/conftest.py`` points ``XDG_STATE_HOME`` at a
session temporary directory (so any process a test starts inherits it) and fails the
session if anything under ``~/.local/state`` changed; the process harnesses give each
process a directory of its own with :func:`private_state`.
"""

from __future__ import annotations

import os
from pathlib import Path


def home_state_dir() -> Path:
    """Where a service writes when ``XDG_STATE_HOME`` is not set."""
    return Path.home() / ".local" / "state"


def private_state(env: dict[str, str], directory: Path) -> dict[str, str]:
    """``env`` with ``XDG_STATE_HOME`` set to ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    env["XDG_STATE_HOME"] = str(directory)
    return env


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime (ns): what a write changes."""
    found: dict[str, tuple[int, int]] = {}
    if not root.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:  # removed meanwhile
                continue
            found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """Files created, modified or removed between two snapshots."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
