"""Flood protection as an operator sees it (issue 21, OpenSIPS pike): a sipp flood from a
source the edge does not trust is blocked -- E_PIKE_BLOCKED reaches a subscriber made
with opensips-cli's event_subscribe, pike_list names the source, the edge's drop counter
grows -- while the same flood from a source in the address table goes through; pike_rm
unblocks. The limit is lowered (5 requests per 1 s unit) so a short flood shows it and
the source is unblocked after two quiet seconds."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.integration.operator.harness import OperatorMesh, start
from tests.support.ports import reserve_port
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def om(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorMesh]:
    m = start(tmp_path_factory.mktemp("pike"), "pike_density = 5\npike_unit = 1.0\n")
    yield m
    assert m.mesh.stop() == 0
    assert "Traceback" not in (m.tmp / "mesh.stderr").read_text()


def test_a_flood_is_blocked_announced_and_listed_and_trusted_sources_are_exempt(
        om: OperatorMesh) -> None:
    events = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    events.bind(("127.0.0.1", 0))
    events.settimeout(20)
    sub = f"udp:127.0.0.1:{events.getsockname()[1]}"
    uas_port = reserve_port()
    uas = om.uas(uas_port)
    target = f"127.0.0.1:{uas_port}"
    try:
        assert om.cli("event_subscribe", "E_PIKE_BLOCKED", sub, "120") == "OK"
        assert "E_PIKE_BLOCKED" in {e["name"] for e in om.cli("events_list")["Events"]}
        # Trusted through the address table: 60 calls at 50/s all connect.
        assert om.sipmesh("address", "add", "127.0.0.1").returncode == 0
        assert om.cli("address_reload") == "OK"
        trusted = om.call(target, calls=60, rate=50)
        assert trusted.returncode == 0, trusted.stdout[-2000:]
        assert om.cli("pike_list") == {"IPs": []}

        # Untrusted: the same flood is cut off.
        assert om.sipmesh("address", "rm", "127.0.0.1").returncode == 0
        assert om.cli("address_reload") == "OK"
        assert om.sipmesh("address", "add", "10.0.0.0/8").returncode == 0  # someone else
        assert om.cli("address_reload") == "OK"
        flood = om.call_background(target, calls=400, rate=50, timeout=8)
        event = json.loads(events.recv(65536))
        assert event["method"] == "E_PIKE_BLOCKED" and event["params"] == {"ip": "127.0.0.1"}
        assert om.cli("pike_list") == {"IPs": ["127.0.0.1"]}  # the flood goes on
        stats = om.cli("get_statistics", "pike:")
        assert stats["pike:blocks"] == 1 and stats["pike:blocked_requests"] > 0
        assert om.cli("pike_rm", "127.0.0.1") == "OK"
        assert flood.wait(60) != 0  # most of its calls were never answered
        # Quiet for two sampling units: unblocked by itself.
        eventually_sync(lambda: om.cli("pike_list") == {"IPs": []}, 20, "the unblock")
        assert "IP not blocked" in om.cli_error("pike_rm", "127.0.0.1")
        assert "Match not found" in om.cli_error("pike_rm", "192.0.2.200")
        assert "Bad IP" in om.cli_error("pike_rm", "nonsense")
        # Calm again: one call from the (unblocked, still untrusted) source is refused by
        # routing, not dropped: the edge answers it.
        calm = om.call(target)
        assert "received 'SIP/2.0 " in calm.stdout, calm.stdout[-1500:]
    finally:
        uas.terminate()
        uas.wait(10)
        events.close()
