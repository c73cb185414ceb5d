"""Running the edge and sipp as real processes for the integration tests.

Nothing here sleeps to synchronise: the edge is ready when it printed its `edge ready`
line and answers an OPTIONS ping with 200; a sipp UAS is ready when its socket shows up
bound in /proc/net; a sipp UAC is done when it exits.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ports import reserve_port
from tests.support.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[3]
# Seconds for the process to say it is ready: imports alone took over 20 s at a load
# average of 14 on the shared 2-core box; start-up is not what the tests measure.
START_TIMEOUT = 60.0
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"


def free_port() -> int:
    """A port for a peer (sipp, a phone, an edge), free for UDP and TCP on 127.0.0.1 and
    reserved race-free for this test run (tests/support/ports.py)."""
    return reserve_port()


def is_bound(port: int, proto: str) -> bool:
    """True once something listens on 127.0.0.1:port (/proc/net/udp or tcp LISTEN)."""
    want = f"0100007F:{port:04X}"
    with open(f"/proc/net/{proto}") as fh:
        for line in fh.readlines()[1:]:
            parts = line.split()
            if parts[1] == want and (proto == "udp" or parts[3] == "0A"):
                return True
    return False


wait_until = eventually_sync  # the tests' one polling helper (tests/support/waiting.py)


def options_ping(host: str, port: int, timeout: float = 0.3) -> int | None:
    """Send an OPTIONS to the proxy itself over UDP; return the status code or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-ping{time.monotonic_ns()}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=p\r\n"
            f"To: <sip:{host}:{port}>\r\nCall-ID: ping-{time.monotonic_ns()}\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(msg, (host, port))
        s.settimeout(timeout)
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            return None
        return int(data.split(b" ", 2)[1])


def worker_statistic(urls: Sequence[str], name: str) -> list[int]:
    """Statistic `name` (e.g. core:rcv_requests) of each edge worker, by its MI URL."""
    counts = []
    for url in urls:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "get_statistics",
                           "params": {"statistics": [name]}})
        req = urllib.request.Request(f"{url}/mi", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            counts.append(int(json.loads(resp.read())["result"][name]))
    return counts


def stop_process(proc: subprocess.Popen[Any], grace: float = 5) -> int:
    """SIGTERM, then SIGKILL if `proc` still runs after `grace` seconds; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@dataclass
class Edge:
    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    log: Path | None = None  # the edge's stderr (structured log lines)

    final_log: str = ""

    def log_text(self) -> str:
        if self.log is None:
            return self.final_log
        return self.log.read_text(errors="replace")

    def tracebacks(self) -> list[str]:
        """Log lines that start a Python traceback (none may appear, whatever the input)."""
        return [ln for ln in self.log_text().splitlines() if "Traceback (most recent" in ln]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        """Base URL of /metrics, /health and /mi (from the `edge ready` line)."""
        words = self.lines[0].split()
        return words[words.index("http") + 1]

    def stop(self) -> int:
        code = stop_process(self.proc, grace=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.log is not None:  # kept in memory for teardown checks, the file removed
            self.final_log = self.log_text()
            self.log.unlink(missing_ok=True)
            self.log = None
        return code


LOOPS = ("uvloop", "asyncio")  # uvloop is what users run (the default); asyncio the fallback


def start_edge(env_extra: dict[str, str] | None = None, *, extra_path: Sequence[str] = (),
               loop: str = "uvloop", preexec: Any = None, host: str = "127.0.0.1") -> Edge:
    """An edge listening on `host` (0.0.0.0: every address) at a reserved port."""
    port = free_port()
    env = dict(os.environ)
    env.pop("SIPMESH_CONFIG", None)
    env.update({
        "SIPMESH_EDGE_LISTEN": f"udp:{host}:{port},tcp:{host}:{port}",
        "SIPMESH_EDGE_T1": "0.1",
        "SIPMESH_EDGE_TIMER_C": "3",
        "SIPMESH_EDGE_UVLOOP": "true" if loop == "uvloop" else "false",
        # A key of the test's own: the default (a key file in $XDG_STATE_HOME) is for users
        # and is exercised by the tests running `make run`'s defaults in a namespace.
        "SIPMESH_EDGE_RR_SECRET": os.urandom(16).hex(),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *extra_path]),
    })
    env.update(env_extra or {})
    log = Path(tempfile.mkstemp(prefix="edge-", suffix=".log")[1])
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.edge"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=preexec)
    edge = Edge(proc, port, log=log)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if "edge ready" not in line:
        edge.stop()
        raise RuntimeError(f"edge did not start: {line!r}")
    edge.lines.append(line)
    wait_until(lambda: options_ping("127.0.0.1", port) == 200, 10, "edge OPTIONS 200")
    return edge


class Sipp:
    """sipp processes of one test; background ones are stopped by pid at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.background: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def _scenario(name: str) -> list[str]:
        if name.endswith(".xml"):
            return ["-sf", str(SCENARIOS / name)]
        return ["-sn", name]

    def uas(self, scenario: str, port: int, *, transport: str = "u1",
            extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        cmd = ["sipp", *self._scenario(scenario), "-i", "127.0.0.1", "-p", str(port),
               "-t", transport, "-nostdin", "-bind_local", *extra]
        proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.background.append(proc)
        proto = "udp" if transport.startswith("u") else "tcp"
        wait_until(lambda: is_bound(port, proto) or proc.poll() is not None, 10,
                   f"sipp UAS on {port}")
        assert proc.poll() is None, f"sipp UAS exited early: {cmd}"
        return proc

    def uac(self, scenario: str, edge: Edge, target: str, *, calls: int = 1,
            rate: int = 10, transport: str = "u1", timeout: int = 30, service: str = "service",
            extra: Sequence[str] = ()) -> subprocess.CompletedProcess[bytes]:
        port = free_port()
        cmd = ["sipp", *self._scenario(scenario), "-i", "127.0.0.1", "-p", str(port),
               "-t", transport, "-rsa", edge.address, target, "-s", service, "-m", str(calls),
               "-r", str(rate), "-d", "0", "-nostdin", "-timeout", f"{timeout}s",
               "-timeout_error", "-trace_err", "-error_file", str(self.workdir / "uac_err.log"),
               *extra]
        return subprocess.run(cmd, cwd=self.workdir, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout + 30)

    def uac_background(self, scenario: str, edge: Edge, target: str, *, calls: int = 1,
                       rate: int = 10, transport: str = "u1", timeout: int = 30,
                       service: str = "service") -> subprocess.Popen[bytes]:
        """A sipp UAC running while the test does something else; `wait()` for its code."""
        port = free_port()
        cmd = ["sipp", *self._scenario(scenario), "-i", "127.0.0.1", "-p", str(port),
               "-t", transport, "-rsa", edge.address, target, "-s", service,
               "-m", str(calls), "-r", str(rate), "-d", "0", "-nostdin",
               "-timeout", f"{timeout}s", "-timeout_error"]
        proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.background.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.background:
            stop_process(proc)


def sipp_errors(workdir: Path, last: int = 20, name: str = "uac_err.log") -> str:
    """The last `last` entries of a sipp `-trace_err` file (the UAC's by default) that
    failed a call: entries about dead calls (a retransmitted response after the call
    ended) are left out."""
    path = workdir / name
    if not path.exists():
        return "(no sipp error file)"
    text = path.read_text(errors="replace")
    # After a header line, every entry starts with "<date>\t<time>\t<epoch>: " and spans
    # several lines; one quoting a message ends with the quote ("...'\n'2026-...").
    entries = re.split(r"\n'?(?=\d{4}-\d\d-\d\d\t)", text)[1:]
    failed = [e for e in entries if "Dead call" not in e]
    return "\n".join([f"[{len(failed)} sipp error entries besides dead calls; the last "
                      f"{min(last, len(failed))}:]", *failed[-last:]])


def summary(result: subprocess.CompletedProcess[bytes]) -> str:
    text = result.stdout.decode(errors="replace")
    lines = [ln for ln in text.splitlines() if "call" in ln.lower() or "error" in ln.lower()]
    return "\n".join(lines[-12:])
