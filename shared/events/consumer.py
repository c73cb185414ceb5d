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

Like the publisher it does its own reconnection instead of relying on aio-pika's robust
connection (consumers not resumed after a broker restart: aio-pika #626/#231, #334): when
the connection closes, it backs off and redeclares exchange, queue, bindings and consumer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import structlog

from shared.events.envelope import Event
from shared.events.rabbitmq import DEFAULT_EXCHANGE, DEFAULT_URL

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
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.handler = handler
        self.url = url
        self.exchange = exchange
        self.patterns = list(patterns)
        self.queue = queue
        self.prefetch = prefetch
        self._backoff = (backoff_initial, backoff_max)
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set while consuming (tests and health checks wait on it)
        self.consumed = 0
        self.reconnects = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="events-consumer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._consume_once()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.ready.clear()
                self.reconnects += 1
                low, high = self._backoff
                delay = random.uniform(0, min(high, low * 2 ** min(attempt, 16)))
                attempt += 1
                log.warning("events_consumer_reconnect", error=repr(exc), retry_in=round(delay, 3))
                await asyncio.sleep(delay)

    async def _consume_once(self) -> None:
        connection = await aio_pika.connect(self.url)
        try:
            closed = asyncio.get_running_loop().create_future()

            def on_close(_sender: object, exc: BaseException | None = None) -> None:
                if not closed.done():
                    closed.set_result(exc)

            connection.close_callbacks.add(on_close)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            ex = await channel.declare_exchange(
                self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            if self.queue is None:
                q = await channel.declare_queue(exclusive=True, auto_delete=True)
            else:
                q = await channel.declare_queue(self.queue, durable=True)
            for pattern in self.patterns:
                await q.bind(ex, pattern)
            await q.consume(self._on_message)
            self.ready.set()
            reason = await closed
            raise ConnectionError(f"connection closed: {reason!r}")
        finally:
            self.ready.clear()
            if not connection.is_closed:
                await connection.close()

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
