"""Calls anchored on the real rtpengine through edge + media broker, the user's path:

the rtpengine is provisioned with `sipmesh rtpengine add` (the table a broker reads), the
edge runs the default routing with `[edge] media_anchor = true` (wrapped by
routing_report.py, which ships `ctx.media.stats` after a BYE to a collector, as a user
would hand them to billing), the broker finds nothing but its table.

* sipp UAC -> edge -> sipp UAS with SDP, RTP replayed from sipp's g711a.pcap both ways: the
  SDP each side receives points at rtpengine's ports, rtpengine counts the RTP of the call
  while it lasts, and the BYE's delete ends the session (rtpengine lists no call).
* A call between two small RTP/RTCP endpoints (rtp_peer.py: real LSR/DLSR, the caller
  dropping every 10th packet): MOS and loss come back from the BYE's delete into the
  call's statistics: average/min/max MOS with times, loss on the callee's reports.
* A failed call (486) and a cancelled one leave no session on rtpengine.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import socketserver
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.edge.edge_harness import (
    Edge,
    Sipp,
    free_port,
    start_edge,
    wait_until,
)
from tests.integration.media.harness import (
    ROOT,
    SCENARIOS,
    RtpEngine,
    ng,
    start_broker,
)
from tests.integration.media.rtp_peer import RtpPeer, sdp_media
from tests.integration.media.sip_ua import SipUA, next_request

pytestmark = pytest.mark.peers
HERE = Path(__file__).resolve().parent


class _Collector(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.got: queue.Queue[dict[str, Any]] = queue.Queue()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        data = self.rfile.read()
        if data:
            self.server.got.put(json.loads(data)["params"])  # type: ignore[attr-defined]


def sipmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipmesh.cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("media")
    engine = RtpEngine(tmp).start()
    db = tmp / "media.sqlite"
    added = sipmesh("rtpengine", "add", engine.url, "--db", str(db))
    assert added.returncode == 0, added.stderr
    collector = _Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    broker = start_broker(db)
    edge: Edge | None = None
    try:
        assert "sets 1 instances 1" in broker.line
        edge = start_edge({
            "SIPMESH_EDGE_MEDIA": broker.grpc, "SIPMESH_EDGE_MEDIA_ANCHOR": "true",
            "SIPMESH_EDGE_ROUTING_MODULE": "routing_report",
            "MEDIA_STATS_DEST": f"127.0.0.1:{collector.server_address[1]}",
        }, extra_path=[str(HERE)])
        yield {"engine": engine, "broker": broker, "edge": edge, "stats": collector.got,
               "tmp": tmp}
    finally:
        if edge is not None:
            edge.stop()
        broker.stop()
        collector.shutdown()
        engine.kill()


def _sdp_ports(trace: Path, first_line: str) -> list[int]:
    """Audio ports of the SDPs in sipp's message trace, in messages starting `first_line`."""
    text = trace.read_text(errors="replace")
    ports = []
    for block in re.split(r"\n?-{20,}[^\n]*\n", text):
        if "message received" not in block:
            continue  # only what sipp received (what left the edge)
        start = re.search(r"^(INVITE |ACK |BYE |SIP/2\.0 )[^\n]*", block, re.M)
        if start is not None and start.group(0).startswith(first_line):
            ports += [int(p) for p in re.findall(r"m=audio (\d+)", block)]
    return ports


def test_sipp_call_media_goes_through_rtpengine_and_delete_ends_it(
        mesh: dict[str, Any], tmp_path: Path) -> None:
    engine: RtpEngine = mesh["engine"]
    edge: Edge = mesh["edge"]
    sipp = Sipp(tmp_path)
    uas_port = free_port()
    try:
        sipp.uas("../../media/scenarios/uas_media.xml", uas_port, extra=[
            "-mp", str(free_port()), "-trace_msg", "-message_file", str(tmp_path / "uas.msg")])
        uac = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIOS / "uac_media.xml"), "-i", "127.0.0.1",
             "-p", str(free_port()), "-mp", str(free_port()), "-rsa", edge.address,
             f"127.0.0.1:{uas_port}", "-s", "media", "-m", "1", "-nostdin",
             "-timeout", "30s", "-timeout_error",
             "-trace_msg", "-message_file", str(tmp_path / "uac.msg")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: len(engine.calls()) == 1, 10, "the call on rtpengine")
            call_id = engine.calls()[0]

            def rtp_both_ways() -> bool:
                reply = ng(engine.ng_port, {"command": "query", "call-id": call_id}) or {}
                streams = [s for tag in (reply.get("tags") or {}).values()
                           for m in tag.get("medias", []) for s in m.get("streams", [])
                           if "RTP" in s.get("flags", [])]
                return len(streams) == 2 and all(s["stats"]["packets"] > 20 for s in streams)

            wait_until(rtp_both_ways, 10, "RTP from both sides counted by rtpengine")
            out, _ = uac.communicate(timeout=40)
        finally:
            if uac.poll() is None:
                uac.kill()
                uac.wait()
        assert uac.returncode == 0, out.decode(errors="replace")[-2000:]
        # the SDP that left the edge, both ways, names rtpengine's ports
        offered = _sdp_ports(tmp_path / "uas.msg", "INVITE ")
        answered = _sdp_ports(tmp_path / "uac.msg", "SIP/2.0 200 OK")
        assert offered and all(engine.in_range(p) for p in offered), offered
        assert answered and all(engine.in_range(p) for p in answered), answered
        wait_until(lambda: engine.calls() == [], 5, "the BYE's delete")
        report = mesh["stats"].get(timeout=10)
        assert report["call_id"] == call_id and report["rtp_packets"] > 40, report
    finally:
        sipp.stop()


async def _call(edge: Edge, caller: SipUA, callee: SipUA, a: RtpPeer, b: RtpPeer,
                seconds: float, ready: Callable[[], Awaitable[object]] | None = None
                ) -> tuple[str, str, str]:
    """A call alice -> bob through the edge with the peers' SDP; returns (call-id, SDP
    alice got, SDP bob got).  `ready`: awaited once the RTP flows, before the call's
    `seconds` (what must be under way first, however long it takes)."""
    dest = ("127.0.0.1", edge.port)
    call_id = f"mos-{os.getpid()}-{id(a)}"
    target = f"sip:bob@127.0.0.1:{callee.port}"
    invite = caller.request("INVITE", target, call_id=call_id, from_tag="alice1", to=target,
                            cseq=1, body=a.sdp().encode())
    pending = asyncio.create_task(caller.transact(invite, dest))
    got, addr = await next_request(callee, "INVITE")
    bob_sdp = got.body.decode()
    callee.answer(got, addr, 180, to_tag="bob1")
    callee.answer(got, addr, 200, to_tag="bob1", body=b.sdp().encode())
    ok = await pending
    assert ok.status == 200
    alice_sdp = ok.body.decode()
    routes = list(reversed(ok.get_all("Record-Route")))
    ack = caller.request("ACK", target, call_id=call_id, from_tag="alice1", to=target,
                         cseq=1, routes=routes, to_tag="bob1")
    caller.send(ack.serialize(), dest)
    await next_request(callee, "ACK")
    b.start(*sdp_media(bob_sdp))
    a.start(*sdp_media(alice_sdp))
    if ready is not None:
        await ready()
    await asyncio.sleep(seconds)  # the call's length: RTCP reports every second
    await a.stop()
    await b.stop()
    bye = caller.request("BYE", target, call_id=call_id, from_tag="alice1", to=target,
                         cseq=2, routes=routes, to_tag="bob1")
    pending = asyncio.create_task(caller.transact(bye, dest))
    got, addr = await next_request(callee, "BYE")
    callee.answer(got, addr, 200)
    assert (await pending).status == 200
    return call_id, alice_sdp, bob_sdp


async def test_mos_and_loss_of_a_call_reach_its_statistics(mesh: dict[str, Any]) -> None:
    engine: RtpEngine = mesh["engine"]
    caller, callee = SipUA("alice"), SipUA("bob")
    a = RtpPeer(ssrc=0x0A0A0A0A, drop_every=10)  # 10% of alice's RTP never leaves
    b = RtpPeer(ssrc=0x0B0B0B0B)
    for x in (caller, callee, a, b):
        await x.open()
    try:
        call_id, alice_sdp, bob_sdp = await _call(mesh["edge"], caller, callee, a, b, 5.5)
    finally:
        for p in (a, b):
            await p.stop()
            p.close()
        caller.close()
        callee.close()
    assert engine.in_range(sdp_media(alice_sdp)[1]) and engine.in_range(sdp_media(bob_sdp)[1])
    assert a.received_rtp > 100 and b.received_rtp > 100  # media went through rtpengine
    report = await asyncio.to_thread(mesh["stats"].get, timeout=10)
    assert report["call_id"] == call_id, report
    # MOS x10 (0-50); bob's reports carry alice's 10% loss, alice's see a clean stream
    assert 10 <= report["mos_min"] <= report["mos_average"] <= report["mos_max"] <= 50, report
    assert report["mos_max"] - report["mos_min"] >= 3, report
    assert report["by_tag"]["bob1"]["mos_average"] < report["by_tag"]["alice1"]["mos_average"]
    assert 0 <= report["mos_min_at"] <= 10 and 0 <= report["mos_max_at"] <= 10
    assert report["packets_lost"] >= 15 and report["packetloss_average"] > 0, report
    assert report["rtcp_packets"] >= 6 and report["rtp_packets"] > 400
    assert report["instance"] == engine.url
    assert engine.calls() == []


async def test_failed_and_cancelled_calls_leave_no_session(mesh: dict[str, Any]) -> None:
    engine: RtpEngine = mesh["engine"]
    edge: Edge = mesh["edge"]
    dest = ("127.0.0.1", edge.port)
    caller, callee = SipUA("carol"), SipUA("dave")
    peer = RtpPeer()
    for x in (caller, callee, peer):
        await x.open()
    try:
        target = f"sip:dave@127.0.0.1:{callee.port}"
        # 486 Busy: the failure deletes the session the offer created
        invite = caller.request("INVITE", target, call_id=f"busy-{os.getpid()}",
                                from_tag="c1", to=target, cseq=1, body=peer.sdp().encode())
        pending = asyncio.create_task(caller.transact(invite, dest))
        got, addr = await next_request(callee, "INVITE")
        assert engine.in_range(sdp_media(got.body.decode())[1])
        callee.answer(got, addr, 486, to_tag="d1")
        assert (await pending).status == 486
        await asyncio.to_thread(wait_until, lambda: engine.calls() == [], 5,
                                "delete after 486")
        # CANCEL after 180: the 487 deletes it too
        invite = caller.request("INVITE", target, call_id=f"cancel-{os.getpid()}",
                                from_tag="c2", to=target, cseq=1, body=peer.sdp().encode())
        pending = asyncio.create_task(caller.transact(invite, dest))
        ringing, ring_addr = await next_request(callee, "INVITE")
        callee.answer(ringing, ring_addr, 180, to_tag="d2")
        await asyncio.to_thread(wait_until, lambda: len(engine.calls()) == 1, 5,
                                "the ringing call on rtpengine")
        cancel = caller.request("CANCEL", target, call_id=invite.call_id, from_tag="c2",
                                to=target, cseq=1)
        cancel.set_header("Via", invite.get("Via") or "")
        assert (await caller.transact(cancel, dest)).status == 200
        got, addr = await next_request(callee, "CANCEL")
        callee.answer(got, addr, 200)
        callee.answer(ringing, ring_addr, 487, to_tag="d2")
        assert (await pending).status == 487
        await asyncio.to_thread(wait_until, lambda: engine.calls() == [], 5,
                                "delete after CANCEL")
    finally:
        caller.close()
        callee.close()
        peer.close()
