"""Fake FreeSWITCH boxes, each with a sipp UAS as its SIP side, and a real `sipmesh up`
(gateway, edge, freeswitch bridge) configured with them by a TOML file, as a user would.

The fakes run on a thread of their own (`FakeThread`): the tests themselves block on
sipp, opensips-cli and HTTP.  A box's calls are counted by its sipp UAS
(`-trace_stat`, IncomingCall(C), written every second): tests poll it with a deadline.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.freeswitch.testing.fake_freeswitch import FakeFreeswitch, FakeThread, Load
from tests.integration.edge.edge_harness import free_port, is_bound, stop_process, wait_until
from tests.integration.spine.meshproc import ROOT, MeshProcess

HERE = Path(__file__).resolve().parent
SCENARIOS = ROOT / "tests" / "integration" / "edge" / "scenarios"


@dataclass
class Box:
    fake: FakeFreeswitch
    sip_port: int
    uas: subprocess.Popen[bytes]
    stats: Path

    @property
    def id(self) -> str:
        return f"127.0.0.1:{self.fake.port}"

    @property
    def sip_uri(self) -> str:
        return f"sip:127.0.0.1:{self.sip_port}"

    def calls(self) -> int:
        """Calls its sipp UAS received so far (as of sipp's last one-second dump)."""
        try:
            with self.stats.open() as fh:
                rows = list(csv.reader(fh, delimiter=";"))
        except FileNotFoundError:
            return 0
        if len(rows) < 2:
            return 0
        return int(dict(zip(rows[0], rows[-1], strict=False))["IncomingCall(C)"])


def start_box(thread: FakeThread, workdir: Path, name: str, load: Load, *,
              heartbeat: float) -> Box:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: run tests/peers/ensure.sh (make test does)")
    sip_port = free_port()
    stats = workdir / f"{name}.csv"
    uas = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1", "-p", str(sip_port),
         "-nostdin", "-bind_local", "-trace_stat", "-stf", str(stats), "-fd", "1"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: is_bound(sip_port, "udp") or uas.poll() is not None, 10,
               f"sipp UAS of {name}")
    assert uas.poll() is None, "sipp UAS exited early"
    fake = thread.start_fake(load=load, heartbeat_interval=heartbeat, hostname=name,
                             sip_uri=f"sip:127.0.0.1:{sip_port}")
    return Box(fake, sip_port, uas, stats)


def write_config(path: Path, boxes: list[Box], *, events: str, heartbeat: float,
                 store: Path, extra: str = "") -> None:
    urls = [f"fs://:{b.fake.password}@127.0.0.1:{b.fake.port}?events={events}"
            f"&group=media&sip={b.sip_uri}" for b in boxes]
    path.write_text(
        "[freeswitch]\n"
        f"boxes = {json.dumps(urls)}\n"
        f"heartbeat_interval = {heartbeat}\n"
        "heartbeat_timeout = 3.0\n"
        "backoff_initial = 0.5\n"
        "backoff_max = 2.0\n"
        f"store = {json.dumps(str(store))}\n" + extra)


def start_mesh(tmp: Path, config: Path, edge_port: int, **env: str) -> MeshProcess:
    path = os.pathsep.join([str(ROOT), str(HERE)])
    mesh = MeshProcess(tmp, SIPMESH_MESH_SERVICES="gateway,edge,freeswitch",
                       SIPMESH_CONFIG=str(config),
                       SIPMESH_EDGE_LISTEN=f"udp:127.0.0.1:{edge_port}",
                       SIPMESH_EDGE_ROUTING_MODULE="routing_fs",
                       SIPMESH_EDGE_UVLOOP="false", PYTHONPATH=path, **env)
    try:
        mesh.line(r"^endpoint freeswitch grpc ")
        mesh.line(r"^endpoint edge sip ")
    except BaseException:
        mesh.stop()
        raise
    return mesh


def mi(url: str, method: str, params: Any = None) -> Any:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        answer = json.loads(resp.read())
    if "error" in answer:
        raise AssertionError(f"{method}: {answer['error']}")
    return answer["result"]


def edge_view(gateway: str) -> dict[str, dict[str, Any]]:
    """Every box as the edge sees it (MI fs_edge_view through the gateway), by id."""
    [edge] = mi(gateway, "fs_edge_view")["Edges"]
    return {b["id"]: b for b in edge["Boxes"]}


def wait_usable(gateway: str, boxes: dict[str, bool], timeout: float = 20) -> None:
    """Until the edge sees each box usable (True) or not (False)."""
    def ok() -> bool:
        try:
            view = edge_view(gateway)
        except (OSError, AssertionError, ValueError):
            return False
        return all(b in view and view[b]["Usable"] == want for b, want in boxes.items())

    wait_until(ok, timeout, f"edge view {boxes}", interval=0.1)


def wait_counts(boxes: list[Box], total: int, timeout: float = 20) -> list[int]:
    """The boxes' call counts once they add up to `total` (sipp dumps once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = [b.calls() for b in boxes]
        if sum(counts) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)  # polling sipp's stat file, bounded


def run_calls(workdir: Path, edge_port: int, calls: int, rate: int
              ) -> subprocess.CompletedProcess[bytes]:
    port = free_port()
    cmd = ["sipp", "-sf", str(SCENARIOS / "uac_rr.xml"), "-i", "127.0.0.1", "-p", str(port),
           "-rsa", f"127.0.0.1:{edge_port}", f"127.0.0.1:{edge_port}", "-s", "conference",
           "-m", str(calls), "-r", str(rate), "-d", "0", "-nostdin", "-timeout", "60s",
           "-timeout_error", "-trace_err", "-error_file", str(workdir / "uac_err.log")]
    return subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=120)


def stop_boxes(thread: FakeThread, boxes: list[Box]) -> None:
    for box in boxes:
        stop_process(box.uas)
    thread.close([b.fake for b in boxes])
