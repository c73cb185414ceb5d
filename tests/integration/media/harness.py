"""Real rtpengine daemons and media brokers for the media tests.

rtpengine 10.5 (Debian `rtpengine-daemon`) runs in userspace (`--table=-1`), on loopback,
with an ng port and a media port range of its own, in the foreground; it is ready when it
answers an ng `ping`.  A broker is ready when it printed `media ready grpc ...`.  Every
process is stopped by its pid (SIGKILL for rtpengine, as the tests kill it anyway).
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.media.ng import decode, encode
from tests.integration.edge.edge_harness import stop_process, wait_until

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ng(port: int, message: dict[str, Any], timeout: float = 1.0) -> dict[str, Any] | None:
    """One ng command straight to rtpengine (the tests' own view of the daemon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        cookie = f"t{os.getpid()}_{time.monotonic_ns()}"
        s.sendto(encode(cookie, message), ("127.0.0.1", port))
        try:
            data = s.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
        return decode(data)[1]


@dataclass
class RtpEngine:
    """One rtpengine daemon; `start()` again after `kill()` reuses its ports."""

    workdir: Path
    ng_port: int = field(default_factory=free_udp_port)
    port_min: int = 0
    port_max: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.port_min:
            # 200 media ports somewhere in 30000-44999; rtpengine skips ports in use.
            self.port_min = random.randrange(30000, 44800, 200)
            self.port_max = self.port_min + 199

    @property
    def url(self) -> str:
        return f"udp:127.0.0.1:{self.ng_port}"

    def start(self) -> RtpEngine:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"rtpengine-{self.ng_port}.log", "ab")
        self.proc = subprocess.Popen(
            ["rtpengine", "--config-file=none", "--table=-1", "--interface=127.0.0.1",
             f"--listen-ng=127.0.0.1:{self.ng_port}", f"--port-min={self.port_min}",
             f"--port-max={self.port_max}", "--delete-delay=0", "--foreground",
             "--log-stderr", "--log-level=5",
             f"--pidfile={self.workdir / f'rtpe-{self.ng_port}.pid'}"],
            stdout=log, stderr=log)
        log.close()
        wait_until(lambda: self.proc is not None and (
            self.proc.poll() is not None or (ng(self.ng_port, {"command": "ping"}, 0.2) or {})
            .get("result") == "pong"), 15, f"rtpengine on {self.ng_port}")
        assert self.proc.poll() is None, "rtpengine exited at start"
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def calls(self) -> list[str]:
        reply = ng(self.ng_port, {"command": "list"}) or {}
        return [str(c) for c in reply.get("calls", [])]

    def in_range(self, port: int) -> bool:
        return self.port_min <= port <= self.port_max


@dataclass
class Broker:
    proc: subprocess.Popen[str]
    line: str = ""

    def word_after(self, key: str) -> str:
        words = self.line.split()
        return words[words.index(key) + 1]

    @property
    def grpc(self) -> str:
        return self.word_after("grpc")

    @property
    def mi(self) -> str:
        return f"{self.word_after('http')}/mi"

    def stop(self) -> int:
        return stop_process(self.proc, grace=10)


def start_broker(db: Path | str, env_extra: dict[str, str] | None = None, *,
                 log: Path | None = None) -> Broker:
    """A broker on `db`; its stderr is appended to `log` when given (else discarded)."""
    env = dict(os.environ)
    env.pop("SIPMESH_CONFIG", None)
    env.update({"SIPMESH_MEDIA_DB_URL": str(db), "SIPMESH_MEDIA_UVLOOP": "false",
                "PYTHONPATH": str(ROOT)})
    env.update(env_extra or {})
    err = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([sys.executable, "-m", "services.media"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    finally:
        if not isinstance(err, int):
            err.close()
    broker = Broker(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if "media ready" not in line:
        broker.stop()
        raise RuntimeError(f"media broker did not start: {line!r}")
    broker.line = line
    return broker


def mi(url: str, method: str, params: Any = None) -> Any:
    """One MI call; the result, or the error object."""
    import json
    import urllib.request

    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        request["params"] = params
    body = json.dumps(request)
    req = urllib.request.Request(url, data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
    return answer.get("result", answer.get("error"))


async def offer_on(grpc: str, *, set_id: int = 0, call_id: str = "") -> str:
    """An offer straight to a broker over gRPC (as the edge sends it); the instance used."""
    from services.edge.media_client import MediaClient

    client = MediaClient(addresses=[grpc])
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 9000 RTP/AVP 0\r\n")
    try:
        reply = await client.call("Offer", client.request(
            call_id=call_id or f"grpc-{os.getpid()}-{time.monotonic_ns()}", from_tag="g1",
            sdp=sdp.encode(), set_id=set_id, flags="replace-origin"))
    finally:
        await client.close()
    assert reply.ok, reply.error
    return str(reply.instance)
