"""SIPREC end to end, the way an operator turns it on: a default-routing edge with
`[edge] media_anchor = true` and `[edge] siprec_srs` (a failover list of two SRSs), the
media broker on the real rtpengine, the siprec service, and an SRS.

The SRS is services/siprec/testing/fake_srs.py (no SRS package exists here; it checks
what RFC 7866/7865 require of the INVITE and counts the RTP it gets), started on the
list's ports by each test.  sipp UAC -> edge -> sipp UAS with RTP from sipp's pcap both
ways:

* the SRS gets one compliant INVITE (Require, +sip.src, multipart, metadata whose
  participants are the call's From/To and whose streams are the SDP labels), rtpengine's
  fork delivers both directions (caller's and callee's SSRCs on their own labels), the
  call's BYE ends the recording with BYE to the SRS, `siprec_list` is empty again, and
  E_SIPREC_START / E_SIPREC_STOP reach RabbitMQ;
* the first SRS answers 503: the second one records the call;
* no SRS answers at all: the call still completes, E_SIPREC_FAILED is raised.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import jsonschema
import pytest

from services.siprec.testing.fake_srs import FakeSrs, SrsSession
from tests.integration.edge.edge_harness import (
    Edge,
    Sipp,
    free_port,
    is_bound,
    start_edge,
    stop_process,
    wait_until,
)
from tests.integration.media.harness import (
    ROOT,
    SCENARIOS,
    RtpEngine,
    free_udp_port,
    mi,
    start_broker,
)
from tests.integration.media.rtp_peer import RtpPeer
from tests.integration.media.sip_ua import SipUA, next_request
from tests.integration.media.test_media_calls import _call, sipmesh
from tests.integration.media.test_media_cdr import start_dialog
from tests.support.waiting import eventually

pytestmark = pytest.mark.peers
HERE = Path(__file__).resolve().parent
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
EXCHANGE = f"sipmesh.test.siprec.{os.getpid()}"


class Siprec:
    def __init__(self, proc: subprocess.Popen[str], line: str) -> None:
        self.proc = proc
        self.line = line

    @property
    def mi(self) -> str:
        words = self.line.split()
        return f"{words[words.index('http') + 1]}/mi"

    def stop(self) -> int:
        return stop_process(self.proc, grace=10)


def start_siprec(env_extra: dict[str, str]) -> Siprec:
    env = dict(os.environ)
    env.pop("SIPMESH_CONFIG", None)
    env.update({"PYTHONPATH": str(ROOT), **env_extra})
    log = open(os.environ.get("SIPREC_TEST_LOG", os.devnull), "a")
    proc = subprocess.Popen([sys.executable, "-m", "services.siprec"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if "siprec ready" not in line:
        stop_process(proc)
        raise RuntimeError(f"siprec did not start: {line!r}")
    return Siprec(proc, line)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("siprec")
    engine = RtpEngine(tmp).start()
    db = tmp / "media.sqlite"
    added = sipmesh("rtpengine", "add", engine.url, "--db", str(db))
    assert added.returncode == 0, added.stderr
    events = {"SIPMESH_EVENTS_RABBITMQ_URL": AMQP, "SIPMESH_EVENTS_EXCHANGE": EXCHANGE}
    broker = start_broker(db)
    siprec: Siprec | None = None
    edge: Edge | None = None
    dialog, dialog_grpc = start_dialog(tmp)
    srs_ports = (free_udp_port(), free_udp_port())
    try:
        # the INVITE to a silent SRS ends at the edge's Timer B (T1 0.1 s here: 6.4 s)
        siprec_env = {"SIPMESH_SIPREC_MEDIA": broker.grpc, **events,
                      "SIPMESH_SIPREC_HTTP_PORT": str(free_port()),  # same after a restart
                      "SIPMESH_SIPREC_DB_URL": str(tmp / "siprec.sqlite"),
                      # checked every second: a live call's recording must never be ended
                      "SIPMESH_SIPREC_CHECK_INTERVAL": "1"}
        siprec = start_siprec(siprec_env)
        srs_list = ",".join(f"sip:srs@127.0.0.1:{p}" for p in srs_ports)
        edge = start_edge({
            "SIPMESH_EDGE_MEDIA": broker.grpc, "SIPMESH_EDGE_MEDIA_ANCHOR": "true",
            "SIPMESH_EDGE_DIALOG": dialog_grpc,
            "SIPMESH_EDGE_SIPREC": siprec.mi, "SIPMESH_EDGE_SIPREC_SRS": srs_list})
        state = {"engine": engine, "broker": broker, "edge": edge, "siprec": siprec,
                 "srs_ports": srs_ports, "tmp": tmp, "dialog": dialog, "env": siprec_env}
        yield state
        siprec = state["siprec"]  # type: ignore[assignment]  # a test may restart it
    finally:
        stop_process(dialog.proc)
        if edge is not None:
            edge.stop()
        if siprec is not None:
            siprec.stop()
        broker.stop()
        engine.kill()


async def _consume(events: list[dict[str, Any]]) -> Any:
    connection = await aio_pika.connect_robust(AMQP)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                              durable=True)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, "#")

    async def got(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            body = json.loads(message.body)
            name = body.get("_envelope", {}).get("event", "")
            if name.startswith("E_SIPREC"):
                events.append({"event": name, **body})

    await queue.consume(got)
    return connection


def _sipp_call(edge: str, tmp: Path, uac: Path = SCENARIOS / "uac_media.xml",
               uas: str = "../../media/scenarios/uas_media.xml", *, port: int = 0,
               call_id: str = "") -> tuple[subprocess.CompletedProcess[bytes], str]:
    """One sipp call with RTP both ways (4 s, then BYE; with a scenario that waits to be
    told, 4 s after `Told.tell`); (result, the UAS's address)."""
    sipp = Sipp(tmp)
    uas_port = free_port()
    try:
        sipp.uas(uas, uas_port, extra=["-mp", str(free_port())])
        result = subprocess.run(
            ["sipp", "-sf", str(uac), "-i", "127.0.0.1",
             "-p", str(port or free_port()), "-mp", str(free_port()), "-rsa", edge,
             f"127.0.0.1:{uas_port}", "-s", "rec", "-m", "1", "-nostdin",
             *(["-cid_str", call_id] if call_id else []),
             "-timeout", "50s", "-timeout_error"],
            cwd=tmp, capture_output=True, timeout=70)
    finally:
        sipp.stop()
    return result, f"127.0.0.1:{uas_port}"


class Told:
    """A sipp call (scenarios/*_until_told.xml, uac_hold.xml) that goes on until the test
    has looked at its recording: however slow the recording's start on a loaded host, the
    test never has to catch a state within a fixed call length."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.call_id = f"told-{os.getpid()}-{self.port}@127.0.0.1"
        self.tmp = tmp

    def start(self, edge: str, uac: Path = HERE / "scenarios" / "uac_media_until_told.xml",
              uas: str = "../../media/scenarios/uas_media.xml"
              ) -> asyncio.Task[tuple[subprocess.CompletedProcess[bytes], str]]:
        return asyncio.create_task(asyncio.to_thread(
            _sipp_call, edge, self.tmp, uac, uas, port=self.port, call_id=self.call_id))

    def tell(self) -> None:
        """The INFO the scenario waits for (sipp takes it by its Call-ID; unanswered)."""
        info = (f"INFO sip:sipp@127.0.0.1:{self.port} SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-told\r\n"
                "From: <sip:test@127.0.0.1>;tag=told\r\nTo: <sip:sipp@127.0.0.1>\r\n"
                f"Call-ID: {self.call_id}\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(info.encode(), ("127.0.0.1", self.port))


def _schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "contracts" / "mi" / f"{name}.json").read_text())
    return doc


def _while_recording(mesh: dict[str, Any], action: str) -> list[Any]:
    """Once the call is being recorded: `list` its siprec_list, or `stop` it by MI."""
    url = mesh["siprec"].mi
    listed: list[Any] = []

    def active() -> bool:
        got = mi(url, "siprec_list")
        listed[:] = [r for r in got["Recordings"] if r["state"] == "active"]
        return bool(listed)

    wait_until(active, 15, "an active recording in siprec_list")
    jsonschema.validate(mi(url, "siprec_list"), _schema("siprec_list")["result"])
    if action == "stop":
        answer = mi(url, "siprec_stop", {"callid": listed[0]["callid"]})
        jsonschema.validate(answer, _schema("siprec_stop")["result"])
        listed.append(answer)
    return listed


async def _record_one(mesh: dict[str, Any], tmp: Path, srs: list[FakeSrs], action: str = "",
                      hold: bool = False
                      ) -> tuple[subprocess.CompletedProcess[bytes], str, list[dict[str, Any]]]:
    """One recorded sipp call, which goes on until the test has looked: the `action` on
    siprec_list done, else E_SIPREC_START or E_SIPREC_FAILED seen."""
    events: list[dict[str, Any]] = []
    connection = await _consume(events)
    scenarios = (HERE / "scenarios" / "uac_hold.xml", "../../siprec/scenarios/uas_hold.xml"
                 ) if hold else ()
    sipp = Told(tmp)
    try:
        call = sipp.start(mesh["edge"].address, *scenarios)
        try:
            if action:
                mesh["during"] = await asyncio.to_thread(_while_recording, mesh, action)
            else:  # no SRS answering: E_SIPREC_FAILED after both INVITEs' Timer B (13 s)
                await asyncio.to_thread(wait_until, lambda: any(
                    e["event"] in ("E_SIPREC_START", "E_SIPREC_FAILED") for e in events),
                    25, "the recording's start or failure")
        finally:
            sipp.tell()
        result, uas = await call
        await asyncio.to_thread(wait_until, lambda: any(
            e["event"] in ("E_SIPREC_STOP", "E_SIPREC_FAILED") for e in events), 25,
            "the recording's end event")
    finally:
        await connection.close()
    return result, uas, events


def _only(srs: FakeSrs) -> SrsSession:
    assert len(srs.sessions) == 1, srs.sessions
    return next(iter(srs.sessions.values()))


async def test_a_call_is_recorded_with_both_directions_and_ended_with_it(
        mesh: dict[str, Any], tmp_path: Path) -> None:
    srs = await FakeSrs(port=mesh["srs_ports"][0]).start()
    try:
        result, uas, events = await _record_one(mesh, tmp_path, [srs], "list")
    finally:
        srs.close()
    listed = mesh.pop("during")
    assert listed[0]["srs"] == srs.uri and listed[0]["labels"] == ["1", "2"]
    assert listed[0]["rtpengine"] == mesh["engine"].url
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    session = _only(srs)
    assert session.problems == [] and session.status == 200, session.problems
    assert session.acked and session.ended  # ACKed by the edge, BYE when the call ended
    meta = session.metadata
    assert meta is not None and meta.datamode == "complete"
    assert sorted(session.labels) == ["1", "2"]
    caller = meta.participant(f"sip:sipp@127.0.0.1:{_from_port(session)}")
    callee = meta.participant(f"sip:rec@{uas}")
    assert caller.send == ["1"] and caller.recv == ["2"]
    assert callee.send == ["2"] and callee.recv == ["1"]
    # rtpengine forked both directions (both sipp sides replay one pcap, so one SSRC:
    # which direction is which label is the next test's, with distinct SSRCs)
    assert session.rtp.get("1", 0) > 50 and session.rtp.get("2", 0) > 50, session.rtp
    start = next(e for e in events if e["event"] == "E_SIPREC_START")
    stop = next(e for e in events if e["event"] == "E_SIPREC_STOP")
    assert start["srs"] == srs.uri and stop["srs"] == srs.uri
    assert start["rs_callid"] == session.call_id and stop["bye_status"] == 200
    assert stop["reason"] == "bye" and stop["duration"] > 1
    assert mi(mesh["siprec"].mi, "siprec_list") == {"Recordings": []}


def _from_port(session: SrsSession) -> str:
    """The caller's port, as the metadata's AOR must name it (the call's From URI)."""
    meta = session.metadata
    assert meta is not None
    aors = [p.aor for p in meta.participants if p.aor.startswith("sip:sipp@")]
    assert len(aors) == 1, meta.participants
    return aors[0].rsplit(":", 1)[1]


async def test_each_label_carries_its_own_party_s_media(mesh: dict[str, Any]) -> None:
    """alice and bob send RTP with their own SSRCs: label 1 (what the metadata says alice
    sends) carries alice's, label 2 bob's."""
    srs = await FakeSrs(port=mesh["srs_ports"][0]).start()
    caller, callee = SipUA("alice"), SipUA("bob")
    a, b = RtpPeer(ssrc=0x0A0A0A0A), RtpPeer(ssrc=0x0B0B0B0B)
    for x in (caller, callee, a, b):
        await x.open()
    try:
        # 3 s of RTP once the SRS has the recording (however slow its start)
        await _call(mesh["edge"], caller, callee, a, b, 3.0, ready=lambda: eventually(
            lambda: srs.sessions and _only(srs).acked, 15, "the SRS's session"))
        await asyncio.to_thread(wait_until, lambda: srs.sessions and _only(srs).ended, 10,
                                "BYE to the SRS")
    finally:
        for p in (a, b):
            await p.stop()
            p.close()
        caller.close()
        callee.close()
        srs.close()
    session = _only(srs)
    assert session.problems == []
    meta = session.metadata
    assert meta is not None
    alice = next(p for p in meta.participants if p.aor.startswith("sip:alice@"))
    assert alice.send == ["1"]
    assert session.ssrcs["1"] == {0x0A0A0A0A} and session.ssrcs["2"] == {0x0B0B0B0B}
    assert session.rtp["1"] > 50 and session.rtp["2"] > 50


async def test_a_refusing_srs_fails_over_to_the_next_one_and_mi_stops_it(
        mesh: dict[str, Any], tmp_path: Path) -> None:
    first = await FakeSrs(port=mesh["srs_ports"][0], status=503).start()
    second = await FakeSrs(port=mesh["srs_ports"][1]).start()
    try:
        result, _, events = await _record_one(mesh, tmp_path, [first, second], "stop")
    finally:
        first.close()
        second.close()
    assert result.returncode == 0
    assert _only(first).status == 503
    recorded = _only(second)
    assert recorded.status == 200 and recorded.ended and recorded.problems == []
    # stopped as soon as it was active: unsubscribed, the call's ~200 packets each way
    # that followed never reached the SRS
    assert sum(recorded.rtp.values()) < 50, recorded.rtp
    assert [e["srs"] for e in events if e["event"] == "E_SIPREC_START"] == [second.uri]
    # siprec_stop ended the recording mid-call (the call's BYE later found none)
    assert mesh.pop("during")[-1]["state"] == "ended"
    assert [e["reason"] for e in events if e["event"] == "E_SIPREC_STOP"] == ["mi"]


async def test_with_no_srs_the_call_completes_and_the_failure_is_an_event(
        mesh: dict[str, Any], tmp_path: Path) -> None:
    result, _, events = await _record_one(mesh, tmp_path, [])
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    failed = [e for e in events if e["event"] == "E_SIPREC_FAILED"]
    assert len(failed) == 1 and [t["srs"] for t in failed[0]["tried"]] == [
        f"sip:srs@127.0.0.1:{p}" for p in mesh["srs_ports"]]
    assert not any(e["event"] == "E_SIPREC_START" for e in events)


async def test_a_call_ended_by_the_dialog_service_ends_its_recording(
        mesh: dict[str, Any]) -> None:
    """dlg_end_dlg (what a dialog timeout or a billing system does): the dialog service
    sends BYE to both sides through the edge's Uac API, and the recording ends too."""
    srs = await FakeSrs(port=mesh["srs_ports"][0]).start()
    caller, callee = SipUA("carol"), SipUA("dave")
    a, b = RtpPeer(ssrc=0x0C0C0C0C), RtpPeer(ssrc=0x0D0D0D0D)
    for x in (caller, callee, a, b):
        await x.open()
    events: list[dict[str, Any]] = []
    connection = await _consume(events)
    try:
        dest = ("127.0.0.1", mesh["edge"].port)
        call_id = f"end-{os.getpid()}"
        target = f"sip:dave@127.0.0.1:{callee.port}"
        invite = caller.request("INVITE", target, call_id=call_id, from_tag="carol1",
                                to=target, cseq=1, body=a.sdp().encode())
        pending = asyncio.create_task(caller.transact(invite, dest))
        got, addr = await next_request(callee, "INVITE")
        callee.answer(got, addr, 200, to_tag="dave1", body=b.sdp().encode())
        ok = await pending
        routes = list(reversed(ok.get_all("Record-Route")))
        caller.send(caller.request("ACK", target, call_id=call_id, from_tag="carol1",
                                   to=target, cseq=1, routes=routes,
                                   to_tag="dave1").serialize(), dest)
        await asyncio.to_thread(wait_until, lambda: any(
            e["event"] == "E_SIPREC_START" for e in events), 15, "the recording")
        # the dialog service learns the call from the edge's stream (batched): once known
        await asyncio.to_thread(wait_until, lambda: mi(
            mesh["dialog"].mi, "dlg_end_dlg", {"callid": call_id}) == "OK", 10,
            "dlg_end_dlg OK")
        bye_a, addr_a = await next_request(caller, "BYE")
        caller.answer(bye_a, addr_a, 200)
        bye_b, addr_b = await next_request(callee, "BYE")
        callee.answer(bye_b, addr_b, 200)
        await asyncio.to_thread(wait_until, lambda: any(
            e["event"] == "E_SIPREC_STOP" for e in events), 15, "the recording's end")
    finally:
        await connection.close()
        for p in (a, b):
            await p.stop()
            p.close()
        caller.close()
        callee.close()
        srs.close()
    assert _only(srs).ended
    stop = next(e for e in events if e["event"] == "E_SIPREC_STOP")
    assert stop["reason"] == "dialog" and stop["callid"] == call_id


async def test_sipp_as_the_srs_accepts_the_recording_and_its_end(mesh: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    """sipp as SRS (scenarios/uas_srs.xml: its ereg checks fail the run when the INVITE
    lacks Require: siprec, +sip.src, the multipart metadata part or the labels): one
    recorded call, one INVITE taken, the BYE answered, sipp exits 0."""
    port = mesh["srs_ports"][0]
    srs = subprocess.Popen(
        ["sipp", "-sf", str(HERE / "scenarios" / "uas_srs.xml"), "-i", "127.0.0.1",
         "-p", str(port), "-mp", str(free_port()), "-m", "1", "-nostdin", "-bind_local",
         "-timeout", "40s", "-timeout_error", "-trace_err",
         "-error_file", str(tmp_path / "srs_err.log")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(wait_until, lambda: is_bound(port, "udp") or
                                srs.poll() is not None, 10, "sipp SRS bound")
        result, _, events = await _record_one(mesh, tmp_path, [])
        await asyncio.to_thread(wait_until, lambda: srs.poll() is not None, 30,
                                f"sipp SRS done (events {events})")
        code = srs.returncode
    finally:
        stop_process(srs)
    errors = (tmp_path / "srs_err.log").read_text(errors="replace")[-1500:] if (
        tmp_path / "srs_err.log").exists() else ""
    assert code == 0, errors
    assert result.returncode == 0
    assert [e["event"] for e in events] == ["E_SIPREC_START", "E_SIPREC_STOP"]


async def test_a_recorder_killed_mid_call_ends_the_recording_after_its_restart(
        mesh: dict[str, Any]) -> None:
    """kill -9 of the recorder while a call is recorded; the call ends while it is down
    (the edge's siprec_stop finds nobody); restarted, it takes the recording back from
    its store, sees rtpengine no longer has the call, and sends the SRS its BYE."""
    srs = await FakeSrs(port=mesh["srs_ports"][0]).start()
    caller, callee = SipUA("erin"), SipUA("frank")
    a, b = RtpPeer(ssrc=0x0E0E0E0E), RtpPeer(ssrc=0x0F0F0F0F)
    for x in (caller, callee, a, b):
        await x.open()
    events: list[dict[str, Any]] = []
    connection = await _consume(events)
    try:
        dest = ("127.0.0.1", mesh["edge"].port)
        call_id = f"kill-{os.getpid()}"
        target = f"sip:frank@127.0.0.1:{callee.port}"
        invite = caller.request("INVITE", target, call_id=call_id, from_tag="erin1",
                                to=target, cseq=1, body=a.sdp().encode())
        pending = asyncio.create_task(caller.transact(invite, dest))
        got, addr = await next_request(callee, "INVITE")
        callee.answer(got, addr, 200, to_tag="frank1", body=b.sdp().encode())
        ok = await pending
        routes = list(reversed(ok.get_all("Record-Route")))
        caller.send(caller.request("ACK", target, call_id=call_id, from_tag="erin1",
                                   to=target, cseq=1, routes=routes,
                                   to_tag="frank1").serialize(), dest)
        await asyncio.to_thread(wait_until, lambda: any(
            e["event"] == "E_SIPREC_START" for e in events), 15, "the recording")
        mesh["siprec"].proc.kill()  # SIGKILL: nothing is cleaned up
        mesh["siprec"].proc.wait(10)
        bye = caller.request("BYE", target, call_id=call_id, from_tag="erin1", to=target,
                             cseq=2, routes=routes, to_tag="frank1")
        pending = asyncio.create_task(caller.transact(bye, dest))
        got, addr = await next_request(callee, "BYE")
        callee.answer(got, addr, 200)
        assert (await pending).status == 200  # the call ended; no recorder heard of it
        # The edge tries its siprec_stop again for RETRY_WINDOW s (a recorder may be
        # restarting); restarted only once it gave up, the recorder can learn of the
        # call's end from rtpengine alone.
        await asyncio.to_thread(wait_until, lambda: re.search(
            rf"siprec_stop_failed\s.*call_id={re.escape(call_id)}\b",
            mesh["edge"].log_text()) is not None, 15, "the edge giving up its stop")
        assert not _only(srs).ended
        mesh["siprec"] = await asyncio.to_thread(start_siprec, mesh["env"])
        await asyncio.to_thread(wait_until, lambda: _only(srs).ended, 15,
                                "the SRS's BYE from the restarted recorder")
        await asyncio.to_thread(wait_until, lambda: any(
            e["event"] == "E_SIPREC_STOP" for e in events), 10, "E_SIPREC_STOP")
    finally:
        await connection.close()
        for p in (a, b):
            await p.stop()
            p.close()
        caller.close()
        callee.close()
        srs.close()
    stop = next(e for e in events if e["event"] == "E_SIPREC_STOP")
    assert stop["callid"] == call_id and stop["reason"] == "call-gone"
    assert mi(mesh["siprec"].mi, "siprec_list") == {"Recordings": []}


async def test_a_hold_re_invite_sends_the_srs_the_new_metadata(mesh: dict[str, Any],
                                                               tmp_path: Path) -> None:
    """sipp's caller puts the call on hold (re-INVITE a=sendonly) and takes it off: the
    recording follows (RFC 7866 §8.1.2, RFC 7865 §6.1.1): the SRS gets a re-INVITE in its
    session with a complete snapshot where the callee sends nothing and its stream
    a=inactive, then one with both streams back; the call's BYE still ends it."""
    srs = await FakeSrs(port=mesh["srs_ports"][0]).start()
    try:
        result, uas, events = await _record_one(mesh, tmp_path, [srs], hold=True)
    finally:
        srs.close()
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    session = _only(srs)
    assert session.problems == [] and session.ended
    assert [directions for _, directions, _ in session.updates] == [
        {"1": "sendonly", "2": "inactive"}, {"1": "sendonly", "2": "sendonly"}]
    assert all(problems == [] for _, _, problems in session.updates), session.updates
    (held, _, _), (resumed, _, _) = session.updates
    assert held is not None and resumed is not None and held.datamode == "complete"
    caller = held.participant(f"sip:sipp@127.0.0.1:{_from_port(session)}")
    callee = held.participant(f"sip:rec@{uas}")
    assert caller.send == ["1"] and caller.recv == []  # the callee's stream is on hold
    assert callee.send == [] and callee.recv == ["1"]
    back = resumed.participant(f"sip:rec@{uas}")
    assert back.send == ["2"] and back.recv == ["1"]
    # the same session and participants throughout (RFC 7865 §6.10: stable ids)
    first = session.metadata
    assert first is not None and held.session_ids == resumed.session_ids == first.session_ids
    stop = next(e for e in events if e["event"] == "E_SIPREC_STOP")
    assert stop["reason"] == "bye" and stop["bye_status"] == 200
    assert session.rtp.get("1", 0) > 50, session.rtp


async def test_an_srs_bye_ends_the_recording_and_the_call_goes_on(
        mesh: dict[str, Any], tmp_path: Path) -> None:
    """The SRS ends the recording session (RFC 7866 §7.1.2): its BYE reaches the edge
    (our Contact), which answers it and tells the recorder: E_SIPREC_STOP reason
    srs-bye, the recording gone from siprec_list, and the sipp call completes."""
    srs = await FakeSrs(port=mesh["srs_ports"][0]).start()
    events: list[dict[str, Any]] = []
    connection = await _consume(events)
    sipp = Told(tmp_path)
    try:
        call = sipp.start(mesh["edge"].address)
        try:
            await asyncio.to_thread(wait_until, lambda: any(
                e["event"] == "E_SIPREC_START" for e in events), 15, "the recording")
            session = _only(srs)
            status = await srs.bye(session.call_id)
            await asyncio.to_thread(wait_until, lambda: any(
                e["event"] == "E_SIPREC_STOP" for e in events), 15, "E_SIPREC_STOP")
            listed = mi(mesh["siprec"].mi, "siprec_list")
        finally:
            sipp.tell()  # the call ends only now: the SRS's BYE came while it was up
        result, _ = await call
    finally:
        await connection.close()
        srs.close()
    assert status == 200 and session.ended
    assert listed == {"Recordings": []}  # while the call was still up
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    stops = [e for e in events if e["event"] == "E_SIPREC_STOP"]
    assert len(stops) == 1 and stops[0]["reason"] == "srs-bye"  # the call's BYE: no 2nd
    assert stops[0]["rs_callid"] == session.call_id
