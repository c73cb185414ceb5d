"""RabbitMQ backend of the event bus (aio-pika).

Events go to a durable topic exchange (default ``sipmesh.events``) with the routing key
``<family>.<EVENT_NAME>`` (``usrloc.E_UL_CONTACT_INSERT``; the family comes from the event's
contract, :meth:`~shared.events.schema.EventCatalog.routing_key`), the body being the JSON
parameters plus the envelope (see ``envelope.py``), as persistent messages on a channel with
publisher confirms. ``mandatory=False``: nobody may be listening for an event, and that is
not an error.

Connection handling is deliberately *not* aio-pika's robust connection: a robust
connection makes a publish wait until it has reconnected (aio-pika #636/#556) and only
restores objects it still references (#536). Instead the buffered drain loop in
``bus.py`` owns recovery: every publish has a timeout; any failure drops the connection,
backs off (exponential, jittered, capped) and the next attempt connects afresh, declaring
the exchange again. The event that failed stays at the head of the buffer, so order is
kept and nothing accepted into the buffer is lost while the process lives.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from shared.events.bus import BufferedEventBus
from shared.events.envelope import Event
from shared.events.schema import EventCatalog

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_EXCHANGE = "sipmesh.events"


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
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    @property
    def connected(self) -> bool:
        return self._exchange is not None and not (
            self._connection is None or self._connection.is_closed
        )

    async def _connect(self) -> AbstractExchange:
        async with asyncio.timeout(self.connect_timeout):
            connection = await aio_pika.connect(self.url, timeout=self.connect_timeout)
            try:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.declare_exchange(
                    self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                )
            except BaseException:
                await connection.close()
                raise
        self._connection, self._channel, self._exchange = connection, channel, exchange
        return exchange

    async def _prepare(self) -> None:
        if self._exchange is None or self._connection is None or self._connection.is_closed:
            await self._connect()

    async def _deliver(self, event: Event) -> None:
        exchange = self._exchange
        if exchange is None or self._connection is None or self._connection.is_closed:
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
        await self._close_backend()

    async def _close_backend(self) -> None:
        connection = self._connection
        self._connection = self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await connection.close()
            except Exception:  # the broker is already gone: nothing left to release
                pass
