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
is away wait for it. ``arguments`` are the named queue's RabbitMQ arguments, its bounds
(:func:`queue_arguments`: ``x-expires`` removes a queue nobody consumed for that long,
``x-max-length``/``x-overflow`` cap what it holds meanwhile). RabbitMQ refuses to
redeclare an existing queue with other arguments (PRECONDITION_FAILED, e.g. one made by
an older version without bounds, or before the bounds were changed): the consumer then
takes the queue as it is (a passive declaration) and logs ``events_consumer_queue_kept``
saying so; deleting the queue applies the new bounds.

Reconnection is aio-pika's robust connection (``connect_robust``): when the connection
drops (a broker restart, a forced close), it reconnects every ``reconnect_interval`` and
restores the channel, QoS, exchange, queue, bindings and consumer (checked against the
real broker by tests/integration/events/test_rabbitmq_broker_restart.py and
test_event_feed_from_rabbitmq.py). A broker that is not there at start is waited for the
same way. ``ready`` is set while consuming, ``reconnects`` counts the recoveries.

Several consumers may share one named queue (the replicas of a gateway): RabbitMQ gives
each message to one of them, and the messages a consumer holds unacknowledged when its
connection goes (the process killed) to another. A handler that returns only once the
event was delivered (``EventFeed.delivered``) makes that at least once. Stopping
gracefully, ``stop_consuming()`` cancels the subscription to the queue first (no new
message comes; those held still get their acknowledgement), then ``close(grace)`` waits
up to ``grace`` for the handlers in flight before it closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

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
        arguments: Mapping[str, Any] | None = None,
        prefetch: int = 100,
        reconnect_interval: float = 0.5,
        name: str = "sipmesh-events-consumer",
    ) -> None:
        self.handler = handler
        self.url = url
        self.exchange = exchange
        self.patterns = list(patterns)
        self.queue = queue
        self.arguments = dict(arguments or {})
        self.prefetch = prefetch
        self.reconnect_interval = reconnect_interval
        self.name = name  # the connection's name on the broker (rabbitmqctl, management UI)
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractRobustConnection | None = None
        self.ready = asyncio.Event()  # set while consuming (tests and health checks wait on it)
        self.consumed = 0
        self.reconnects = 0
        self._consuming: tuple[aio_pika.abc.AbstractQueue, str] | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="events-consumer")

    async def stop_consuming(self) -> None:
        """No more messages for this consumer; the ones it holds can still be acked."""
        consuming, self._consuming = self._consuming, None
        self.ready.clear()
        if consuming is not None:
            queue, tag = consuming
            try:
                await asyncio.wait_for(queue.cancel(tag), 2.0)
            except Exception as exc:  # the connection is going anyway
                log.warning("events_consumer_cancel_failed", error=str(exc) or repr(exc))

    async def close(self, grace: float = 0.0) -> None:
        """Closes the connection, after up to ``grace`` s for the handlers in flight."""
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
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
            passive = not await self._declarable(connection)
            q = await channel.declare_queue(self.queue, durable=True, passive=passive,
                                            arguments=None if passive else self.arguments)
        for pattern in self.patterns:
            await q.bind(ex, pattern)
        tag = await q.consume(self._on_message)
        self._consuming = (q, tag)
        self.ready.set()

    async def _declarable(self, connection: AbstractRobustConnection) -> bool:
        """Whether the named queue can be declared with our arguments: tried on a channel
        of its own, since the broker closes the channel that gets PRECONDITION_FAILED."""
        channel = await connection.channel()
        try:
            await channel.declare_queue(self.queue, durable=True, arguments=self.arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            log.warning("events_consumer_queue_kept", queue=self.queue, error=str(exc),
                        hint="the queue exists with other arguments (bounds); it is used "
                             "as it is: delete it to apply the configured ones")
            return False
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return True

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
        self._inflight += 1
        self._idle.clear()
        try:
            await self._process(message)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _process(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
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
