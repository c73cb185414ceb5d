"""SIP capture as an operator uses it (issue 21, OpenSIPS siptrace): opensips-cli turns
``sip_trace`` on through the gateway, a sipp call crosses the edge, and a HEP capture
server (the fake collector of tests/support/hep_collector.py, decoding HEP v3 per the
spec: there is no Homer here) receives every message of it, both ways, with addresses,
ports and the Call-ID; off again, nothing more is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.operator.harness import OperatorMesh, start
from tests.support.hep_collector import HepCollector
from tests.support.ports import reserve_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def om(tmp_path_factory: pytest.TempPathFactory, collector_port: int
       ) -> Iterator[OperatorMesh]:
    m = start(tmp_path_factory.mktemp("capture"),
              f'hep_dest = "127.0.0.1:{collector_port}"\nhep_capture_id = 2001\n',
              trust_loopback=True)
    yield m
    assert m.mesh.stop() == 0


async def test_sip_trace_on_sends_every_message_of_a_call_as_hep3(
        om: OperatorMesh, collector: HepCollector) -> None:
    uas_port = reserve_port()
    uas = om.uas(uas_port)
    try:
        assert await asyncio.to_thread(om.cli, "sip_trace") == "off"
        quiet = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}")
        assert quiet.returncode == 0
        assert collector.packets == [] and collector.errors == []

        assert await asyncio.to_thread(om.cli, "sip_trace", "on") == "OK"
        assert await asyncio.to_thread(om.cli, "sip_trace") == "on"
        traced = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}")
        assert traced.returncode == 0, traced.stdout[-2000:]

        def heads() -> list[str]:
            return [p.payload.split(b"\r\n", 1)[0].decode() for p in collector.packets]

        # INVITE, 180, 200, ACK, BYE, 200 each in and out, and the edge's own 100.
        await eventually(lambda: len(collector.packets) >= 13, 15, "the call's packets")
        # (more under load: a retransmission is captured as well)
        assert collector.errors == []
        edge = ("127.0.0.1", om.sip_port)
        uas_addr = ("127.0.0.1", uas_port)
        invites = [p for p in collector.packets if p.payload.startswith(b"INVITE ")]
        assert invites[0].dst == edge and invites[0].src[0] == "127.0.0.1"  # in
        assert any(p.dst == uas_addr for p in invites)  # and out to the callee
        first = invites[0].fields
        assert first["capture_id"] == 2001 and first["ip_proto"] == 17
        assert first["proto_type"] == 1 and first["ip_family"] == 2
        call_ids = {p.fields.get("correlation_id") for p in collector.packets}
        assert len(call_ids) == 1 and call_ids != {None}
        seen = heads()
        for line in ("SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"):
            assert line in seen, seen
        assert sum(h.startswith("BYE ") for h in seen) == 2
        stats = await asyncio.to_thread(om.cli, "get_statistics", "siptrace:")
        assert stats["siptrace:traced_requests"] >= 6

        assert await asyncio.to_thread(om.cli, "sip_trace", "off") == "OK"
        count = len(collector.packets)
        again = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}")
        assert again.returncode == 0
        assert len(collector.packets) == count
    finally:
        uas.terminate()
        uas.wait(10)


async def test_bad_modes_are_refused(om: OperatorMesh, collector: HepCollector) -> None:
    out = await asyncio.to_thread(om.cli_error, "sip_trace", "maybe")
    assert "Bad parameter value" in out
