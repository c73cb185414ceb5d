"""The presence service's stop in a drain: a NOTIFY started by a request answered before
the stop is delivered within the grace, not cancelled (the watcher was told 200); one
that outlasts the grace is cancelled, so the drain stays bounded (and the stop says it was
not clean); after an unclean stop the loaded subscriptions get one NOTIFY each."""

from __future__ import annotations

import asyncio

from services.presence.app import PresenceService
from services.presence.config import PresenceConfig
from services.presence.core import Outcome
from services.presence.subscriptions import Notify, Subscription


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
                                          ) -> tuple[HeldUac, bool]:
    uac = HeldUac()
    svc = PresenceService(PresenceConfig(), store=None, uac=uac)  # type: ignore[arg-type]
    await svc.apply(Outcome(200, notifies=[_notify()]))
    await uac.started.wait()
    stopping = asyncio.create_task(svc.stop(grace))
    await asyncio.sleep(0)  # the stop is under way, waiting for the NOTIFY
    if answer_after_stop:
        uac.answer.set()
    return uac, await stopping


async def test_a_notify_in_flight_is_delivered_within_the_grace() -> None:
    uac, drained = await _stopped_with_a_notify_in_flight(30.0, answer_after_stop=True)
    assert uac.delivered == ["c1"] and drained  # a clean stop: no NOTIFYs on restart


async def test_a_notify_outlasting_the_grace_is_cancelled() -> None:
    uac, drained = await _stopped_with_a_notify_in_flight(0.05, answer_after_stop=False)
    assert uac.delivered == [] and not drained  # the next start redoes its NOTIFYs


async def test_after_an_unclean_stop_the_loaded_subscriptions_are_notified_once() -> None:
    uac = HeldUac()
    uac.answer.set()
    svc = PresenceService(PresenceConfig(), store=None, uac=uac)  # type: ignore[arg-type]
    svc.core.subs.add(Subscription(
        "c9", "wtag", "ours", "p@example.com", "w@example.com", "<sip:w@example.com>;tag=wtag",
        "<sip:p@example.com>;tag=ours", "sip:w@192.0.2.1", "sip:10.0.0.1", 4e9, local_cseq=1))
    assert await svc.renotify_if_unclean() == 0  # a clean stop before: nothing
    svc.unclean = True
    assert await svc.renotify_if_unclean() == 1
    assert await svc.renotify_if_unclean() == 0  # once
    await svc.stop(5.0)
    assert uac.delivered == ["c9"]
