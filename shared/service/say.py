"""One line on standard output in one write(2).

Under `sipmesh up` (and in the tests) every child shares the supervisor's stdout, a pipe,
and runs with PYTHONUNBUFFERED=1. There `print(line)` makes two writes, the text and then
the newline, so another process's line can land between them ("media ready ... instances
1endpoint siprec metrics ..." was read as one line, and a test waiting for the second
failed). POSIX makes one write of at most PIPE_BUF bytes (4,096 on Linux) to a pipe atomic,
so a line written in one call never interleaves with another's.
"""

from __future__ import annotations

import sys


def say(line: str) -> None:
    """Writes ``line`` and its newline to stdout in one call, and flushes."""
    stream = sys.stdout
    stream.write(line + "\n")
    stream.flush()
