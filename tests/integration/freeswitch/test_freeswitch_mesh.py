"""Issue 19 end to end on a real `sipmesh up` (gateway, edge, freeswitch bridge; embedded
events, the default) with three fake FreeSWITCH boxes, each answering calls with a sipp
UAS, configured in a TOML file as a user would:

* `fs_api status` through opensips-cli returns the box's own answer; `fs_bgapi` through
  the opensips package returns a Job-UUID and the job's result reaches an event
  subscriber as E_FREESWITCH with that Job-UUID;
* 300 sipp calls through the edge spread as the boxes' HEARTBEAT loads say;
* a box whose ESL link drops gets no new calls until it is back;
* ESL connection loss and recovery: the link is back within the backoff and every event
  reaches the subscriber exactly once.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opensips.mi import OpenSIPSMI

from services.freeswitch.testing.fake_freeswitch import FakeThread, Load
from tests.integration.edge.edge_harness import free_port, wait_until
from tests.integration.freeswitch.harness import (
    Box,
    edge_view,
    mi,
    run_calls,
    start_box,
    start_mesh,
    stop_boxes,
    wait_counts,
    wait_usable,
    write_config,
)
from tests.integration.spine.meshproc import MeshProcess
from tests.support.opensips_cli import mi as opensips_mi

pytestmark = pytest.mark.peers

HEARTBEAT = 0.2
# Weights by OpenSIPS' dispatcher formula 100 x idle x (1 - sessions/max): 81, 27, 12.
LOADS = [Load(10, 100, 90.0), Load(55, 100, 60.0), Load(70, 100, 40.0)]
WEIGHTS = [81, 27, 12]


@dataclass
class Setup:
    mesh: MeshProcess
    boxes: list[Box]
    thread: FakeThread
    edge_port: int
    workdir: Path

    @property
    def gateway(self) -> str:
        return self.mesh.gateway_url


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("fsmesh")
    thread = FakeThread()
    boxes: list[Box] = []
    mesh = None
    try:
        boxes = [start_box(thread, tmp, f"fs{i}", load, heartbeat=HEARTBEAT)
                 for i, load in enumerate(LOADS)]
        config = tmp / "sipmesh.toml"
        write_config(config, boxes, events="CHANNEL_CREATE,CUSTOM", heartbeat=HEARTBEAT,
                     store=tmp / "freeswitch.sqlite")
        edge_port = free_port()
        mesh = start_mesh(tmp, config, edge_port)
        wait_usable(mesh.gateway_url, {b.id: True for b in boxes})
        yield Setup(mesh, boxes, thread, edge_port, tmp)
    finally:
        if mesh is not None:
            mesh.stop()
        stop_boxes(thread, boxes)


def opensips_cli(url: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return opensips_mi(url, *cmd)


class UdpSubscriber:
    """An event_datagram socket subscribed through the gateway."""

    def __init__(self, gateway: str, event: str = "E_FREESWITCH") -> None:
        self.gateway, self.event = gateway, event
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.name = f"udp:127.0.0.1:{self.sock.getsockname()[1]}"
        assert mi(gateway, "event_subscribe", [event, self.name, 300]) == "OK"
        self.got: list[dict[str, Any]] = []

    def drain(self, want: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < want and time.monotonic() < deadline:
            try:
                self.got.append(json.loads(self.sock.recv(65535)))
            except TimeoutError:
                continue
        return self.got

    def close(self) -> None:
        mi(self.gateway, "event_subscribe", [self.event, self.name, 0])
        self.sock.close()


def test_fs_api_status_through_opensips_cli(setup: Setup) -> None:
    box = setup.boxes[1]
    run = opensips_cli(setup.gateway, "fs_api", box.id, "status")
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    # The box's own answer: its uptime line, its session figures
    assert status.startswith("UP ") and "is ready" in status
    assert "55 session(s) - peak 55" in status and "100 session(s) max" in status
    assert status.splitlines()[1:] == setup.thread.call(box.fake.api, "status").splitlines()[1:]
    listing = json.loads(opensips_cli(setup.gateway, "fs_list").stdout)
    states = {s["if"]: (s["State"], s["Session-Count"]) for s in listing["Sockets"]}
    assert states == {b.id: ("up", load.session_count) for b, load in zip(
        setup.boxes, LOADS, strict=True)}
    unknown = opensips_cli(setup.gateway, "fs_api", "127.0.0.1:1", "status")
    said = unknown.stdout + unknown.stderr
    assert "404" in said and "FreeSWITCH box not found" in said, said
    assert "Traceback" not in said


def test_bgapi_result_comes_back_with_its_job_uuid(setup: Setup) -> None:
    sub = UdpSubscriber(setup.gateway)
    try:
        box = setup.boxes[0]
        client = OpenSIPSMI("http", url=setup.gateway)
        job = client.execute("fs_bgapi", {"freeswitch_url": box.id, "command": "status"})[
            "Job-UUID"]
        events = sub.drain(1)
        jobs = [json.loads(e["params"]["body"]) for e in events
                if e["params"]["name"] == "BACKGROUND_JOB"]
        assert [j["Job-UUID"] for j in jobs] == [job]
        assert jobs[0]["Job-Command"] == "status" and jobs[0]["_body"].startswith("UP ")
        assert events[0]["params"]["box"] == box.id
    finally:
        sub.close()


def _shares(counts: list[int], weights: list[int]) -> list[float]:
    total = sum(counts)
    return [total * w / sum(weights) for w in weights]


def test_300_calls_are_spread_as_the_load_says(setup: Setup) -> None:
    before = wait_counts(setup.boxes, 0, timeout=0)
    result = run_calls(setup.workdir, setup.edge_port, 300, rate=100)
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    counts = [c - b for c, b in zip(wait_counts(setup.boxes, sum(before) + 300), before,
                                    strict=True)]
    assert sum(counts) == 300, counts
    # Expected 202.5 / 67.5 / 30. The pick is a smooth weighted round robin, not a random
    # draw: each box's count stays within one call of its exact share over any run of
    # calls (tests/unit/freeswitch/test_balancing.py proves the bound), so +-1.5 calls is
    # the whole tolerance here; a random draw would need about +-25 (3 sigma of 300
    # Bernoulli draws at p = 0.675) and could not tell 81:27:12 from 75:30:15.
    for got, want in zip(counts, _shares(counts, WEIGHTS), strict=True):
        assert abs(got - want) <= 1.5, (counts, WEIGHTS)
    view = edge_view(setup.gateway)
    assert [view[b.id]["Weight"] for b in setup.boxes] == pytest.approx(WEIGHTS)


def test_a_box_whose_esl_link_drops_gets_no_calls_until_it_returns(setup: Setup) -> None:
    a, b, c = setup.boxes
    setup.thread.run(b.fake.stop_listening())
    setup.thread.call(b.fake.drop_connections)
    wait_usable(setup.gateway, {a.id: True, b.id: False, c.id: True})
    assert mi(setup.gateway, "fs_list")["Sockets"][1]["State"] != "up"
    before = wait_counts(setup.boxes, 0, timeout=0)
    result = run_calls(setup.workdir, setup.edge_port, 93, rate=100)
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    during = [x - y for x, y in zip(wait_counts(setup.boxes, sum(before) + 93), before,
                                    strict=True)]
    assert during[1] == 0, during  # the box that is away: nothing
    assert abs(during[0] - 81) <= 1 and abs(during[2] - 12) <= 1, during
    setup.thread.run(b.fake.start_listening())
    wait_usable(setup.gateway, {b.id: True})
    before = wait_counts(setup.boxes, 0, timeout=0)
    result = run_calls(setup.workdir, setup.edge_port, 120, rate=100)
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    after = [x - y for x, y in zip(wait_counts(setup.boxes, sum(before) + 120), before,
                                   strict=True)]
    assert abs(after[1] - 27) <= 1.5, after  # back in its share


def test_esl_loss_and_recovery_no_duplicates_and_within_the_backoff(setup: Setup) -> None:
    box = setup.boxes[2]
    sub = UdpSubscriber(setup.gateway)

    def fire(i: int) -> int:
        return setup.thread.call(lambda: box.fake.fire(
            "CUSTOM", {"Seq-Test": str(i)}, subclass="sipmesh::seq"))

    try:
        first = [fire(i) for i in range(20)]
        sub.drain(20)
        auths = len(box.fake.auth_times)
        dropped = time.monotonic()
        setup.thread.call(box.fake.drop_connections)
        wait_until(lambda: len(box.fake.auth_times) > auths, 10, "ESL link back")
        took = box.fake.auth_times[-1] - dropped
        # [freeswitch] backoff_initial = 0.5: the first redial waits a delay drawn in
        # [0.25, 0.5] s; connecting and authenticating on loopback takes milliseconds.
        assert took <= 0.5 + 0.25, f"reconnected after {took:.3f} s"
        wait_until(lambda: mi(setup.gateway, "fs_list")["Sockets"][2]["State"] == "up", 10,
                   "fs_list up")
        second = [fire(i) for i in range(20, 40)]
        got = sub.drain(40)
        seqs = [int(json.loads(e["params"]["body"])["Event-Sequence"]) for e in got
                if e["params"]["name"] == "CUSTOM"]
        assert seqs == first + second  # every event once, in order, none duplicated
        assert mi(setup.gateway, "get_statistics", [["freeswitch:reconnects"]])[
            "freeswitch:reconnects"] >= 1
    finally:
        sub.close()
