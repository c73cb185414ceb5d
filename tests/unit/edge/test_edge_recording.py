"""`ctx.record()` in the proxy core (services/edge/recording.py): the recorder is asked
once the INVITE's 2xx went upstream, with the call's facts and its rtpengine instance,
never for a failed call; the media session's own final hook still runs (both hooks are
chained); the default routing with `[edge] siprec_srs` records and stops."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

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


def _spawned(client: Client) -> Client:
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
