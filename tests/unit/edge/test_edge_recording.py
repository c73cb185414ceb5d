"""`ctx.record()` in the proxy core (services/edge/recording.py): the recorder is asked
once the INVITE's 2xx went upstream, with the call's facts and its rtpengine instance,
never for a failed call; the media session's own final hook still runs (both hooks are
chained); the default routing with `[edge] siprec_srs` records and stops."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from services.edge.recording import RecordingClient
from shared.sip import Request
from tests.unit.edge.proxyharness import Harness, answer, invite, to

UAS = 5090


class Client(RecordingClient):
    def __init__(self, default_srs: str = "") -> None:
        super().__init__(addresses=["127.0.0.1:1"], default_srs=default_srs)
        self.asked: list[dict[str, Any]] = []
        self.stopped: list[str] = []
        self.edge_uac = "127.0.0.1:7000"

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        coro.close()  # what it would have run is recorded by start/stop below

    async def start(self, params: dict[str, Any]) -> None:
        self.asked.append(dict(params))

    async def stop(self, call_id: str, reason: str = "bye") -> None:
        self.stopped.append(call_id)


C = TypeVar("C", bound="Client")


def _spawned(client: C) -> C:
    """Make spawn record the call (start/stop run synchronously here)."""

    def spawn(coro: Coroutine[Any, Any, Any]) -> None:
        try:
            coro.send(None)
        except StopIteration:
            pass

    client.spawn = spawn  # type: ignore[method-assign]
    return client


class Router:
    def __init__(self, **record: Any) -> None:
        self.record = record
        self.finals: list[int] = []

    def request_route(self, request: Any, ctx: Any) -> None:
        ctx.on_final = self.finals.append  # another hook set first: both must run
        ctx.record(**self.record)
        ctx.forward()


def _harness(router: Any, client: Client) -> Harness:
    h = Harness(router)
    h.core.services["siprec"] = client
    return h


@pytest.mark.parametrize(("status", "recorded"), [(200, True), (486, False)])
def test_the_recorder_is_asked_once_the_call_is_answered(status: int, recorded: bool) -> None:
    client = _spawned(Client())
    router = Router(srs="sip:srs@10.0.0.5:5090", group="sales", headers=[("X-T", "1")])
    h = _harness(router, client)
    h.feed(invite())
    fwd = to(h.sent, UAS)[0]
    assert isinstance(fwd, Request)
    assert client.asked == []  # nothing before the final answer
    h.feed(answer(fwd, status))
    assert router.finals == [status]
    if not recorded:
        assert client.asked == []
        return
    (params,) = client.asked
    assert params["callid"] == "c1" and params["srs"] == "sip:srs@10.0.0.5:5090"
    assert params["group"] == "sales" and params["headers"] == [["X-T", "1"]]
    assert params["caller"].startswith("sip:") and params["callee"] == "sip:bob@127.0.0.1"
    assert params["instance"] == ""  # no media offer here: the recorder will refuse it
    assert params["edge"] == "127.0.0.1:7000"


def test_record_needs_an_srs_and_an_initial_invite() -> None:
    class NoSrs:
        error: Exception | None = None

        def request_route(self, request: Any, ctx: Any) -> None:
            try:
                ctx.record()
            except ValueError as exc:
                self.error = exc
            ctx.forward()

    router = NoSrs()
    _harness(router, Client()).feed(invite())
    assert router.error is not None and "SRS" in str(router.error)


def test_the_default_routing_records_and_stops_with_siprec_srs() -> None:
    client = _spawned(Client(default_srs="sip:srs@10.0.0.5:5090"))
    h = _harness(None, client)
    h.feed(invite())
    fwd = to(h.sent, UAS)[0]
    assert isinstance(fwd, Request)
    h.feed(answer(fwd, 200))
    assert [p["srs"] for p in client.asked] == ["sip:srs@10.0.0.5:5090"]
    h.feed(invite(method="BYE", to_tag="b1", branch="z9hG4bKbye"))
    assert client.stopped == ["c1"]


def test_without_siprec_srs_the_default_routing_asks_nothing() -> None:
    client = _spawned(Client())
    h = _harness(None, client)
    h.feed(invite())
    fwd = to(h.sent, UAS)[0]
    assert isinstance(fwd, Request)
    h.feed(answer(fwd, 200))
    h.feed(invite(method="BYE", to_tag="b1", branch="z9hG4bKbye"))
    assert client.asked == [] and client.stopped == []


async def test_a_stop_is_asked_of_each_recorder_until_one_has_the_call() -> None:
    """Two recorders: the first answers 404 (not its recording), the second ends it; a
    start's refusal (400) is an answer, not a reason to ask another recorder."""
    from aiohttp import web

    asked: list[tuple[int, str]] = []

    def recorder(index: int, has: bool) -> web.Application:
        async def mi(request: web.Request) -> web.Response:
            body = await request.json()
            asked.append((index, body["method"]))
            if body["method"] == "siprec_stop" and has:
                return web.json_response({"jsonrpc": "2.0", "id": body["id"],
                                          "result": {"state": "ended"}})
            code = 404 if body["method"] == "siprec_stop" else 400
            return web.json_response({"jsonrpc": "2.0", "id": body["id"],
                                      "error": {"code": code, "message": "no"}})

        app = web.Application()
        app.router.add_post("/mi", mi)
        return app

    runners = []
    urls = []
    for index, has in ((0, False), (1, True)):
        runner = web.AppRunner(recorder(index, has))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/mi")  # type: ignore[union-attr]
    client = RecordingClient(addresses=urls)
    try:
        assert await client.call("siprec_stop", {"callid": "c1"}) == {"state": "ended"}
        assert asked == [(0, "siprec_stop"), (1, "siprec_stop")]
        asked.clear()
        with pytest.raises(RuntimeError, match="400"):
            await client.call("siprec_start", {"callid": "c1"})
        assert asked == [(0, "siprec_start")]
    finally:
        await client.close()
        for runner in runners:
            await runner.cleanup()


# -- following the call and the SRS's BYE -------------------------------------------------
HOLD_SDP = ("v=0\r\no=a 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n")


def _with_body(message: str, body: str) -> str:
    head = message.replace("Content-Length: 0\r\n\r\n", "Content-Type: application/sdp\r\n")
    return f"{head}Content-Length: {len(body.encode())}\r\n\r\n{body}"


class Updates(Client):
    def __init__(self, default_srs: str = "") -> None:
        super().__init__(default_srs)
        self.updated: list[dict[str, Any]] = []
        self.rpc: list[tuple[str, dict[str, Any]]] = []
        self.rpc_error: Exception | None = None

    async def update(self, params: dict[str, Any]) -> None:
        self.updated.append(dict(params))

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.rpc.append((method, params))
        if self.rpc_error is not None:
            raise self.rpc_error
        return {"state": "ended"}


@pytest.mark.parametrize(("sdp", "direction"), [
    (HOLD_SDP, "sendonly"),
    (HOLD_SDP.replace("a=sendonly", "a=inactive"), "inactive"),
    (HOLD_SDP.replace("a=sendonly\r\n", ""), "sendrecv"),
    (HOLD_SDP.replace("a=sendonly\r\n", "").replace("t=0 0", "a=recvonly\r\nt=0 0"),
     "recvonly"),  # session level
    (HOLD_SDP.replace("a=sendonly\r\n", "").replace("IN IP4 127.0.0.1\r\nt", "IN IP4 0.0.0.0"
                                                      "\r\nt"), "sendonly"),  # RFC 2543 hold
    ("", None),
])
def test_offer_direction_reads_rfc_3264_hold(sdp: str, direction: str | None) -> None:
    from services.edge.recording import offer_direction

    assert offer_direction(sdp.encode()) == direction


def test_an_accepted_re_invite_tells_the_recorder_its_direction() -> None:
    client = _spawned(Updates(default_srs="sip:srs@10.0.0.5:5090"))
    h = _harness(None, client)
    h.feed(invite())
    fwd = to(h.sent, UAS)[0]
    assert isinstance(fwd, Request)
    h.feed(answer(fwd, 200))
    reinvite = _with_body(invite(to_tag="b1", branch="z9hG4bKre1"), HOLD_SDP)
    h.feed(reinvite)
    fwd2 = [m for m in to(h.sent, UAS) if isinstance(m, Request)][-1]
    assert fwd2.to_tag == "b1" and client.updated == []  # not before it is accepted
    h.feed(answer(fwd2, 200))
    assert client.updated == [{"callid": "c1", "from_tag": "a1", "direction": "sendonly"}]
    h.feed(_with_body(invite(to_tag="b1", branch="z9hG4bKre2"), HOLD_SDP))
    fwd3 = [m for m in to(h.sent, UAS) if isinstance(m, Request)][-1]
    h.feed(answer(fwd3, 488))
    assert len(client.updated) == 1  # a refused re-INVITE changes nothing


SRS_BYE = ("BYE sip:src@127.0.0.1:5060;transport=udp SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKsrsbye;rport\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:srs@127.0.0.1:5099>;tag=s1\r\n"
           "To: <sip:src@127.0.0.1>;tag=l1\r\nCall-ID: {cid}\r\nCSeq: 1 BYE\r\n"
           "Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("error", "status"), [
    (None, 200), (RuntimeError("no siprec service answered: 404 Recording not found"), 481)])
async def test_an_srs_bye_is_answered_and_reaches_the_recorder(
        error: Exception | None, status: int) -> None:
    from tests.unit.edge.test_edge_registrar_routing import run

    client = Updates()
    client.rpc_error = error
    h = _harness(None, client)
    sends = await run(h, h.feed(SRS_BYE.format(cid="abc-siprec"), peer=("127.0.0.1", 5099)))
    replies = [m for m in to(sends, 5099) if not isinstance(m, Request)]
    assert [r.status for r in replies] == [status]
    assert client.rpc == [("siprec_srs_bye", {"rs_callid": "abc-siprec"})]
    assert to(h.sent, UAS) == []  # not relayed anywhere


def test_a_bye_of_another_call_to_src_is_not_taken_for_the_srs() -> None:
    client = _spawned(Updates())
    h = _harness(None, client)
    h.feed(SRS_BYE.format(cid="plain-call"), peer=("127.0.0.1", 5099))
    assert client.rpc == []


async def test_calls_at_once_wait_for_the_one_discovery_lookup() -> None:
    """The first calls after start: each must see the recorder the lookup finds (a second
    call used to get an empty list while the first one's lookup was out)."""
    import asyncio
    from types import SimpleNamespace

    class Registry:
        lookups = 0

        async def healthy(self, service: str) -> list[Any]:
            Registry.lookups += 1
            await asyncio.sleep(0.05)
            return [SimpleNamespace(meta={"mi_url": "http://127.0.0.1:9/mi"})]

    client = RecordingClient(registry=Registry())
    first, second = await asyncio.gather(client.urls(), client.urls())
    assert first == second == ["http://127.0.0.1:9/mi"] and Registry.lookups == 1


async def test_closing_lets_the_stop_in_flight_reach_the_recorder() -> None:
    """A stopping edge (drain, rolling restart) hands over the siprec_stop of the last BYE
    it relayed before closing: the recorder has it when close() returns."""
    from aiohttp import web

    asked: list[str] = []

    async def mi(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body["method"])
        return web.json_response({"jsonrpc": "2.0", "id": body["id"],
                                  "result": {"state": "ended"}})

    app = web.Application()
    app.router.add_post("/mi", mi)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = RecordingClient(addresses=[f"http://127.0.0.1:{port}/mi"])
    try:
        client.spawn(client.stop("last-call"))
        await client.close()
        assert asked == ["siprec_stop"]
    finally:
        await runner.cleanup()


async def test_a_request_no_recorder_took_is_sent_again_to_the_one_discovery_names() -> None:
    """A recorder restarting (issue 20): the one this edge knows refuses the connection
    or answers 503 (stopping: it took nothing); discovery is asked again and the request
    goes to the replacement, once. An answer (even 404 from every one) is never retried."""
    from types import SimpleNamespace

    from aiohttp import web

    asked: list[tuple[str, str]] = []

    def recorder(name: str, code: int) -> web.Application:
        async def mi(request: web.Request) -> web.Response:
            body = await request.json()
            asked.append((name, body["method"]))
            if code:
                return web.json_response({"jsonrpc": "2.0", "id": body["id"],
                                          "error": {"code": code, "message": "no"}})
            return web.json_response({"jsonrpc": "2.0", "id": body["id"],
                                      "result": {"state": "active"}})

        app = web.Application()
        app.router.add_post("/mi", mi)
        return app

    runners, urls = [], {}
    for name, code in (("stopping", 503), ("new", 0), ("other", 404)):
        runner = web.AppRunner(recorder(name, code))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        urls[name] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/mi"  # type: ignore[union-attr]

    class Registry:
        answers = [["http://127.0.0.1:9/mi", urls["stopping"]], [urls["new"]],
                   [urls["other"]]]

        async def healthy(self, service: str) -> list[Any]:
            found = Registry.answers.pop(0) if len(Registry.answers) > 1 else \
                Registry.answers[0]
            return [SimpleNamespace(meta={"mi_url": u}) for u in found]

    client = RecordingClient(registry=Registry())
    try:
        assert await client.call("siprec_start", {"callid": "c1"}) == {"state": "active"}
        assert asked == [("stopping", "siprec_start"), ("new", "siprec_start")]
        asked.clear()
        client._looked_at = -10.0  # discovery now names only a recorder without the call
        with pytest.raises(RuntimeError, match="404"):
            await client.call("siprec_stop", {"callid": "c1"})
        assert asked == [("other", "siprec_stop")]  # answered: not sent again
    finally:
        await client.close()
        for runner in runners:
            await runner.cleanup()
