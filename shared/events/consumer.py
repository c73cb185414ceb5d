"""Consuming SipMesh events from RabbitMQ: the gateway's feed for direct subscribers, and
what ``sipmesh events`` streams.

``RabbitMQEventConsumer(handler, patterns=["#"])`` binds a queue to the events exchange with
the given topic patterns and calls ``await handler(event)`` for each message, acking it
after the handler returned (a handler exception is logged and the message acked anyway:
one bad event must not wedge the feed). Routing keys are ``<family>.<EVENT_NAME>``, so a
pattern binds a family (``usrloc.#``), one event from wherever it comes (``*.E_ACC_CDR``),
one key (``usrloc.E_UL_AOR_INSERT``) or everything (``#``). With
``queue=None`` the queue is private to this consumer (exclusive, deleted with the
connection: a live tail); with a name it is durable, so events raised while the consumer
is away wait for it.

Reconnection is aio-pika's robust connection (``connect_robust``): when the connection
drops (a broker restart, a forced close), it reconnects every ``reconnect_interval`` and
restores the channel, QoS, exchange, queue, bindings and consumer (checked against the
real broker by tests/integration/events/test_rabbitmq_broker_restart.py and
test_event_feed_from_rabbitmq.py). A broker that is not there at start is waited for the
same way. ``ready`` is set while consuming, ``reconnects`` counts the recoveries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection

from shared.events.config import DEFAULT_EXCHANGE
from shared.events.envelope import Event
from shared.events.rabbitmq import DEFAULT_URL

log = structlog.get_logger(__name__)


class RabbitMQEventConsumer:
    def __init__(
        self,
        handler: Callable[[Event], Awaitable[None]],
        *,
        url: str = DEFAULT_URL,
        exchange: str = DEFAULT_EXCHANGE,
        patterns: Sequence[str] = ("#",),
        queue: str | None = None,
        prefetch: int = 100,
        reconnect_interval: float = 0.5,
        name: str = "sipmesh-events-consumer",
    ) -> None:
        self.handler = handler
        self.url = url
        self.exchange = exchange
        self.patterns = list(patterns)
        self.queue = queue
        self.prefetch = prefetch
        self.reconnect_interval = reconnect_interval
        self.name = name  # the connection's name on the broker (rabbitmqctl, management UI)
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractRobustConnection | None = None
        self.ready = asyncio.Event()  # set while consuming (tests and health checks wait on it)
        self.consumed = 0
        self.reconnects = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="events-consumer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        connection, self._connection = self._connection, None
        self.ready.clear()
        if connection is not None:
            await connection.close()

    async def _run(self) -> None:
        # fail_fast off: a broker that is away at start is waited for, as after a drop.
        connection = await aio_pika.connect_robust(
            self.url, reconnect_interval=self.reconnect_interval, fail_fast=False,
            client_properties={"connection_name": self.name})
        self._connection = connection
        connection.close_callbacks.add(self._on_lost)
        connection.reconnect_callbacks.add(self._on_restored)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        ex = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC,
                                            durable=True)
        if self.queue is None:
            q = await channel.declare_queue(exclusive=True, auto_delete=True)
        else:
            q = await channel.declare_queue(self.queue, durable=True)
        for pattern in self.patterns:
            await q.bind(ex, pattern)
        await q.consume(self._on_message)
        self.ready.set()

    def _on_lost(self, _sender: object, exc: BaseException | None = None) -> None:
        self.ready.clear()
        if exc is not None:
            log.warning("events_consumer_connection_lost", error=repr(exc))

    def _on_restored(self, _sender: object) -> None:
        # Called once the robust connection restored its channels (queue, bindings, consumer).
        self.reconnects += 1
        self.ready.set()
        log.info("events_consumer_reconnected", reconnects=self.reconnects)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            try:
                event = Event.from_body(message.body, message.routing_key)
            except ValueError as exc:
                log.warning("events_consumer_bad_body", error=str(exc))
                return
            try:
                await self.handler(event)
            except Exception:
                log.exception("events_consumer_handler_failed", event_name=event.name)
            self.consumed += 1
