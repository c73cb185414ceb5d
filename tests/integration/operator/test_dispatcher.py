"""The dispatcher as an operator uses it (issue 21, OpenSIPS dispatcher): gateways in the
``dispatcher`` table (``sipmesh dispatcher add|rm``), a routing module calling
``ctx.dispatch(1, 4)`` (round-robin) with failover in ``failure_route``, sipp calls
through the edge, and opensips-cli's ds_list, ds_set_state and ds_reload through the
gateway. A dead gateway costs one call a Timer B (T1 = 0.1 s: 6.4 s) and is marked
Probing; the OPTIONS prober brings it back once it answers; E_DISPATCHER_STATUS
announces each change."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.harness import OperatorMesh, start
from tests.integration.spine.meshproc import ROOT
from tests.support.ports import reserve_port

pytestmark = pytest.mark.peers
HERE = Path(__file__).resolve().parent
CONFIG = ('t1 = 0.1\nds_ping_interval = 1.0\n'
          'routing_module = "tests.integration.operator.ds_routing"\n')


def _add(store: Path, setid: int, uri: str, *options: str) -> None:
    """``sipmesh dispatcher add`` before the mesh runs (as an operator provisions)."""
    done = subprocess.run([sys.executable, "-m", "sipmesh.cli.main", "dispatcher", "add",
                           str(setid), uri, *options, "--store", str(store)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def om(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OperatorMesh, list[str]]]:
    tmp = tmp_path_factory.mktemp("dispatcher")
    gws = [f"sip:gw{i}@127.0.0.1:{reserve_port()}" for i in (1, 2, 3)]
    _add(tmp / "store.sqlite", 1, gws[0], "--description", "carrier A")
    _add(tmp / "store.sqlite", 1, gws[1])
    _add(tmp / "store.sqlite", 1, gws[2])
    m = start(tmp, CONFIG, trust_loopback=True)
    yield m, gws
    assert m.mesh.stop() == 0
    assert "Traceback" not in (m.tmp / "mesh.stderr").read_text()


def _port(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1])


def _dests(om: OperatorMesh) -> dict[str, dict[str, Any]]:
    [part] = om.cli("ds_list", "full")["PARTITIONS"]
    return {d["URI"]: d for s in part["SETS"] for d in s["Destinations"]}


def _event(sock: socket.socket) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sock.recv(65536))
    assert data["method"] == "E_DISPATCHER_STATUS"
    params: dict[str, Any] = data["params"]
    return params


def test_calls_spread_fail_over_and_the_prober_revives_a_gateway(
        om: tuple[OperatorMesh, list[str]]) -> None:
    m, gws = om
    events = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    events.bind(("127.0.0.1", 0))
    events.settimeout(30)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sub = f"udp:127.0.0.1:{events.getsockname()[1]}"
        assert m.cli("event_subscribe", "E_DISPATCHER_STATUS", sub, "300") == "OK"
        listed = _dests(m)
        assert [listed[g]["state"] for g in gws] == ["Active"] * 3
        assert listed[gws[0]]["description"] == "carrier A" and listed[gws[0]]["weight"] == 1
        procs += [m.uas(_port(gws[0])), m.uas(_port(gws[1]))]  # gw3 is down

        calls = m.call("127.0.0.1:9", calls=6, rate=10, timeout=40, recv_timeout=20)
        assert calls.returncode == 0, calls.stdout[-2000:]  # every call answered
        after = _dests(m)
        assert after[gws[2]]["state"] == "Probing"
        assert after[gws[2]]["first_hit_counter"] >= 1  # tried, failed over
        assert after[gws[0]]["first_hit_counter"] + after[gws[1]]["first_hit_counter"] >= 4
        assert _event(events) == {"group": 1, "address": gws[2], "status": "inactive"}

        # The gateway comes back: it answers the OPTIONS probes, and is Active again.
        procs.append(m.uas(_port(gws[2]), ("-sf", str(HERE / "scenarios/uas_options.xml"))))
        assert _event(events) == {"group": 1, "address": gws[2], "status": "active"}
        assert _dests(m)[gws[2]]["state"] == "Active"
        procs.pop().terminate()

        # The operator takes gw3 and gw1 out: every call goes to gw2.
        assert m.cli("ds_set_state", "i", "1", gws[2]) == "OK"
        assert m.cli("ds_set_state", "i", "1", gws[0]) == "OK"
        before = _dests(m)
        assert [before[g]["state"] for g in gws] == ["Inactive", "Active", "Inactive"]
        again = m.call("127.0.0.1:9", calls=3, rate=10, timeout=20)
        assert again.returncode == 0, again.stdout[-2000:]
        now = _dests(m)
        assert now[gws[1]]["first_hit_counter"] == before[gws[1]]["first_hit_counter"] + 3
        assert now[gws[0]]["first_hit_counter"] == before[gws[0]]["first_hit_counter"]
        assert "Destination not found" in m.cli_error("ds_set_state", "a", "1", "sip:x@y")
        assert "Bad state value" in m.cli_error("ds_set_state", "z", "1", gws[0])

        # gw3 leaves the table: ds_reload drops it, the others keep their state.
        removed = m.sipmesh("dispatcher", "rm", "1", gws[2])
        assert removed.returncode == 0, removed.stderr
        assert m.cli("ds_reload") == "OK"
        reloaded = _dests(m)
        assert set(reloaded) == {gws[0], gws[1]} and reloaded[gws[0]]["state"] == "Inactive"
        stats = m.cli("get_statistics", "dispatcher:")
        assert stats["dispatcher:destinations"] == 2 and stats["dispatcher:probes_sent"] >= 1
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        events.close()
