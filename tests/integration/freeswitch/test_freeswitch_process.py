"""`python -m services.freeswitch` as a real process, on its defaults: with no box it says
so and idles; a box added with MI fs_add is in the store before the answer, so it comes
back after kill -9; /health and /metrics answer."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.freeswitch.testing.fake_freeswitch import FakeFreeswitch, FakeThread, Load
from tests.integration.edge.edge_harness import wait_until
from tests.integration.freeswitch.harness import mi
from tests.integration.spine.meshproc import ROOT


class Bridge:
    def __init__(self, state: Path) -> None:
        env = dict(os.environ)
        env.pop("SIPMESH_CONFIG", None)
        env.update({"XDG_STATE_HOME": str(state), "SIPMESH_FREESWITCH_UVLOOP": "false",
                    "SIPMESH_FREESWITCH_HEARTBEAT_INTERVAL": "0.2",
                    "SIPMESH_FREESWITCH_BACKOFF_INITIAL": "0.2"})
        self.proc = subprocess.Popen([sys.executable, "-m", "services.freeswitch"], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready = self.queue.get(timeout=30)
        words = self.ready.split()
        self.http = words[words.index("http") + 1]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def fake() -> Iterator[tuple[FakeThread, FakeFreeswitch]]:
    thread = FakeThread()
    f = thread.start_fake(load=Load(4, 40, 75.0), heartbeat_interval=0.2)
    yield thread, f
    thread.close([f])


def test_idle_then_fs_add_survives_kill_9(tmp_path: Path,
                                          fake: tuple[FakeThread, FakeFreeswitch]) -> None:
    _, box = fake
    first = Bridge(tmp_path)
    try:
        assert first.ready.startswith("freeswitch ready grpc ") and " boxes 0 " in first.ready
        idle = first.queue.get(timeout=10)
        assert "no FreeSWITCH box configured" in idle and "idle" in idle
        assert mi(f"{first.http}/mi", "fs_list") == {"Sockets": []}
        with urllib.request.urlopen(f"{first.http}/health", timeout=5) as resp:
            assert resp.status == 200
        url = f"fs://:ClueCon@127.0.0.1:{box.port}?group=media&sip=sip:127.0.0.1:5099"
        assert mi(f"{first.http}/mi", "fs_add", [url]) == "OK"
        wait_until(lambda: mi(f"{first.http}/mi", "fs_list")["Sockets"][0]["State"] == "up",
                   10, "box up")
        assert mi(f"{first.http}/mi", "fs_api", [f"127.0.0.1:{box.port}", "echo hi"]) == "hi"
        with urllib.request.urlopen(f"{first.http}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert f'sipmesh_freeswitch_box_up{{box="127.0.0.1:{box.port}",group="media"}} 1.0' \
            in metrics
        assert 'sipmesh_freeswitch_api_seconds_count{kind="api"} 1.0' in metrics
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = Bridge(tmp_path)
    try:
        assert " boxes 1 " in second.ready
        wait_until(lambda: mi(f"{second.http}/mi", "fs_list")["Sockets"][0]["State"] == "up",
                   10, "box up again")
        [sock] = mi(f"{second.http}/mi", "fs_list")["Sockets"]
        assert (sock["if"], sock["Group"], sock["SIP"], sock["Source"]) == (
            f"127.0.0.1:{box.port}", "media", "sip:127.0.0.1:5099", "db")
        assert mi(f"{second.http}/mi", "fs_api", [f"127.0.0.1:{box.port}", "echo hi"]) == "hi"
    finally:
        assert second.stop() == 0
    assert (tmp_path / "sipmesh" / "freeswitch.sqlite").exists()
