"""The gateway's named queue on the real RabbitMQ: its bounds (``x-max-length`` with
``drop-head``, ``x-expires``) act as documented, and a queue made earlier with other
arguments is still consumed rather than wedging the consumer (PRECONDITION_FAILED)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from shared.events.config import EventsConfig
from shared.events.consumer import RabbitMQEventConsumer
from shared.events.envelope import Event
from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventCatalog
from tests.support.waiting import eventually

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
CATALOG = EventCatalog.load()
pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def names() -> AsyncIterator[tuple[str, str]]:
    exchange = f"test.gwq.{uuid.uuid4().hex[:12]}"
    queue = f"{exchange}.gateway.host-8888"
    yield exchange, queue
    conn = await aio_pika.connect(AMQP)
    async with conn:
        channel = await conn.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)


async def publish(exchange: str, aors: list[str]) -> None:
    """Publishes one E_UL_AOR_INSERT per AoR and returns once the broker confirmed all."""
    bus = RabbitMQEventBus(CATALOG, url=AMQP, exchange=exchange, service="registrar",
                           node="reg-1", strict=True)
    await bus.start()
    for aor in aors:
        bus.publish("E_UL_AOR_INSERT", {"aor": aor})
    await bus.close(10)
    assert bus.stats.delivered == len(aors)


def consumer(got: list[str], exchange: str, queue: str,
             cfg: EventsConfig) -> RabbitMQEventConsumer:
    async def handler(event: Event) -> None:
        got.append(str(event.params["aor"]))

    return RabbitMQEventConsumer(handler, url=AMQP, exchange=exchange, queue=queue,
                                 arguments=cfg.queue_arguments())


async def started(c: RabbitMQEventConsumer) -> RabbitMQEventConsumer:
    await c.start()
    async with asyncio.timeout(10):
        await c.ready.wait()
    return c


async def test_max_length_drops_the_oldest_events_held_while_away(
    names: tuple[str, str],
) -> None:
    exchange, queue = names
    cfg = EventsConfig(consumer_queue_max_length=3)
    got: list[str] = []
    await (await started(consumer(got, exchange, queue, cfg))).close()  # queue made, bound
    await publish(exchange, [f"u{i}@example.com" for i in range(5)])  # nobody consuming
    back = await started(consumer(got, exchange, queue, cfg))
    try:
        await eventually(lambda: len(got) >= 3, 10, "the held events")
        assert got == ["u2@example.com", "u3@example.com", "u4@example.com"]
    finally:
        await back.close()


async def test_an_unused_queue_expires(names: tuple[str, str]) -> None:
    exchange, queue = names
    got: list[str] = []
    await (await started(consumer(got, exchange, queue,
                                  EventsConfig(consumer_queue_expires=0.5)))).close()
    conn = await aio_pika.connect(AMQP)
    async with conn:
        # A declaration, even passive, renews the queue's lease: probe less often than it
        # expires.
        async def gone() -> bool:
            channel = await conn.channel()
            try:
                await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return True
            await channel.close()
            return False

        assert not await gone()  # still there right after its consumer left
        await eventually(gone, 10, "the unused queue deleted by the broker", interval=1.0)


async def test_a_queue_with_other_arguments_is_used_as_it_is(names: tuple[str, str]) -> None:
    exchange, queue = names
    conn = await aio_pika.connect(AMQP)
    async with conn:  # made by a gateway of an older version: durable, unbounded
        await (await conn.channel()).declare_queue(queue, durable=True)
    got: list[str] = []
    c = await started(consumer(got, exchange, queue, EventsConfig()))
    try:
        await publish(exchange, ["a@example.com"])
        await eventually(lambda: got == ["a@example.com"], 10, "the event through the queue")
    finally:
        await c.close()
