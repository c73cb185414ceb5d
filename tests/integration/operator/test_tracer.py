"""Per-call tracing as an operator uses it (issue 21, OpenSIPS 3 ``tracer``), against a
real ``sipmesh up``:

* routing's ``ctx.trace("cap")`` captures the chosen call -- and only it -- both ways,
  replies and in-dialog requests (ACK, BYE) included, as HEP v3 over UDP;
* ``opensips-cli -x mi trace_start id=.. uri=.. filter=..`` (opensips-cli sends
  trace_start's filter as an array, named parameters as OpenSIPS 3 documents) adds a
  filtered trace (``callee=...``) to a HEP server over TCP, ``trace`` lists it,
  ``trace_stop`` ends it;
* a trace to a pcap file that sngrep (a real reader) opens;
* ``trace off`` stops all of it.

The HEP servers are the fake collectors of tests/support/hep_collector.py, decoding
HEP v3 strictly per the spec (there is no Homer here); sipp makes the calls.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.operator.harness import OperatorMesh, start
from tests.support.hep_collector import HepCollector, HepPacket, HepTcpCollector
from tests.support.pcap_reader import read
from tests.support.ports import reserve_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def om(tmp_path_factory: pytest.TempPathFactory, collector_port: int
       ) -> Iterator[OperatorMesh]:
    tmp = tmp_path_factory.mktemp("tracer")
    m = start(tmp, 'routing_module = "tests.integration.operator.trace_routing"\n'
                   f'trace_ids = ["cap=hep:127.0.0.1:{collector_port}", '
                   f'"file=file:{tmp}/routed.pcap"]\nhep_capture_id = 2002\n',
              trust_loopback=True)
    yield m
    assert m.mesh.stop() == 0


def heads(packets: list[HepPacket]) -> list[str]:
    return [p.payload.split(b"\r\n", 1)[0].decode() for p in packets]


def one_call_both_ways(packets: list[HepPacket], edge: tuple[str, int],
                       uas: tuple[str, int]) -> None:
    """Every message of one call as it crosses the edge: in from the caller, out to the
    callee, and the responses back."""
    seen = heads(packets)
    assert len({p.fields.get("correlation_id") for p in packets}) == 1, seen
    for method in ("INVITE", "ACK", "BYE"):
        ins = [p for p in packets if p.payload.startswith(method.encode()) and p.dst == edge]
        outs = [p for p in packets if p.payload.startswith(method.encode()) and p.dst == uas]
        assert ins and outs, (method, seen)
    for line in ("SIP/2.0 180 Ringing", "SIP/2.0 200 OK"):
        assert sum(h == line for h in seen) >= 2, seen  # from the callee, to the caller
    assert any(p.src == uas and p.payload.startswith(b"SIP/2.0 200") for p in packets)


async def test_routing_traces_the_chosen_call_its_replies_and_in_dialog_requests(
        om: OperatorMesh, collector: HepCollector) -> None:
    uas_port = reserve_port()
    uas = om.uas(uas_port)
    try:
        plain = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}", service="plain")
        assert plain.returncode == 0, plain.stdout[-2000:]
        traced = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}", service="traced")
        assert traced.returncode == 0, traced.stdout[-2000:]
        # INVITE, 180, 200, ACK, BYE, 200: each in and out
        await eventually(lambda: len(collector.packets) >= 12, 15, "the traced call")
        assert collector.errors == []
        one_call_both_ways(collector.packets, ("127.0.0.1", om.sip_port),
                           ("127.0.0.1", uas_port))
        assert all(b"sip:traced@" in p.payload or p.payload.startswith(b"SIP/")
                   or b"BYE " in p.payload[:4] or b"ACK " in p.payload[:4]
                   for p in collector.packets)
        assert collector.packets[0].fields["capture_id"] == 2002
        listed = await asyncio.to_thread(om.cli, "trace")
        cap = [e for e in listed["ids"] if e["id"] == "cap"]
        assert cap and sum(e["messages"] for e in cap) == len(collector.packets)
        assert listed["global"] == "on" and not cap[0]["dynamic"]

        # trace off: routing's ctx.trace() captures nothing; on again, it does
        assert await asyncio.to_thread(om.cli, "trace", "off") == "OK"
        count = len(collector.packets)
        quiet = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}", service="traced")
        assert quiet.returncode == 0
        assert (await asyncio.to_thread(om.cli, "trace"))["global"] == "off"
        assert len(collector.packets) == count
        assert await asyncio.to_thread(om.cli, "trace", "on") == "OK"
        again = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}", service="traced")
        assert again.returncode == 0
        await eventually(lambda: len(collector.packets) >= count + 12, 15, "traced again")
    finally:
        uas.terminate()
        uas.wait(10)


async def test_trace_start_filters_calls_to_a_hep_server_over_tcp(
        om: OperatorMesh, collector: HepCollector) -> None:
    tcp = await HepTcpCollector.open()
    uas_port = reserve_port()
    uas = om.uas(uas_port)
    try:
        assert await asyncio.to_thread(
            om.cli, "trace_start", "id=dyn", f"uri=hep:{tcp.address};transport=tcp",
            "filter=callee=wanted") == "OK"
        listed = await asyncio.to_thread(om.cli, "trace")
        dyn = [e for e in listed["ids"] if e["id"] == "dyn"]
        assert dyn and dyn[0]["dynamic"] and dyn[0]["filters"] == ["callee=wanted"]
        for service in ("other", "wanted"):
            done = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}", service=service)
            assert done.returncode == 0, done.stdout[-2000:]
        await eventually(lambda: len(tcp.packets) >= 12, 15, "the wanted call over TCP")
        assert tcp.errors == [] and collector.packets == []
        one_call_both_ways(tcp.packets, ("127.0.0.1", om.sip_port), ("127.0.0.1", uas_port))
        assert b"sip:wanted@" in tcp.packets[0].payload
        assert tcp.packets[0].fields["ip_proto"] == 17  # the SIP was UDP; HEP went over TCP

        assert await asyncio.to_thread(om.cli, "trace_stop", "dyn") == "OK"
        count = len(tcp.packets)
        done = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}", service="wanted")
        assert done.returncode == 0
        assert len(tcp.packets) == count
        assert "Unknown trace id" in await asyncio.to_thread(om.cli_error, "trace_stop", "dyn")
        assert "Not a dynamic trace id" in await asyncio.to_thread(
            om.cli_error, "trace_stop", "cap")
        assert "Bad parameter value" in await asyncio.to_thread(
            om.cli_error, "trace_start", "id=bad", "uri=hep:nowhere", "filter=callee=x")
        assert "Bad parameter value" in await asyncio.to_thread(
            om.cli_error, "trace_start", "id=bad", "uri=hep:127.0.0.1:9", "filter=who=x")
    finally:
        tcp.close()
        uas.terminate()
        uas.wait(10)


async def test_a_traced_call_in_a_pcap_file_that_sngrep_reads(
        om: OperatorMesh, collector: HepCollector) -> None:
    uas_port = reserve_port()
    uas = om.uas(uas_port)
    dynamic = om.tmp / "dynamic.pcap"
    try:
        assert await asyncio.to_thread(
            om.cli, "trace_start", "id=tofile", f"uri=file:{dynamic}",
            "filter=ip=127.0.0.0/8 caller=sipp", "scope=dialog") == "OK"
        routed = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}", service="filed")
        assert routed.returncode == 0, routed.stdout[-2000:]
        assert await asyncio.to_thread(om.cli, "trace_stop", "tofile") == "OK"
    finally:
        uas.terminate()
        uas.wait(10)
    for path in (dynamic, om.tmp / "routed.pcap"):  # trace_start's, and routing's trace id
        frames = read(path)
        starts = [f.payload.split(b"\r\n", 1)[0] for f in frames]
        assert len(frames) >= 12, starts
        assert sum(s.startswith(b"INVITE sip:filed@") for s in starts) >= 2, starts
        if shutil.which("sngrep") is not None:
            run = subprocess.run(["sngrep", "-N", "-I", str(path), "-O", str(path) + ".out"],
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=30)
            assert run.returncode == 0 and "Dialog count: 1" in run.stdout, run.stdout
            assert len(read(Path(str(path) + ".out"))) == len(frames)
    assert collector.packets == []
