"""The commit-message rule (.ci/commit_msg.py, run by pre-commit and `make lint`)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("commit_msg", ROOT / ".ci" / "commit_msg.py")
assert _spec is not None and _spec.loader is not None
commit_msg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(commit_msg)


def test_a_good_message_passes_and_git_comments_do_not_count() -> None:
    msg = ("edge: answer keep-alives\n\nlinphonec sends CRLF every 30 s.\n"
           "# Please enter the commit message\n")
    assert commit_msg.problems(msg) == []


def test_a_long_subject_or_a_missing_body_is_refused() -> None:
    assert commit_msg.problems("x" * 73 + "\n\nwhy") == [
        "subject is 73 characters (at most 72)"]
    assert commit_msg.problems("x" * 72 + "\n\nwhy") == []
    no_body = "no body: a blank line after the subject, then why"
    assert commit_msg.problems("subject only\n") == [no_body]
    assert commit_msg.problems("subject\nglued body\n") == [no_body]
    assert commit_msg.problems("subject\n\n# only a comment\n") == [no_body]
    assert commit_msg.problems("\n\n") == ["empty subject"]


def test_the_hook_form_exits_1_with_one_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "MSG"
    bad.write_text("y" * 80 + "\n")
    run = subprocess.run([sys.executable, str(ROOT / ".ci" / "commit_msg.py"), str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert run.stderr.splitlines() == ["message: subject is 80 characters (at most 72)",
                                       "message: no body: a blank line after the subject, "
                                       "then why"]
