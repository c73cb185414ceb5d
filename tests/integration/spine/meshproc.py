"""Runs `sipmesh up` as a real process on free ports and reads its stable stdout lines."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.state import private_state

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


class MeshProcess:
    up_args: tuple[str, ...] = ()  # options of `sipmesh up` (a subclass sets them)

    def __init__(self, tmp: Path, **env: str) -> None:
        self.env = dict(os.environ)
        self.env.update({
            "SIPMESH_MESH_REGISTRY_PORT": "0",
            "SIPMESH_GATEWAY_PORT": "0",
            "SIPMESH_MESH_SERVICES": "gateway",
            "SIPMESH_MESH_BACKOFF_INITIAL": "0.2",
            "SIPMESH_DISCOVERY_TTL": "3",
            # The gateway's subscription store lives with the test, never in $HOME.
            "SIPMESH_EVENTS_STORE": str(tmp / "event_subscribers.sqlite"),
        })
        private_state(self.env, tmp / "state")  # edge-rr.key, stores: never ~/.local
        self.env.update(env)
        self.stderr = open(tmp / "mesh.stderr", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipmesh.cli.main", "up", *self.up_args], cwd=ROOT, env=self.env,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.registry_url = self.expect(r"^registry (\S+)").group(1)
        self.gateway_url = self.expect(r"^endpoint gateway mi (\S+)").group(1)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Waits for the next stdout line matching ``pattern`` (earlier lines are kept)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r}; saw {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            m = rx.search(line)
            if m:
                return m

    def line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """A line matching ``pattern`` already read, else the next one to come (the order
        in which services register is not fixed)."""
        for seen in self.seen:
            found = re.search(pattern, seen)
            if found:
                return found
        return self.expect(pattern, timeout)

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, SIPMESH_DISCOVERY_URL=self.registry_url)
        return subprocess.run([sys.executable, "-m", "sipmesh.cli.main", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode
