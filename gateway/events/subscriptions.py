"""Event subscriptions with OpenSIPS event interface semantics.

``subscribe(event, socket, expire=3600)`` adds a subscriber, or refreshes it (a subscriber
is the pair event + socket; subscribing again only moves its expiry). ``expire=0``
unsubscribes. Expiry is absolute time taken from the injected clock ``now``; an expired
subscriber is never delivered to and disappears from listings (and from the store at the
next ``purge_expired``, which the owner runs periodically or lets ``dispatch`` trigger).

The live set is kept in memory and written through to a :class:`SubscriptionStore`, and
reloaded from it by ``start()`` - that is how subscriptions survive a gateway restart.
``reload()`` reads the store again and replaces the live set: the gateway calls it when
the store says another gateway changed it (replicas sharing PostgreSQL, see
:mod:`gateway.events.store`), so a subscription made or removed through any replica is
honoured by all. Expiry needs no message between replicas: the row holds the absolute
expiry, each replica stops delivering at that instant by its own clock, and a purge only
deletes rows expired *in the store* (a replica with a stale copy never deletes a row
refreshed through another).

``dispatch(event)`` delivers one event to all its live subscribers concurrently, each
bounded by the deliverer's timeout; a failing subscriber is logged and counted, never
raised. Register ``manager.on_event`` as a bus listener (embedded mode), or feed it from
a RabbitMQ consumer in the gateway (events of every node of every service).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.events.sockets import SubscriberSocket, display, parse_socket
from gateway.events.store import StoredSubscription, SubscriptionStore
from gateway.events.transports import SocketDeliverer, TransportError
from shared.events.envelope import Event
from shared.events.schema import EventCatalog

DEFAULT_EXPIRE = 3600
log = structlog.get_logger(__name__)


class UnknownEventError(LookupError):
    def __init__(self, event: str) -> None:
        super().__init__(f"unknown event {event!r}")
        self.event = event


@dataclass(frozen=True, slots=True)
class Subscription:
    event: str
    socket: SubscriberSocket
    expires: float | None  # absolute unix time; None never expires

    def alive(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def remaining(self, now: float) -> int | None:
        """Whole seconds left (OpenSIPS shows this in subscribers_list), None for never."""
        return None if self.expires is None else max(0, int(self.expires - now))


class SubscriptionManager:
    def __init__(
        self,
        catalog: EventCatalog,
        store: SubscriptionStore,
        *,
        deliverer: SocketDeliverer | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.deliverer = deliverer if deliverer is not None else SocketDeliverer()
        self._now = now
        # event -> canonical socket string -> subscription (insertion order = listing order)
        self._subs: dict[str, dict[str, Subscription]] = {}
        self.delivered = 0
        self.failed = 0
        self.reloads = 0

    def now(self) -> float:
        return self._now()

    async def start(self) -> None:
        await self.store.open()
        await self.store.purge(self._now())
        await self.reload()

    async def reload(self) -> int:
        """Replaces the live set by the store's rows; returns how many are live."""
        now = self._now()
        subs: dict[str, dict[str, Subscription]] = {}
        for row in await self.store.load():
            try:
                sock = parse_socket(row.socket)
            except ValueError:
                log.warning("stored_subscription_unparsable", socket=row.socket)
                await self.store.delete(row.event, row.socket)
                continue
            sub = Subscription(row.event, sock, row.expires)
            if sub.alive(now):
                subs.setdefault(row.event, {})[str(sock)] = sub
        self._subs = subs
        self.reloads += 1
        return sum(len(v) for v in subs.values())

    async def follow(self, changed: asyncio.Event, interval: float) -> None:
        """Run as a task beside a shared store: ``reload()`` each time ``changed`` is set
        (the store's watcher sets it; changes arriving during a read coalesce into one
        more read) and at least every ``interval`` seconds, a bound on how long a change
        whose notification was lost stays unseen."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), interval)
            changed.clear()
            try:
                await self.reload()
            except Exception as exc:  # a store hiccup must not end the follower
                log.warning("subscription_reload_failed", error=str(exc) or repr(exc))

    async def close(self) -> None:
        await self.deliverer.close()
        await self.store.close()

    # -- the MI surface -------------------------------------------------------------------
    async def subscribe(self, event: str, socket: str, expire: int = DEFAULT_EXPIRE) -> bool:
        """Subscribe (True) or, with expire 0, unsubscribe (False). Raises on bad input."""
        if event not in self.catalog:
            raise UnknownEventError(event)
        if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0:
            raise ValueError(f"expire must be a non-negative integer, not {expire!r}")
        sock = parse_socket(socket)
        key = str(sock)
        if expire == 0:
            # From the store even when this gateway does not know it: it may have been
            # made through another replica a moment ago.
            await self.store.delete(event, key)
            self._subs.get(event, {}).pop(key, None)
            return False
        sub = Subscription(event, sock, self._now() + expire)
        await self.store.save(StoredSubscription(event, key, sub.expires))
        self._subs.setdefault(event, {})[key] = sub
        return True

    def events(self) -> list[str]:
        return self.catalog.names()

    def subscribers(
        self, event: str | None = None, socket: str | None = None
    ) -> list[Subscription]:
        """Live subscribers, optionally of one event and one socket (raises on bad input)."""
        now = self._now()
        if event is not None and event not in self.catalog:
            raise UnknownEventError(event)
        key = str(parse_socket(socket)) if socket is not None else None
        names = [event] if event is not None else self.catalog.names()
        out = []
        for name in names:
            for k, sub in self._subs.get(name, {}).items():
                if sub.alive(now) and (key is None or k == key):
                    out.append(sub)
        return out

    async def purge_expired(self) -> int:
        now = self._now()
        gone = [
            (name, k) for name, subs in self._subs.items()
            for k, sub in subs.items() if not sub.alive(now)
        ]
        for name, k in gone:
            del self._subs[name][k]
        await self.store.purge(now)
        return len(gone)

    async def purge_forever(self, interval: float = 60.0) -> None:
        """Run as a task next to the gateway: drops expired rows from the store."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.purge_expired()
            except Exception as exc:  # a store hiccup must not end the purger
                log.warning("subscription_purge_failed", error=repr(exc))

    # -- delivery -----------------------------------------------------------------------
    async def dispatch(self, event: str, params: Mapping[str, Any]) -> int:
        """Deliver to every live subscriber of ``event``; returns how many got it."""
        now = self._now()
        targets = [s for s in self._subs.get(event, {}).values() if s.alive(now)]
        if not targets:
            return 0
        results = await asyncio.gather(
            *(self.deliverer.deliver(s.socket, event, params) for s in targets),
            return_exceptions=True,
        )
        ok = 0
        for sub, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                self.failed += 1
                level = log.warning if isinstance(result, TransportError) else log.error
                level("event_subscriber_failed", event_name=event, socket=display(sub.socket),
                      error=str(result) or repr(result))
            else:
                ok += 1
        self.delivered += ok
        return ok

    async def on_event(self, event: Event) -> None:
        """Bus listener: ``bus.add_listener(manager.on_event)``."""
        await self.dispatch(event.name, event.params)
