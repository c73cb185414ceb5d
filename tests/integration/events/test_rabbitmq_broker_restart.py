"""The broker goes away in the middle of a stream of events and comes back.

Against the real RabbitMQ on this machine: ``rabbitmqctl stop_app`` while a publisher keeps
publishing, then ``start_app`` and ``await_startup``. Every event accepted into the buffer
must reach a durable queue bound to the exchange, in publish order (duplicates from an
at-least-once resend are allowed and removed by envelope id). The broker is started again in
``finally`` whatever happens.
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


async def rabbitmqctl(*args: str, timeout: float = 90) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout):
        _out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {proc.returncode} {err.decode()}")


async def test_stop_and_start_broker_mid_stream_loses_nothing_and_keeps_order() -> None:
    exchange = f"test.restart.{uuid.uuid4().hex[:12]}"
    queue_name = f"{exchange}.q"
    setup = await aio_pika.connect(AMQP)
    ch = await setup.channel()
    ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    q = await ch.declare_queue(queue_name, durable=True)
    await q.bind(ex, "#")
    await setup.close()

    bus = RabbitMQEventBus(
        EventCatalog.load(), url=AMQP, exchange=exchange, service="registrar", node="n1",
        buffer_size=20_000, strict=True, publish_timeout=1.0, connect_timeout=1.0,
        backoff_initial=0.05, backoff_max=0.5,
    )
    accepted: list[Event] = []
    stop = asyncio.Event()
    # A consumer on a durable queue of its own must resume by itself after the restart.
    consumed: list[str] = []

    async def on_event(ev: Event) -> None:
        consumed.append(ev.id)

    consumer = RabbitMQEventConsumer(on_event, url=AMQP, exchange=exchange,
                                     queue=f"{queue_name}.consumer", reconnect_interval=0.2)
    await consumer.start()
    async with asyncio.timeout(10):
        await consumer.ready.wait()

    async def publisher() -> None:
        i = 0
        while not stop.is_set():
            ev = bus.publish("E_UL_AOR_INSERT", {"aor": f"user{i}@example.com"})
            assert ev is not None
            accepted.append(ev)
            i += 1
            await asyncio.sleep(0.002)  # pacing of the stream (~500 events/s), not a wait

    await bus.start()
    pub = asyncio.create_task(publisher())
    broker_stopped = False
    try:
        await eventually(lambda: bus.stats.delivered >= 100, 20, "100 events before the stop")
        broker_stopped = True
        await rabbitmqctl("stop_app")
        await eventually(lambda: bus.buffered >= 50, 20, "events waiting while the broker is down")
        waiting_at_restart = bus.buffered
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")
        broker_stopped = False
        mark = len(accepted)
        await eventually(lambda: bus.stats.delivered >= mark + 100, 60,
                       "delivery to resume after the restart")
        stop.set()
        await pub
        assert await bus.flush(60), f"buffer did not drain: {bus.buffered} left"
    finally:
        stop.set()
        if not pub.done():
            pub.cancel()
        if broker_stopped:
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")
        await bus.close(drain_timeout=5)

    try:
        await eventually(lambda: len(set(consumed)) >= len(accepted), 60,
                       "the consumer to catch up after the restart")
    finally:
        await consumer.close()
    assert list(dict.fromkeys(consumed)) == [e.id for e in accepted]
    assert consumer.reconnects >= 1
    assert bus.stats.dropped == 0
    assert bus.stats.delivery_failures >= 1  # the outage was really seen by the bus
    assert waiting_at_restart >= 50

    got: list[str] = []
    reader = await aio_pika.connect(AMQP)
    try:
        ch = await reader.channel()
        q = await ch.declare_queue(queue_name, durable=True)
        seen: set[str] = set()
        async with asyncio.timeout(60):
            while len(seen) < len(accepted):
                msg = await q.get(no_ack=True, fail=False)
                if msg is None:
                    await asyncio.sleep(0.05)
                    continue
                ev = Event.from_body(msg.body, msg.routing_key)
                if ev.id not in seen:  # at-least-once: drop a resent duplicate
                    seen.add(ev.id)
                    got.append(ev.id)
        await q.delete(if_unused=False, if_empty=False)
        await ch.queue_delete(f"{queue_name}.consumer")
        await ch.exchange_delete(exchange)
    finally:
        await reader.close()
    assert got == [e.id for e in accepted], "events lost or reordered across the restart"
    print(f"\n{len(accepted)} events, {waiting_at_restart} buffered during the outage, "
          f"{bus.stats.delivery_failures} failed attempts")
