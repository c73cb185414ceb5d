"""reply_route returning an awaitable (services/edge/media.py rewrites a 183/200's SDP
that way): the response waits for it, a transaction's responses keep their order
whatever order their hooks finish in, and the route context's on_final hook hears the
final status once (a failed call's media session is deleted from it)."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.sip import Request, Response
from tests.unit.edge.proxyharness import Harness, answer, invite, msg, to

UAS = 5090


class Router:
    def __init__(self) -> None:
        self.finals: list[int] = []
        self.events: dict[int, asyncio.Event] = {}

    def request_route(self, request: Any, ctx: Any) -> None:
        ctx.on_final = self.finals.append
        ctx.forward()

    def reply_route(self, response: Any, ctx: Any) -> Any:
        if response.status in (183, 200):
            event = self.events.setdefault(response.status, asyncio.Event())

            async def rewrite() -> None:
                await event.wait()
                response.add_header("X-Rewritten", str(response.status))

            return rewrite()
        return None


def _resume(h: Harness, index: int) -> list[Any]:
    item = h.awaits[index]
    return h._collect(item.resume(h.now))


def status(message: Request | Response) -> int:
    assert isinstance(message, Response)
    return message.status


async def test_responses_wait_for_their_hook_and_keep_their_order() -> None:
    router = Router()
    h = Harness(router)
    h.feed(invite())
    fwd = to(h.sent, UAS)[0]
    assert isinstance(fwd, Request)
    assert not h.feed(answer(fwd, 183))  # held: its hook is running
    assert not h.feed(answer(fwd, 200))  # held behind the 183
    assert len(h.awaits) == 2
    # the 200's hook finishes first: still nothing goes out before the 183
    router.events[200].set()
    await h.awaits[1].awaitable
    assert _resume(h, 1) == []
    router.events[183].set()
    await h.awaits[0].awaitable
    out = [msg(s) for s in _resume(h, 0)]
    assert [(status(m), m.get("X-Rewritten")) for m in out] == [(183, "183"), (200, "200")]
    assert router.finals == [200]


def test_a_synchronous_reply_route_relays_at_once_and_final_is_told_once() -> None:
    router = Router()
    h = Harness(router)
    h.feed(invite())
    fwd = to(h.sent, UAS)[0]
    assert isinstance(fwd, Request)
    relayed = h.feed(answer(fwd, 486))
    assert [status(m) for m in to(relayed, 5091)] == [486]
    assert router.finals == [486]
    h.feed(answer(fwd, 486))  # a retransmission: no second final
    assert router.finals == [486]


def test_a_reply_routes_own_answer_tells_on_final() -> None:
    class Refuse:
        finals: list[int] = []

        def request_route(self, request: Any, ctx: Any) -> None:
            ctx.on_final = self.finals.append
            ctx.reply(403)

    router = Refuse()
    Harness(router).feed(invite())
    assert router.finals == [403]
