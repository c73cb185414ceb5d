"""RabbitMQ backend of the event bus (aio-pika).

Events go to a durable topic exchange (default ``sipmesh.events``) with the routing key
``<family>.<EVENT_NAME>`` (``usrloc.E_UL_CONTACT_INSERT``; the family comes from the event's
contract, :meth:`~shared.events.schema.EventCatalog.routing_key`), the body being the JSON
parameters plus the envelope (see ``envelope.py``), as persistent messages on a channel with
publisher confirms. ``mandatory=False``: nobody may be listening for an event, and that is
not an error.

Connection handling is aio-pika's robust connection (``connect_robust``): once connected it
reconnects by itself and restores the channel and the exchange. The buffered drain loop
in ``bus.py`` still owns delivery: every publish has a timeout, a failed one stays at the
head of the buffer and is retried with backoff, so order is kept and nothing accepted
into the buffer is lost while the process lives. A broker absent at the first connection
is retried the same way. (Measured against the hand-written reconnect this replaces, with
the broker closing the publisher's connection: both confirm the next event 20-60 ms
after the close, in order, nothing lost.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from shared.events.bus import BufferedEventBus
from shared.events.config import DEFAULT_EXCHANGE
from shared.events.envelope import Event
from shared.events.schema import EventCatalog

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


class RabbitMQEventBus(BufferedEventBus):
    backend = "rabbitmq"

    def __init__(
        self,
        catalog: EventCatalog,
        *,
        url: str = DEFAULT_URL,
        exchange: str = DEFAULT_EXCHANGE,
        publish_timeout: float = 2.0,
        connect_timeout: float = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(catalog, **kwargs)
        self.url = url
        self.exchange_name = exchange
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        # Strong references: the connection, channel and exchange live as long as the bus.
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    @property
    def connected(self) -> bool:
        return self._exchange is not None and not (
            self._connection is None or self._connection.is_closed
        )

    async def _connect(self) -> AbstractExchange:
        if self._exchange is not None:
            return self._exchange
        if self._connection is None:
            # Built here rather than by ``connect_robust``: that helper holds the
            # connection only once its first connect succeeded, and a connect that fails
            # or is cancelled (``close()`` during the first attempt, likely on a loaded
            # machine) leaves its reconnect task running - a task that swallows
            # cancellation until its connection is closed, so it hung the event loop's
            # shutdown. Held from the start, the connection is closed on every way out.
            connection = aio_pika.RobustConnection(
                aio_pika.connection.make_url(self.url), reconnect_interval=0.5,
                client_properties={"connection_name": f"sipmesh-events {self.node}"})
            self._connection = connection
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await connection.connect(timeout=self.connect_timeout)
            except asyncio.CancelledError:
                raise  # close() is ending the drain loop: _close_backend closes it
            except BaseException:
                self._connection = None
                await self._release(connection)
                raise
        async with asyncio.timeout(self.connect_timeout):
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await self._channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        return self._exchange

    async def _prepare(self) -> None:
        await self._connect()

    async def _deliver(self, event: Event) -> None:
        exchange = await self._connect()
        message = aio_pika.Message(
            event.to_body(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            timestamp=event.time,
            app_id=event.service,
            type=event.name,
            headers={"node": event.node, "service": event.service},
        )
        # With confirms on, this returns when the broker acked (or raises on nack/timeout).
        await exchange.publish(
            message, routing_key=self.catalog.routing_key(event.name), mandatory=False,
            timeout=self.publish_timeout
        )

    async def _reset_backend(self) -> None:
        # The robust connection restores its channel and exchange by itself; only a channel
        # left without its exchange by a failed first declaration is dropped and reopened.
        if self._exchange is None and self._channel is not None:
            channel, self._channel = self._channel, None
            with contextlib.suppress(Exception):
                await channel.close()

    async def _close_backend(self) -> None:
        connection = self._connection
        self._connection = self._channel = self._exchange = None
        if connection is not None:
            await self._release(connection)

    async def _release(self, connection: AbstractRobustConnection) -> None:
        """Closes a connection without waiting on an away broker for long: the reconnect
        task goes first (``RobustConnection.close``), then the transport, if any, gets
        ``connect_timeout`` to say goodbye. Also a connection that never connected, or
        whose close already started, is closed: ``is_closed`` says nothing of its
        reconnect task."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                await connection.close()
        except Exception:  # the broker is already gone: nothing left to release
            pass
