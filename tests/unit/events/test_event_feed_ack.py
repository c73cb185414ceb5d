"""EventFeed.delivered: the RabbitMQ consumer acks a message only once its event was
dispatched, so a gateway that dies holding events leaves them to another replica."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from gateway.events.service import EventFeed
from gateway.events.subscriptions import SubscriptionManager
from shared.events.envelope import Event


class GatedManager:
    """Dispatches only when the test opens the gate; records what it dispatched."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.dispatched: list[str] = []

    async def dispatch(self, event: str, params: Mapping[str, Any]) -> int:
        await self.gate.wait()
        self.dispatched.append(str(params["aor"]))
        return 1


def event(aor: str, id_: str) -> Event:
    return Event("E_UL_AOR_INSERT", {"aor": aor}, 0.0, "registrar", "reg-1", id=id_)


async def test_delivered_returns_only_after_the_dispatch() -> None:
    manager = GatedManager()
    feed = EventFeed(cast(SubscriptionManager, manager))
    feed.start()
    try:
        taken = asyncio.create_task(feed.delivered(event("a@x", "1")))
        duplicate = asyncio.create_task(feed.delivered(event("a@x", "1")))  # redelivered
        await feed(event("b@x", "2"))  # the plain call returns at once, as before
        done, _ = await asyncio.wait([taken, duplicate], timeout=0.2)
        assert done == set()  # neither acked while the subscribers did not get it
        manager.gate.set()
        await asyncio.wait_for(asyncio.gather(taken, duplicate), 5)
        # a@x once: the duplicate waited for the first copy's dispatch
        assert sorted(manager.dispatched) == ["a@x", "b@x"] and feed.duplicates == 1
        await asyncio.wait_for(feed.delivered(event("a@x", "1")), 1)  # long done: at once
    finally:
        await feed.close(1.0)
