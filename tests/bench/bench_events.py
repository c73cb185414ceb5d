"""Event bus figures (a script, not a test): run by `make bench`.

1. Latency: publish() -> consumer on the real RabbitMQ at a paced 1,000 events/s for 5 s;
   p50/p99/max of (consumer receive time - envelope time). Goal: p99 < 5 ms.
2. Throughput: a burst of 20,000 events published at once, until all are confirmed by the
   broker (publisher confirms), with one event in flight (strict order, the default) and
   with 64 in flight.
3. Buffer cost: how many E_UL_CONTACT_INSERT events the in-memory buffer holds per MB
   (tracemalloc over 20,000 buffered events with no broker reachable).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time
import tracemalloc
import uuid

import aio_pika

from shared.events.consumer import RabbitMQEventConsumer
from shared.events.envelope import Event
from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventCatalog

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
CATALOG = EventCatalog.load()
CONTACT = {
    "aor": "alice@example.com", "uri": "sip:alice@192.0.2.10:5060;transport=udp",
    "received": "sip:198.51.100.7:40312", "path": "", "qval": 10,
    "socket": "udp:10.0.0.1:5060", "bflags": 0, "expires": 1_800_000_000,
    "callid": "a84b4c76e66710@pc33.atlanta.example.com", "cseq": 314159, "attr": "",
    "latency": 0,
}


async def latency_and_throughput(max_in_flight: int) -> None:
    print(f"-- RabbitMQ bus, max_in_flight={max_in_flight}")
    exchange = f"bench.events.{uuid.uuid4().hex[:8]}"
    lat: list[float] = []
    done = asyncio.Event()
    expected = 5000

    async def on_event(ev: Event) -> None:
        lat.append(time.time() - ev.time)
        if len(lat) >= expected:
            done.set()

    consumer = RabbitMQEventConsumer(on_event, url=AMQP, exchange=exchange, prefetch=1000)
    await consumer.start()
    await asyncio.wait_for(consumer.ready.wait(), 10)
    bus = RabbitMQEventBus(CATALOG, url=AMQP, exchange=exchange, service="bench", node="b1",
                           buffer_size=50_000, max_in_flight=max_in_flight)
    await bus.start()
    try:
        start = time.perf_counter()
        for i in range(expected):  # paced at 1,000/s against the wall clock
            bus.publish("E_UL_CONTACT_INSERT", {**CONTACT, "cseq": i})
            delay = start + (i + 1) / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.wait_for(done.wait(), 30)
        ms = sorted(x * 1000 for x in lat)
        p99 = ms[int(len(ms) * 0.99) - 1]
        slow = sum(x > 5 for x in ms)
        print(f"latency publish->consumer @1000/s, {len(ms)} events: "
              f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms, "
              f"{slow} over 5 ms; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
              f"(goal p99 < 5 ms: {'met' if p99 < 5 else 'NOT met'})")

        lat.clear()
        done.clear()
        expected = 20_000
        t0 = time.perf_counter()
        for i in range(expected):
            bus.publish("E_UL_CONTACT_INSERT", {**CONTACT, "cseq": i})
        t_pub = time.perf_counter() - t0
        await bus.flush(120)
        t_conf = time.perf_counter() - t0
        await asyncio.wait_for(done.wait(), 60)
        t_cons = time.perf_counter() - t0
        print(f"burst of {expected}: publish() calls {expected / t_pub:,.0f}/s "
              f"({t_pub * 1e6 / expected:.1f} us each); broker-confirmed "
              f"{expected / t_conf:,.0f}/s; consumed {expected / t_cons:,.0f}/s")
    finally:
        await bus.close()
        await consumer.close()
        conn = await aio_pika.connect(AMQP)
        await (await conn.channel()).exchange_delete(exchange)
        await conn.close()


async def buffer_cost() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # nothing listens: the bus only buffers
    bus = RabbitMQEventBus(CATALOG, url=f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/",
                           service="bench", node="b1", buffer_size=100_000,
                           backoff_initial=5, backoff_max=5)
    n = 20_000
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        bus.publish("E_UL_CONTACT_INSERT", {**CONTACT, "cseq": i})
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(st.size_diff for st in after.compare_to(before, "filename"))
    per_event = used / n
    print(f"buffer: {per_event:,.0f} bytes per buffered E_UL_CONTACT_INSERT, "
          f"{(1 << 20) / per_event:,.0f} events per MB")
    s.close()


async def main() -> None:
    await buffer_cost()
    await latency_and_throughput(1)  # strict order (default)
    await latency_and_throughput(64)


if __name__ == "__main__":
    asyncio.run(main())
