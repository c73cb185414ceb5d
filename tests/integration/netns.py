"""A network namespace of the test's own (`ip netns`, root): a private loopback.

Inside it the mesh runs on its real defaults (`make run`: edge on 127.0.0.1:5060, gateway
on 8888, registry on 8710) without colliding with anything else on the machine, and extra
addresses on its loopback act as callers outside `[edge] trusted` (an attacker on
198.51.100.7 reaching the edge at 127.0.0.1).  Every process is started through
`ip netns exec` and stopped by its pid; the namespace is deleted at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any


class NetnsUnavailable(RuntimeError):
    pass


class NetNs:
    def __init__(self, tag: str) -> None:
        self.name = f"sipmesh-{tag}-{os.getpid()}"
        self.procs: list[subprocess.Popen[Any]] = []
        done = subprocess.run(["ip", "netns", "add", self.name], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise NetnsUnavailable(f"ip netns add failed (root needed): {done.stderr.strip()}")
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True)

    def add_address(self, cidr: str) -> None:
        """Another address on the namespace's loopback (e.g. an untrusted caller)."""
        self.ip("addr", "add", cidr, "dev", "lo")

    def command(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(self.command(cmd), **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(cmd), **kwargs)

    def stop(self, proc: subprocess.Popen[Any], grace: float = 10) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __enter__(self) -> NetNs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
