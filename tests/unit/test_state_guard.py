"""The session guard of tests/conftest.py: state files never land in the real home."""

from __future__ import annotations

import os
from pathlib import Path

from services.edge.keyfile import state_secret
from tests.support.state import changes, home_state_dir, private_state, snapshot


def test_the_session_points_state_at_a_temporary_directory() -> None:
    state = Path(os.environ["XDG_STATE_HOME"])
    assert state.is_dir()
    assert not state.resolve().is_relative_to(home_state_dir().resolve())


def test_a_service_default_file_lands_in_the_session_directory() -> None:
    before = snapshot(home_state_dir())
    state_secret()  # the edge's default: $XDG_STATE_HOME/sipmesh/edge-rr.key
    assert (Path(os.environ["XDG_STATE_HOME"]) / "sipmesh" / "edge-rr.key").is_file()
    assert changes(before, snapshot(home_state_dir())) == []


def test_snapshot_sees_created_modified_and_removed_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "gone").write_text("x")
    before = snapshot(tmp_path)
    (tmp_path / "a").write_text("22")
    (tmp_path / "gone").unlink()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new").write_text("n")
    assert changes(before, snapshot(tmp_path)) == sorted(
        str(tmp_path / p) for p in ("a", "gone", "sub/new"))


def test_private_state_sets_and_creates_the_directory(tmp_path: Path) -> None:
    env = private_state({"PATH": "/bin"}, tmp_path / "node1-state")
    assert env == {"PATH": "/bin", "XDG_STATE_HOME": str(tmp_path / "node1-state")}
    assert (tmp_path / "node1-state").is_dir()
