"""The team's commit-message rule: a subject of at most 72 characters, a blank line, then a
body that says why.

    python .ci/commit_msg.py FILE          # pre-commit's commit-msg hook (the message file)
    python .ci/commit_msg.py --range A..B  # every non-merge commit in A..B (make lint)

Exit 1 with one line per bad message. Lines starting with ``#`` (git's comments) and
everything from git's scissors line on are not part of the message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MAX_SUBJECT = 72
SCISSORS = "# ------------------------ >8 ------------------------"


def problems(message: str) -> list[str]:
    text = message.split(SCISSORS, 1)[0]
    lines = [line.rstrip() for line in text.splitlines() if not line.startswith("#")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not lines[0].strip():
        return ["empty subject"]
    found = []
    subject = lines[0]
    if len(subject) > MAX_SUBJECT:
        found.append(f"subject is {len(subject)} characters (at most {MAX_SUBJECT})")
    if len(lines) < 3 or lines[1] or not any(line.strip() for line in lines[2:]):
        found.append("no body: a blank line after the subject, then why")
    return found


def _commits(spec: str) -> list[tuple[str, str]]:
    out = subprocess.run(["git", "log", "--no-merges", "--format=%H%x00%B%x01", spec],
                         capture_output=True, text=True, check=True).stdout
    return [(c.split("\0", 1)[0].strip(), c.split("\0", 1)[1])
            for c in out.split("\x01") if "\0" in c]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--range":
        bad = [(sha[:10], p) for sha, msg in _commits(argv[1]) for p in problems(msg)]
    elif len(argv) == 1:
        bad = [("message", p) for p in problems(Path(argv[0]).read_text(errors="replace"))]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for where, problem in bad:
        print(f"{where}: {problem}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
