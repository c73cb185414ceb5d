"""The events consumer and publisher (aio-pika's robust connection) survive losing their
connections.

The broker closes the consumer's and the publisher's own connections (``rabbitmqctl
close_connection``, as a broker restart or a network cut would end it, without disturbing
anything else on the shared broker): the consumer reconnects, its private queue, bindings
and consumer are restored, and events published afterwards arrive, in order; ``ready`` and
``reconnects`` say so.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid

import aio_pika
import pytest

from shared.events.consumer import RabbitMQEventConsumer
from shared.events.envelope import Event
from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventCatalog
from tests.support.waiting import eventually

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
pytestmark = pytest.mark.skipif(shutil.which("rabbitmqctl") is None,
                                reason="rabbitmqctl not installed (run tests/peers/ensure.sh)")


async def close_connection(name: str) -> bool:
    """Has the broker close the connection named ``name``; False while it is not listed."""
    listing = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_connections", "pid", "client_properties",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await listing.communicate()
    pids = [line.split("\t")[0] for line in out.decode().splitlines() if name in line]
    for pid in pids:
        closing = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "-q", "close_connection", pid, "test: connection lost",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await closing.wait()
    return bool(pids)


async def test_consumer_reconnects_and_resumes_after_the_broker_drops_it() -> None:
    exchange = f"test.consumer.{uuid.uuid4().hex[:12]}"
    name = f"test-consumer-{uuid.uuid4().hex[:8]}"
    got: list[Event] = []

    async def handler(event: Event) -> None:
        got.append(event)

    consumer = RabbitMQEventConsumer(handler, url=AMQP, exchange=exchange,
                                     patterns=["usrloc.#"], reconnect_interval=0.2, name=name)
    node = f"test-node-{uuid.uuid4().hex[:8]}"
    bus = RabbitMQEventBus(EventCatalog.load(), url=AMQP, exchange=exchange,
                           service="registrar", node=node, strict=True)
    await consumer.start()
    await bus.start()
    try:
        await asyncio.wait_for(consumer.ready.wait(), 15)
        bus.publish("E_UL_AOR_INSERT", {"aor": "before@x"})
        await eventually(lambda: [e for e in got if e.params["aor"] == "before@x"], 10,
                         "the first event")
        assert await eventually(lambda: close_connection(name), 15, "the connection listed")
        assert await eventually(lambda: close_connection(f"sipmesh-events {node}"), 15,
                                "the publisher's connection listed")
        await eventually(lambda: consumer.reconnects >= 1 and consumer.ready.is_set(), 20,
                         "the consumer reconnected")
        for i in range(5):
            bus.publish("E_UL_AOR_DELETE", {"aor": f"after{i}@x"})
        await eventually(lambda: len(got) >= 6, 15, "the events published after")
        assert [e.params["aor"] for e in got] == ["before@x", *(f"after{i}@x" for i in range(5))]
        assert bus.stats.dropped == 0
    finally:
        await bus.close()
        await consumer.close()
        conn = await aio_pika.connect(AMQP)
        await (await conn.channel()).exchange_delete(exchange)
        await conn.close()
