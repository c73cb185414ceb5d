"""`sipmesh up` on `make run`'s defaults inside a network namespace of the test's own.

Nothing is configured (no `SIPMESH_*` variable, no file): gateway on 127.0.0.1:8888, edge
on 127.0.0.1:5060, registrar, embedded discovery, exactly as a new user runs it, while the
namespace keeps those ports private to the test.  State (subscribers, the edge's key) goes
to `XDG_STATE_HOME` in the test's temporary directory.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.netns import NetNs

BIN = Path(sys.executable).parent


@dataclass
class Mesh:
    ns: NetNs
    env: dict[str, str]
    tmp: Path
    up: subprocess.Popen[str] | None = None
    lines: list[str] | None = None  # what `sipmesh up` printed so far

    def expect(self, prefix: str, timeout: float = 30) -> str:
        """The next stdout line of `sipmesh up` starting with `prefix`."""
        assert self.up is not None and self.up.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line {prefix!r}: {self.lines}"
            ready, _, _ = select.select([self.up.stdout], [], [], left)
            if ready:
                line = self.up.stdout.readline().strip()
                assert line, "sipmesh up exited"
                (self.lines if self.lines is not None else []).append(line)
                if line.startswith(prefix):
                    return line

    def rpc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.ns.run([str(BIN / "sipmesh"), "rpc", *args], env=self.env, text=True)

    def registered(self, aor: str) -> bool:
        done = self.rpc("--json", "ul_show_contact", "location", aor)
        return done.returncode == 0 and aor in done.stdout

    def contacts(self, aor: str) -> str:
        return self.rpc("--json", "ul_show_contact", "location", aor).stdout


def defaults_env(tmp: Path) -> dict[str, str]:
    """The environment of a new user: no SIPMESH_* setting at all; state in the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPMESH_")}
    env.update(XDG_STATE_HOME=str(tmp / "state"), HOME=str(tmp / "home"))
    return env


@contextmanager
def default_mesh(tag: str, tmp: Path, users: Mapping[str, str],
                 addresses: tuple[str, ...] = ()) -> Iterator[Mesh]:
    env = defaults_env(tmp)
    for aor, password in users.items():
        added = subprocess.run([str(BIN / "sipmesh"), "user", "add", aor, password], env=env,
                               capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
    with NetNs(tag) as ns:
        for address in addresses:
            ns.add_address(address)
        stderr = tmp / "mesh.stderr"
        up = ns.popen([str(BIN / "sipmesh"), "up"], env=env, stdout=subprocess.PIPE,
                      stderr=stderr.open("w"), text=True)
        seen: list[str] = []
        deadline = time.monotonic() + 60
        assert up.stdout is not None
        while not ({"registrar", "edge"} <= {ln.split()[1] for ln in seen
                                             if ln.startswith("endpoint ")}):
            left = deadline - time.monotonic()
            assert left > 0, f"mesh not up: {seen}"
            ready, _, _ = select.select([up.stdout], [], [], left)
            if ready:
                line = up.stdout.readline()
                assert line, f"sipmesh up exited: {seen}"
                seen.append(line.strip())
        assert "endpoint edge sip sip:127.0.0.1:5060;transport=udp" in seen
        yield Mesh(ns, env, tmp, up, seen)
        ns.stop(up)
        assert "Traceback" not in stderr.read_text(), stderr.read_text()[-4000:]
