"""The gateway's side of the event interface: subscriptions and the feed that fills them.

The gateway hosts the one :class:`~gateway.events.subscriptions.SubscriptionManager` of the
mesh. Its MI commands (``event_subscribe``, ``events_list``, ``subscribers_list``) are
answered by the gateway itself; subscriptions are written through to the store of
``[events] store`` (SQLite file by default, PostgreSQL with a ``postgresql://`` DSN) and
reloaded at start, so they survive a gateway restart; an expired one is never delivered
to and is purged every ``purge_interval`` seconds.

Where the events come from (see :mod:`shared.events.config` for the two modes):

* embedded mode: other processes forward their events to the internal method
  ``event_ingest`` of this gateway's own MI endpoint (:mod:`shared.events.forward`); the
  gateway's own events are delivered in-process by its embedded bus;
* RabbitMQ mode: a :class:`~shared.events.consumer.RabbitMQEventConsumer` bound with ``#``
  to the events exchange feeds every event of every node (this gateway's included). Its
  queue is this gateway's own (``EventsConfig.gateway_queue``: durable and named after
  the host and MI port by default, so the events published while the gateway restarts
  wait for it there), bounded by ``consumer_queue_expires``/``_max_length``.

Replicas (RabbitMQ mode with a PostgreSQL store): the gateways of one group name the
same ``consumer_queue`` and consume it as competing consumers, and share the
subscription table. Why this shape: RabbitMQ gives each message to one consumer, so each
event is delivered once per subscription whichever replica takes it, with no
coordination between the replicas (a leader consuming alone would need an election and
lose its unacked events on failover; each replica delivering only "its" subscribers
would need a shard map that changes as replicas come and go). A message is acked only
once its event was dispatched (:meth:`EventFeed.delivered`), so the events a killed
replica held go to the other one: at least once, the duplicates being only the events
the dead replica delivered but had not acked yet. Events published while one replica
restarts wait in the queue and the other takes them. Each replica must know every
subscription: the store notifies each change (LISTEN/NOTIFY) and each replica reloads
the table then and every ``subscription_refresh`` seconds (:mod:`gateway.events.store`);
expiry is the absolute time in the row, applied by each replica's clock. With the
embedded SQLite store a single gateway remains the supported shape.

Either way events pass through :class:`EventFeed`: duplicates (at-least-once delivery
upstream) are dropped by envelope id, and events are queued and dispatched one after the
other in arrival order by one task, so a subscriber sees a node's events in the order
they were raised, and the senders never wait for the subscribers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from gateway.events.mi import mi_commands
from gateway.events.store import (
    PostgresSubscriptionStore,
    SQLiteSubscriptionStore,
    SubscriptionStore,
)
from gateway.events.subscriptions import SubscriptionManager
from gateway.events.transports import SocketDeliverer
from shared.discovery import RegistryError
from shared.events.config import EventsConfig
from shared.events.envelope import Event
from shared.events.forward import INGEST_METHOD, event_from_wire
from shared.rpc import BAD_REQUEST, MiCommand, MiDispatcher, MiError
from shared.service.runtime import ServiceRuntime
from shared.store import describe_location, is_postgres_dsn

if TYPE_CHECKING:
    from shared.events.consumer import RabbitMQEventConsumer

EVENT_COMMANDS = ("event_subscribe", "events_list", "subscribers_list")
log = structlog.get_logger("gateway.events")


def open_store(location: str) -> SubscriptionStore:
    if is_postgres_dsn(location):
        return PostgresSubscriptionStore(location)
    return SQLiteSubscriptionStore(location)


class EventFeed:
    """Ordered, de-duplicated hand-over of events to the subscription manager.

    Taking an event (``await feed(event)``) only queues it, so whoever brought it (a
    forwarder's ``event_ingest`` call) is answered at once and a slow subscriber never
    slows the mesh's event flow down; one task delivers the queue in order. The queue is
    bounded: beyond ``size`` events the newest is dropped and counted
    (``events:feed_dropped``).

    ``await feed.delivered(event)`` queues it the same way but returns only once it was
    dispatched to its subscribers: the RabbitMQ consumer acknowledges a message then, so
    a gateway that dies holding events leaves them unacknowledged and the broker gives
    them to another consumer of the queue (at least once, never lost with the gateway).
    The consumer handles its prefetched messages concurrently, so waiting here does not
    make the broker wait for each subscriber in turn. A duplicate of an event still on
    its way waits for that one."""

    def __init__(self, manager: SubscriptionManager, *, size: int = 10_000,
                 remember: int = 10_000) -> None:
        self.manager = manager
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remember = remember
        self._queue: asyncio.Queue[tuple[Event, asyncio.Future[None] | None]] = (
            asyncio.Queue(maxsize=size))
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.received = 0
        self.duplicates = 0
        self.dropped = 0
        # Plain callbacks told of each new event as it arrives (the web console counts
        # them); they must be quick and never raise into the feed.
        self.observers: list[Callable[[Event], None]] = []

    async def __call__(self, event: Event) -> None:
        self._take(event, None)

    async def delivered(self, event: Event) -> None:
        """Queues ``event`` and returns once it was dispatched (or found a duplicate of
        one already dispatched, or dropped because the queue was full)."""
        pending = self._pending.get(event.id)
        if pending is None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if not self._take(event, done):
                return
            pending = self._pending[event.id] = done
            done.add_done_callback(lambda _f: self._pending.pop(event.id, None))
        else:
            self.duplicates += 1
        await asyncio.shield(pending)

    def _take(self, event: Event, done: asyncio.Future[None] | None) -> bool:
        """Queues a new event; False for a duplicate or when the queue is full."""
        if event.id in self._seen:
            self.duplicates += 1
            return False
        self._seen[event.id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        for observe in self.observers:
            try:
                observe(event)
            except Exception:
                log.exception("event_observer_failed", event_name=event.name)
        try:
            self._queue.put_nowait((event, done))
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        self.received += 1
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="events-feed")

    async def _run(self) -> None:
        while True:
            event, done = await self._queue.get()
            try:
                await self.manager.dispatch(event.name, event.params)
            except Exception:  # the manager logs per subscriber; never stop the feed
                log.exception("event_feed_dispatch_failed", event_name=event.name)
            finally:
                if done is not None and not done.done():
                    done.set_result(None)
                self._queue.task_done()

    async def close(self, timeout: float) -> None:
        """Delivers what is queued (within ``timeout``), then stops."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


class GatewayEvents:
    """Builds and runs the manager, the MI commands, the ingest method and the consumer."""

    def __init__(self, runtime: ServiceRuntime, cfg: EventsConfig) -> None:
        self.rt = runtime
        self.cfg = cfg
        self.location = cfg.store_location()
        runtime.modes["store"] = f"subscriptions {describe_location(self.location)}"
        self.manager = SubscriptionManager(
            runtime.events.catalog, open_store(self.location),
            deliverer=SocketDeliverer(timeout=cfg.subscriber_timeout))
        self.feed = EventFeed(self.manager, size=cfg.buffer_size)
        self.consumer: RabbitMQEventConsumer | None = None
        if cfg.rabbitmq:
            queue = cfg.gateway_queue(socket.gethostname(), runtime.config.port)
            runtime.modes["events queue"] = queue or "private (ephemeral port)"
            # Acked once delivered (feed.delivered): the replicas sharing the queue take
            # over what a dead one held (see the module docstring).
            # Imported here: aio_pika (~35 ms of CPU) only in RabbitMQ mode.
            from shared.events.consumer import RabbitMQEventConsumer

            self.consumer = RabbitMQEventConsumer(
                self.feed.delivered, url=cfg.rabbitmq_url, exchange=cfg.exchange,
                queue=queue, arguments=cfg.queue_arguments())
        else:
            runtime.events.add_listener(self.feed)
        self._purger: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # the shared store says another gateway changed it
        runtime.mi.add(MiCommand(INGEST_METHOD, self._ingest, (("events",),),
                                 "internal: events forwarded by the mesh's processes"))
        stats = runtime.stats
        stats.gauge("events", "subscribers", lambda: len(self.manager.subscribers()))
        stats.gauge("events", "notified", lambda: self.manager.delivered)
        stats.gauge("events", "notify_failed", lambda: self.manager.failed)
        stats.gauge("events", "received", lambda: self.feed.received)
        stats.gauge("events", "feed_dropped", lambda: self.feed.dropped)
        stats.gauge("events", "consumer_ready", lambda: int(
            self.consumer is None or self.consumer.ready.is_set()))
        runtime.on_start(self.start)
        runtime.on_stop(self.stop)

    def add_commands(self, dispatcher: MiDispatcher) -> None:
        for command in mi_commands(self.manager, self.advertised):
            dispatcher.add(command)

    async def advertised(self) -> set[str]:
        """The events some running process can raise: this gateway's and those every
        passing instance declares in its registration (``meta.events``)."""
        names = set(self.rt.raises)
        try:
            instances = await self.rt.registry.instances()
        except RegistryError as exc:
            log.warning("events_list_discovery_failed", error=str(exc))
            instances = []
        for inst in instances:
            if inst.passing:
                names.update(n for n in inst.meta.get("events", "").split(",") if n)
        catalog = self.rt.events.catalog
        return {n for n in names if n in catalog}

    async def start(self) -> None:
        try:
            await self.manager.start()
        except Exception as exc:  # sqlite3/asyncpg errors: one clear line, no traceback
            raise RuntimeError(
                f"event subscription store {self.location!r} unusable: {exc}") from exc
        self.feed.start()
        self._purger = asyncio.create_task(self.manager.purge_forever(self.cfg.purge_interval))
        if await self.manager.store.watch(self._changed.set):
            self.rt.modes["subscriptions"] = (
                f"shared, followed (LISTEN, read every {self.cfg.subscription_refresh:g} s)")
            self._follower = asyncio.create_task(
                self.manager.follow(self._changed, self.cfg.subscription_refresh),
                name="event-subscribers-follow")
        if self.consumer is not None:
            await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            # No new message; those taken are delivered and acked before the connection
            # goes (the ones left unacked are redelivered to another replica).
            await self.consumer.stop_consuming()
        # The gateway's own last events reach the subscribers before the manager closes.
        await self.rt.events.close(1.0)
        await self.feed.close(2.0)
        if self.consumer is not None:
            await self.consumer.close(grace=1.0)
        for task in (self._purger, self._follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.manager.close()

    async def _ingest(self, events: Any) -> dict[str, Any]:
        """``event_ingest``: the valid events are delivered in order; each invalid one is
        named in ``refused`` (the forwarder logs it and does not send it again)."""
        if not isinstance(events, list):
            raise MiError(BAD_REQUEST, "Bad parameter", "events must be an array")
        accepted = 0
        refused: list[dict[str, Any]] = []
        for index, item in enumerate(events):
            try:
                event = event_from_wire(item)
                self.rt.events.catalog.validate(event.name, event.params)
            except ValueError as exc:  # EventValidationError is a ValueError too
                refused.append({"index": index, "error": str(exc)})
                continue
            await self.feed(event)
            accepted += 1
        return {"accepted": accepted, "refused": refused}
