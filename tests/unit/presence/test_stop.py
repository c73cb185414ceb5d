"""The presence service's stop in a drain: a NOTIFY started by a request answered before
the stop is delivered within the grace, not cancelled (the watcher was told 200); one
that outlasts the grace is cancelled, so the drain stays bounded."""

from __future__ import annotations

import asyncio

from services.presence.app import PresenceService
from services.presence.config import PresenceConfig
from services.presence.core import Outcome
from services.presence.subscriptions import Notify


class HeldUac:
    """An edge's Uac API whose NOTIFYs are answered only once `answer` is set."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.started = asyncio.Event()
        self.delivered: list[str] = []

    async def send(self, notify: Notify) -> tuple[int, str]:
        self.started.set()
        await self.answer.wait()
        self.delivered.append(notify.call_id)
        return 200, "OK"

    async def close(self) -> None:
        return None


def _notify() -> Notify:
    return Notify(key="k1", ruri="sip:w@192.0.2.1", route=(), next_hop="",
                  headers=(), body=b"", edge_uac="127.0.0.1:1", terminated=False,
                  watcher="w@192.0.2.1", presentity="p@example.com", call_id="c1")


async def _stopped_with_a_notify_in_flight(grace: float, answer_after_stop: bool
                                          ) -> HeldUac:
    uac = HeldUac()
    svc = PresenceService(PresenceConfig(), store=None, uac=uac)  # type: ignore[arg-type]
    await svc.apply(Outcome(200, notifies=[_notify()]))
    await uac.started.wait()
    stopping = asyncio.create_task(svc.stop(grace))
    await asyncio.sleep(0)  # the stop is under way, waiting for the NOTIFY
    if answer_after_stop:
        uac.answer.set()
    await stopping
    return uac


async def test_a_notify_in_flight_is_delivered_within_the_grace() -> None:
    uac = await _stopped_with_a_notify_in_flight(30.0, answer_after_stop=True)
    assert uac.delivered == ["c1"]


async def test_a_notify_outlasting_the_grace_is_cancelled() -> None:
    uac = await _stopped_with_a_notify_in_flight(0.05, answer_after_stop=False)
    assert uac.delivered == []
