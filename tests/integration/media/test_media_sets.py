"""rtpengine sets with the real daemon: weights, failover, MI, reload, several brokers.

Two rtpengine daemons, E1 (weight 1) and E2 (weight 3), provisioned in set 0 with
`sipmesh rtpengine add`; **two** media brokers; one edge anchoring every call that asks
the brokers in turn, so a call's offer, answer and delete usually reach different brokers
(they must agree on the call's instance, or sessions would be left behind).  The brokers
use short timers (one transmission 0.3 s, 2 tries, recheck after 1 s) and publish their
events to a RabbitMQ exchange of this test.

* 400 sipp calls split 1:3 between the daemons (each daemon's own session counter), and
  every session is deleted.  Tolerance: the number on E1 is Binomial(400, 1/4) for a fair
  hash of random Call-IDs, mean 100, sd 8.7; +-35 (4 sd) fails by chance about once in
  16,000 runs.
* E2 killed: the calls still succeed, all on E1; rtpengine_show shows E2 disabled,
  E_RTPENGINE_STATUS says inactive; E2 restarted: pinged back, enabled, event active.
* A call placed while its home E2 was down stays on E1 after E2 came back: its BYE, through
  the other broker, deletes it on E1.
* rtpengine_enable url 0/1; rtpengine_reload picks up a set added with the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from services.media.sets import EngineSets
from tests.integration.edge.edge_harness import (
    Edge,
    Sipp,
    free_port,
    sipp_errors,
    start_edge,
    summary,
    wait_until,
)
from tests.integration.media.harness import (
    Broker,
    RtpEngine,
    mi,
    ng,
    offer_on,
    start_broker,
)
from tests.integration.media.rtp_peer import RtpPeer, sdp_media
from tests.integration.media.sip_ua import SipUA, next_request
from tests.integration.media.test_media_calls import sipmesh
from tests.support.service_logs import ServiceLogs

pytestmark = pytest.mark.peers
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
EXCHANGE = f"sipmesh.test.media.{os.getpid()}"


def sessions(engine: RtpEngine) -> int:
    reply = ng(engine.ng_port, {"command": "statistics"}) or {}
    return int(reply["statistics"]["totalstatistics"]["managedsessions"])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory,
        service_logs: ServiceLogs) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("media-sets")
    e1, e2 = RtpEngine(tmp).start(), RtpEngine(tmp).start()
    for name, engine in (("rtpengine E1", e1), ("rtpengine E2", e2)):
        service_logs.add(name, tmp / f"rtpengine-{engine.ng_port}.log")
    db = tmp / "media.sqlite"
    for engine, weight in ((e1, "1"), (e2, "3")):
        out = sipmesh("rtpengine", "add", engine.url, "--weight", weight, "--db", str(db))
        assert out.returncode == 0, out.stderr
    env = {"SIPMESH_MEDIA_RTPENGINE_TOUT": "0.3", "SIPMESH_MEDIA_RTPENGINE_RETR": "2",
           "SIPMESH_MEDIA_RTPENGINE_DISABLE_TOUT": "1", "SIPMESH_MEDIA_RECHECK_TICK": "0.2",
           "SIPMESH_EVENTS_RABBITMQ_URL": AMQP, "SIPMESH_EVENTS_EXCHANGE": EXCHANGE}
    brokers: list[Broker] = []
    edge: Edge | None = None
    extra: list[RtpEngine] = []
    try:
        for i in (1, 2):
            service_logs.add(f"broker {i}", tmp / f"broker-{i}.log")
            brokers.append(start_broker(db, env, log=tmp / f"broker-{i}.log"))
        # The RFC's T1 and a long Timer C, not start_edge's 0.1 s and 3 s.  On a starved
        # machine (CI beside other work) the edge's INVITE retransmission, 0.1 s after the
        # first copy, reached sipp's UAS after it had answered; sipp's UAS aborts such a
        # call ("expecting ACK, received INVITE"), its BYE then went unanswered and the
        # edge's Timer F (64 x T1: 6.4 s) answered it 408: 1 to 4 calls of 400 in 2 runs
        # of 10 under 8 busy loops on 2 cores, 0 in 7 runs with these timers (a UAS
        # starved beyond 0.5 s still would).  No broker disabled an instance meanwhile:
        # nothing of rtpengine sets was at fault.
        edge = start_edge({"SIPMESH_EDGE_MEDIA": ",".join(b.grpc for b in brokers),
                           "SIPMESH_EDGE_MEDIA_ANCHOR": "true",
                           "SIPMESH_EDGE_T1": "0.5", "SIPMESH_EDGE_TIMER_C": "60"})
        service_logs.add("edge", edge.log_text)
        yield {"e1": e1, "e2": e2, "db": db, "brokers": brokers, "edge": edge, "tmp": tmp,
               "extra": extra}
    finally:
        if edge is not None:
            edge.stop()
        for b in brokers:
            b.stop()
        for engine in (e1, e2, *extra):
            engine.kill()


def calls(rig: dict[str, Any], tmp: Path, n: int, rate: int = 40) -> None:
    sipp = Sipp(tmp)
    uas = free_port()
    try:
        sipp.uas("../../media/scenarios/uas_sdp.xml", uas,
                 extra=["-trace_err", "-error_file", str(tmp / "uas_err.log")])
        result = sipp.uac("../../media/scenarios/uac_sdp.xml", rig["edge"], f"127.0.0.1:{uas}",
                          calls=n, rate=rate, timeout=60)
        assert result.returncode == 0, "\n".join(
            [summary(result), sipp_errors(tmp), "UAS:", sipp_errors(tmp, name="uas_err.log")])
    finally:
        sipp.stop()


def node(rig: dict[str, Any], broker: Broker, engine: RtpEngine) -> dict[str, Any]:
    shown = mi(broker.mi, "rtpengine_show")
    return next(n for s in shown for n in s["Nodes"] if n["url"] == engine.url)


def test_weights_split_calls_and_every_broker_agrees(rig: dict[str, Any],
                                                     tmp_path: Path) -> None:
    e1, e2 = rig["e1"], rig["e2"]
    before = sessions(e1), sessions(e2)
    calls(rig, tmp_path, 400)
    on_e1, on_e2 = sessions(e1) - before[0], sessions(e2) - before[1]
    assert on_e1 + on_e2 == 400
    assert 65 <= on_e1 <= 135, (on_e1, on_e2)
    # offer, answer and delete went to alternating brokers: nothing left behind
    assert (e1.calls(), e2.calls()) == ([], [])


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
            if body.get("_envelope", {}).get("event") == "E_RTPENGINE_STATUS":
                events.append(body)

    await queue.consume(got)
    return connection


async def test_a_dead_instance_is_disabled_and_enabled_again(rig: dict[str, Any],
                                                             tmp_path: Path) -> None:
    e1, e2 = rig["e1"], rig["e2"]
    broker = rig["brokers"][0]
    events: list[dict[str, Any]] = []
    connection = await _consume(events)
    try:
        e2.kill()
        before = sessions(e1)
        await asyncio.to_thread(calls, rig, tmp_path, 40, 40)
        assert sessions(e1) - before == 40  # every new call on the survivor
        assert node(rig, broker, e2)["disabled"] == 1
        assert node(rig, broker, e1)["disabled"] == 0

        def inactive() -> bool:
            return any(e["socket"] == e2.url and e["status"] == "inactive" for e in events)

        await asyncio.to_thread(wait_until, inactive, 10, "E_RTPENGINE_STATUS inactive")
        assert {e["set"] for e in events} == {0}
        e2.start()  # same ports: the recheck pings find it
        await asyncio.to_thread(wait_until, lambda: all(
            node(rig, b, e2)["disabled"] == 0 for b in rig["brokers"]), 15, "E2 enabled")
        await asyncio.to_thread(wait_until, lambda: any(
            e["socket"] == e2.url and e["status"] == "active" for e in events), 10,
            "E_RTPENGINE_STATUS active")
        before2 = sessions(e2)
        await asyncio.to_thread(calls, rig, tmp_path, 40, 40)
        assert sessions(e2) > before2  # back in the rotation
    finally:
        await connection.close()


def _call_id_with_home(rig: dict[str, Any], url: str) -> str:
    sets = EngineSets()
    sets.load([(0, f"{rig['e1'].url}=1 {rig['e2'].url}=3")])
    for i in range(1000):
        key = f"sticky-{os.getpid()}-{i}"
        if sets.home(0, key).url == url:  # type: ignore[union-attr]
            return key
    raise AssertionError("no such call id")


async def test_a_call_moved_off_its_home_is_deleted_where_it_is(rig: dict[str, Any]) -> None:
    e1, e2 = rig["e1"], rig["e2"]
    edge: Edge = rig["edge"]
    dest = ("127.0.0.1", edge.port)
    call_id = _call_id_with_home(rig, e2.url)
    caller, callee, peer = SipUA("erin"), SipUA("frank"), RtpPeer()
    for x in (caller, callee, peer):
        await x.open()
    try:
        e2.kill()
        # wake both brokers up to E2's death (a call each way)
        await asyncio.to_thread(calls, rig, rig["tmp"], 4, 10)
        target = f"sip:frank@127.0.0.1:{callee.port}"
        invite = caller.request("INVITE", target, call_id=call_id, from_tag="e1", to=target,
                                cseq=1, body=peer.sdp().encode())
        pending = asyncio.create_task(caller.transact(invite, dest))
        got, addr = await next_request(callee, "INVITE")
        assert e1.in_range(sdp_media(got.body.decode())[1])  # on E1, not its home
        callee.answer(got, addr, 200, to_tag="f1", body=peer.sdp().encode())
        ok = await pending
        routes = list(reversed(ok.get_all("Record-Route")))
        assert call_id in e1.calls()
        e2.start()
        await asyncio.to_thread(wait_until, lambda: all(
            node(rig, b, e2)["disabled"] == 0 for b in rig["brokers"]), 15, "E2 enabled")
        for cseq in (2, 3):  # the BYE's delete may reach either broker: try both
            if call_id not in e1.calls():
                break
            bye = caller.request("BYE", target, call_id=call_id, from_tag="e1", to=target,
                                 cseq=cseq, routes=routes, to_tag="f1")
            pending = asyncio.create_task(caller.transact(bye, dest))
            got, addr = await next_request(callee, "BYE")
            callee.answer(got, addr, 200)
            assert (await pending).status == 200
        assert call_id not in e1.calls() and call_id not in e2.calls()
    finally:
        caller.close()
        callee.close()
        peer.close()


def test_rtpengine_enable_and_reload(rig: dict[str, Any], tmp_path: Path) -> None:
    e2 = rig["e2"]
    brokers: list[Broker] = rig["brokers"]
    for b in brokers:
        assert mi(b.mi, "rtpengine_enable", {"url": e2.url, "enable": 0}) == "OK"
    assert node(rig, brokers[0], e2) == {**node(rig, brokers[0], e2), "disabled": 1,
                                         "recheck_ticks": 4294967295}
    before = sessions(e2)
    calls(rig, tmp_path, 20, 40)
    assert sessions(e2) == before  # an operator's disable holds
    assert mi(brokers[0].mi, "rtpengine_enable", ["udp:127.0.0.1:9", 1])["code"] == 404
    for b in brokers:
        assert mi(b.mi, "rtpengine_enable", [e2.url, "1"]) == "OK"
    assert node(rig, brokers[0], e2)["disabled"] == 0
    # a new set in the database, used after rtpengine_reload without a restart
    e3 = RtpEngine(rig["tmp"]).start()
    rig["extra"].append(e3)
    out = sipmesh("rtpengine", "add", e3.url, "--set", "2", "--db", str(rig["db"]))
    assert out.returncode == 0, out.stderr
    assert [s["Set"] for s in mi(brokers[0].mi, "rtpengine_show")] == [0]
    assert mi(brokers[0].mi, "rtpengine_reload") == "OK"
    shown = mi(brokers[0].mi, "rtpengine_show")
    assert [s["Set"] for s in shown] == [0, 2]
    assert shown[1]["Nodes"] == [{"url": e3.url, "index": 2, "disabled": 0, "weight": 1,
                                  "recheck_ticks": 0}]
    instance = asyncio.run(offer_on(brokers[0].grpc, set_id=2))
    assert instance == e3.url and len(e3.calls()) == 1


def test_cli_lists_what_it_added(rig: dict[str, Any]) -> None:
    out = sipmesh("rtpengine", "list", "--json", "--db", str(rig["db"]))
    assert out.returncode == 0
    rows = json.loads(out.stdout)
    assert {(r["socket"], r["set_id"]) for r in rows} >= {
        (f"{rig['e1'].url}", 0), (f"{rig['e2'].url}=3", 0)}
