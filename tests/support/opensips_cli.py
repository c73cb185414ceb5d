"""``opensips-cli`` as the tests run it: the installed console script, unchanged, its start-up
paid once per test session instead of once per call.

A run of ``opensips-cli`` costs ~0.7 s on the CI box, nearly all of it the imports its
modules make at start (SQLAlchemy for its database module) before it sends one MI request.
:func:`run` hands the arguments to a small server process that imported opensips-cli once
and forks for each call; the fork executes the console script itself (``bin/opensips-cli``,
``runpy``) with that ``argv``, stdin on /dev/null and stdout/stderr in files, exactly as a
fresh ``subprocess.run([opensips-cli, *args], capture_output=True)``, and nothing of one
call outlives it (its own process, exited). The answer is a
:class:`subprocess.CompletedProcess` like subprocess.run's.
tests/unit/test_support.py checks that both give the same output and exit code.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "opensips-cli"

# The server: one request per stdin line (JSON: argv, out, err, timeout), one answer per
# stdout line (the exit code of that call's forked child). Single-threaded, so forking is safe.
_SERVER = r"""
import json, os, runpy, signal, sys
import opensipscli.main  # the start-up every call would otherwise pay

script = sys.argv[1]
answers = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(req["out"], os.O_WRONLY | os.O_TRUNC), 1)
        os.dup2(os.open(req["err"], os.O_WRONLY | os.O_TRUNC), 2)
        signal.alarm(max(1, int(req["timeout"])))  # default action: the child dies
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        sys.argv = [script, *req["argv"]]
        code = 0
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exc:  # what the interpreter does with it at exit
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code & 0xFF)
    _, status = os.waitpid(pid, 0)
    answers.write(json.dumps(os.waitstatus_to_exitcode(status)) + "\n")
    answers.flush()
"""


class _Server:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.dir = tempfile.TemporaryDirectory(prefix="opensips-cli-")
        atexit.register(self.close)

    def _started(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER, str(SCRIPT)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, bufsize=1)
        return self.proc

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        with self.lock:
            proc = self._started()
            assert proc.stdin is not None and proc.stdout is not None
            out, err = Path(self.dir.name, "out"), Path(self.dir.name, "err")
            out.write_bytes(b"")
            err.write_bytes(b"")
            try:
                proc.stdin.write(json.dumps({"argv": args, "out": str(out), "err": str(err),
                                             "timeout": timeout}) + "\n")
                proc.stdin.flush()
                answer = proc.stdout.readline()
            except BaseException:  # a test's time-out: never read this answer as the next
                proc.kill()
                proc.wait()
                raise
            if not answer:
                raise RuntimeError(f"the opensips-cli server exited ({proc.poll()})")
            code = json.loads(answer)
            if code == -14:  # SIGALRM: as subprocess.run's timeout
                raise subprocess.TimeoutExpired([str(SCRIPT), *args], timeout)
            return subprocess.CompletedProcess(
                [str(SCRIPT), *args], code, out.read_text(errors="replace"),
                err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.dir.cleanup()


_server = _Server()


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([opensips-cli, *args], capture_output=True, text=True,
    timeout=timeout)``, without its start-up."""
    return _server.run(list(args), timeout)


def mi(url: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``opensips-cli -o communication_type=http -o url=URL -x mi CMD...``."""
    return run("-o", "communication_type=http", "-o", f"url={url}", "-x", "mi", *cmd,
               timeout=timeout)
