"""One contract suite over both EventBus backends: embedded, and RabbitMQ (the real broker).

"rabbitmq-pipelined" is the RabbitMQ bus with 32 events in flight. Each backend comes with
an observer that sees what the backend delivered: for the embedded bus its local listener,
for RabbitMQ a queue bound to the (per-test) exchange with '#'. A second observer binds
only the ``usrloc.#`` family (a listener pattern, a queue binding): what a consumer that
wants user-location events gets.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import pytest

from shared.events.bus import BufferedEventBus, EmbeddedEventBus
from shared.events.envelope import Event
from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventCatalog, EventValidationError

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
CATALOG = EventCatalog.load()


@dataclass
class Rig:
    bus: BufferedEventBus
    received: Callable[[int, float], Awaitable[list[Event]]]
    family: asyncio.Queue[tuple[str, Event]]  # (routing key, event) bound to usrloc.#


async def _collect(queue: asyncio.Queue[Event], n: int, timeout: float) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await queue.get())
    return out


@pytest.fixture(params=["embedded", "rabbitmq", "rabbitmq-pipelined"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    seen: asyncio.Queue[Event] = asyncio.Queue()
    family: asyncio.Queue[tuple[str, Event]] = asyncio.Queue()
    if request.param == "embedded":
        bus: BufferedEventBus = EmbeddedEventBus(CATALOG, service="registrar", node="n1",
                                                 strict=True)

        async def listener(ev: Event) -> None:
            await seen.put(ev)

        async def usrloc(ev: Event) -> None:
            await family.put((CATALOG.routing_key(ev.name), ev))

        bus.add_listener(listener)
        bus.add_listener(usrloc, "usrloc.#")
        await bus.start()
        yield Rig(bus, lambda n, t: _collect(seen, n, t), family)
        await bus.close()
        return
    exchange = f"test.events.{uuid.uuid4().hex[:12]}"
    conn = await aio_pika.connect(AMQP)
    ch = await conn.channel()
    ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await ch.declare_queue(exclusive=True)
    await queue.bind(ex, "#")

    async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with msg.process():
            await seen.put(Event.from_body(msg.body, msg.routing_key))

    await queue.consume(on_message)
    family_queue = await ch.declare_queue(exclusive=True)
    await family_queue.bind(ex, "usrloc.#")

    async def on_usrloc(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with msg.process():
            await family.put((msg.routing_key or "", Event.from_body(msg.body)))

    await family_queue.consume(on_usrloc)
    bus = RabbitMQEventBus(CATALOG, url=AMQP, exchange=exchange, service="registrar",
                           node="n1", strict=True,
                           max_in_flight=32 if request.param == "rabbitmq-pipelined" else 1)
    await bus.start()
    try:
        yield Rig(bus, lambda n, t: _collect(seen, n, t), family)
    finally:
        await bus.close()
        await ch.exchange_delete(exchange)
        await conn.close()


async def test_published_events_arrive_in_order_with_their_envelope(rig: Rig) -> None:
    sent = [rig.bus.publish("E_UL_AOR_INSERT", {"aor": f"user{i}@example.com"})
            for i in range(50)]
    got = await rig.received(50, 10)
    assert [e.params["aor"] for e in got] == [f"user{i}@example.com" for i in range(50)]
    assert [e.id for e in got] == [e.id for e in sent if e is not None]
    first = got[0]
    assert first.name == "E_UL_AOR_INSERT"
    assert (first.service, first.node) == ("registrar", "n1")
    assert len({e.id for e in got}) == 50
    assert first.time > 1_600_000_000


async def test_routing_key_is_family_dot_event_and_a_family_binds_with_one_pattern(
        rig: Rig) -> None:
    rig.bus.publish("E_UL_AOR_DELETE", {"aor": "a@b"})
    rig.bus.publish("E_DLG_STATE_CHANGED", {"hash_entry": 1, "hash_id": 2, "callid": "c",
                                            "from_tag": "f", "to_tag": "t", "old_state": 1,
                                            "new_state": 2})
    rig.bus.publish("E_UL_AOR_INSERT", {"aor": "c@d"})
    got = await rig.received(3, 10)
    assert [e.name for e in got] == ["E_UL_AOR_DELETE", "E_DLG_STATE_CHANGED",
                                     "E_UL_AOR_INSERT"]
    assert got[1].params["new_state"] == 2
    # Bound to usrloc.#: the two user-location events, with their keys, not the dialog one.
    family = [await asyncio.wait_for(rig.family.get(), 10) for _ in range(2)]
    assert [(key, ev.name) for key, ev in family] == [
        ("usrloc.E_UL_AOR_DELETE", "E_UL_AOR_DELETE"),
        ("usrloc.E_UL_AOR_INSERT", "E_UL_AOR_INSERT")]
    assert rig.family.empty()


async def test_flush_waits_until_the_backend_accepted_everything(rig: Rig) -> None:
    for i in range(20):
        rig.bus.publish("E_UL_AOR_INSERT", {"aor": f"u{i}@x"})
    assert await rig.bus.flush(10)
    assert rig.bus.buffered == 0
    assert rig.bus.stats.delivered == 20
    assert len(await rig.received(20, 10)) == 20


async def test_strict_mode_raises_on_a_payload_that_breaks_its_contract(rig: Rig) -> None:
    with pytest.raises(EventValidationError, match="aor"):
        rig.bus.publish("E_UL_AOR_INSERT", {"aor": 42})
    assert rig.bus.stats.published == 0


async def test_production_mode_counts_and_drops_a_bad_payload(rig: Rig) -> None:
    rig.bus.strict = False
    assert rig.bus.publish("E_UL_AOR_INSERT", {"nope": 1}) is None
    assert rig.bus.publish("E_NOT_AN_EVENT", {}) is None
    assert rig.bus.publish("E_UL_AOR_INSERT", {"aor": "ok@x"}) is not None
    got = await rig.received(1, 10)
    assert got[0].params == {"aor": "ok@x"}
    assert rig.bus.stats.dropped_invalid == 2
    sample = rig.bus.registry.get_sample_value(
        "sipmesh_events_dropped_total", {"reason": "invalid"})
    assert sample == 2
