"""Session-wide guard: no test writes under ``~/.local/state`` (tests/support/state.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.state import changes, home_state_dir, snapshot


@pytest.fixture(scope="session", autouse=True)
def _state_outside_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Points ``XDG_STATE_HOME`` at a temporary directory for the whole session (every
    process a test starts inherits it) and fails if a file under ``~/.local/state`` was
    created, modified or removed meanwhile."""
    home = home_state_dir()
    before = snapshot(home)
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = saved
    written = changes(before, snapshot(home))
    assert not written, f"tests wrote under {home}: {written[:10]}"
