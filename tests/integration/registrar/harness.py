"""A real registrar process next to a real edge (tests/integration/edge/edge_harness.py).

Ready means: the registrar printed `registrar ready grpc HOST:PORT ...` (its gRPC server and
MI are up); nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Seconds for the process to say it is ready: imports alone took over 20 s at a load
# average of 14 on the shared 2-core box; start-up is not what the tests measure.
START_TIMEOUT = 60.0
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


@dataclass
class Registrar:
    proc: subprocess.Popen[str]
    grpc: str = ""
    http: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def mi(self) -> str:
        return f"{self.http}/mi"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_registrar(store: Path | str, env_extra: dict[str, str] | None = None) -> Registrar:
    env = dict(os.environ)
    env.pop("SIPMESH_CONFIG", None)
    env.update({
        "SIPMESH_REGISTRAR_STORE": str(store),
        "SIPMESH_REGISTRAR_UVLOOP": "false",
        "PYTHONPATH": str(ROOT),
    })
    env.update(env_extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "services.registrar"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    reg = Registrar(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if "registrar ready" not in line:
        reg.stop()
        raise RuntimeError(f"registrar did not start: {line!r}")
    words = line.split()
    reg.grpc = words[words.index("grpc") + 1]
    reg.http = words[words.index("http") + 1]
    reg.lines.append(line)
    return reg


def add_user(store: Path | str, aor: str, password: str) -> None:
    add_users(store, {aor: password})


# ``sipmesh user add`` once per AOR, all in one interpreter: a tenth of a second each instead
# of a Python start-up each (seconds on the loaded shared box).
_ADD_USERS = """
import sys
from sipmesh.cli.main import build_app
store, *pairs = sys.argv[1:]
app = build_app()
for aor, password in zip(pairs[::2], pairs[1::2]):
    app(["user", "add", aor, password, "--store", store], standalone_mode=False)
"""


def add_users(store: Path | str, users: dict[str, str]) -> None:
    """Adds the subscribers ``users`` (AOR -> password) with the ``sipmesh user add``
    command, in one process."""
    pairs = [item for aor, password in users.items() for item in (aor, password)]
    out = subprocess.run([sys.executable, "-c", _ADD_USERS, str(store), *pairs],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"added {aor}" for aor in users], out.stdout
