"""The bounded buffer in front of every backend, topic patterns, listener isolation."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from shared.events.bus import EmbeddedEventBus, topic_matches
from shared.events.envelope import Event
from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventCatalog
from tests.support.waiting import eventually

CATALOG = EventCatalog.load()


@pytest.mark.parametrize(
    ("pattern", "key", "match"),
    [
        ("#", "E_UL_CONTACT_INSERT", True),
        ("E_UL_CONTACT_INSERT", "E_UL_CONTACT_INSERT", True),
        ("E_UL_CONTACT_INSERT", "E_UL_CONTACT_DELETE", False),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("#.c", "a.b.c", True),
    ],
)
def test_amqp_topic_matching(pattern: str, key: str, match: bool) -> None:
    assert topic_matches(pattern, key) is match


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port where nothing listens: connecting is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


async def test_broker_away_publish_never_blocks_and_overflow_is_counted(refused_port: int) -> None:
    bus = RabbitMQEventBus(
        CATALOG, url=f"amqp://guest:guest@127.0.0.1:{refused_port}/", service="edge",
        node="n1", buffer_size=50, strict=True, backoff_initial=0.01, backoff_max=0.05,
    )
    await bus.start()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        accepted = [bus.publish("E_UL_AOR_INSERT", {"aor": f"u{i}@x"}) for i in range(80)]
        assert loop.time() - t0 < 0.5  # 80 publishes, no network wait in the caller
        assert sum(e is not None for e in accepted) == 50
        assert all(e is None for e in accepted[50:])  # tail drop: the kept prefix is intact
        assert bus.stats.dropped_overflow == 30
        assert bus.registry.get_sample_value(
            "sipmesh_events_dropped_total", {"reason": "overflow"}) == 30
        assert bus.registry.get_sample_value("sipmesh_events_buffered") == 50
        # The drain loop keeps retrying with backoff, and nothing leaves the buffer.
        await eventually(lambda: bus.stats.delivery_failures >= 3, 5, "3 failed attempts")
        assert bus.buffered == 50
        assert not await bus.flush(0.05)
    finally:
        await bus.close(drain_timeout=0.01)


async def test_listeners_get_only_their_pattern_and_a_failing_one_is_isolated() -> None:
    bus = EmbeddedEventBus(CATALOG, service="dialog", node="n2", strict=True)
    ul: list[str] = []
    everything: list[str] = []

    async def boom(ev: Event) -> None:
        raise RuntimeError("listener bug")

    async def ul_listener(ev: Event) -> None:
        ul.append(ev.name)

    async def all_listener(ev: Event) -> None:
        everything.append(ev.name)

    bus.add_listener(boom)
    bus.add_listener(ul_listener, "usrloc.E_UL_AOR_INSERT")
    bus.add_listener(all_listener, "#")
    await bus.start()
    bus.publish("E_UL_AOR_INSERT", {"aor": "a@b"})
    bus.publish("E_UL_AOR_DELETE", {"aor": "a@b"})
    assert await bus.flush(2)
    assert ul == ["E_UL_AOR_INSERT"]
    assert everything == ["E_UL_AOR_INSERT", "E_UL_AOR_DELETE"]
    await bus.close()


async def test_close_delivers_what_is_buffered() -> None:
    bus = EmbeddedEventBus(CATALOG, service="s", node="n", strict=True)
    got: list[str] = []

    async def listener(ev: Event) -> None:
        got.append(str(ev.params["aor"]))

    bus.add_listener(listener)
    await bus.start()
    for i in range(10):
        bus.publish("E_UL_AOR_INSERT", {"aor": f"{i}@x"})
    await bus.close(drain_timeout=2)
    assert got == [f"{i}@x" for i in range(10)]


def test_buffer_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        EmbeddedEventBus(CATALOG, service="s", node="n", buffer_size=0)


def test_body_carries_params_and_envelope() -> None:
    ev = Event("E_UL_AOR_INSERT", {"aor": "a@b"}, 1700000000.5, "registrar", "n1", "abc")
    back = Event.from_body(ev.to_body())
    assert back == ev
    assert b'"aor":"a@b"' in ev.to_body()


async def test_event_ids_are_unique_per_bus_and_across_buses() -> None:
    one = EmbeddedEventBus(CATALOG, service="s", node="n1", strict=True)
    two = EmbeddedEventBus(CATALOG, service="s", node="n2", strict=True)
    ids = []
    for i in range(500):
        for bus in (one, two):
            ev = bus.publish("E_UL_AOR_INSERT", {"aor": f"{i}@x"})
            assert ev is not None
            ids.append(ev.id)
    assert len(set(ids)) == len(ids)
    # the shape consumers and the JSON-RPC feed already accept: 32 lower-case hex digits
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)


async def test_published_and_dropped_metrics_count_per_label() -> None:
    bus = EmbeddedEventBus(CATALOG, service="s", node="n", buffer_size=3)
    for i in range(4):
        bus.publish("E_UL_AOR_INSERT", {"aor": f"{i}@x"})
    bus.publish("E_UL_AOR_DELETE", {"aor": ""})  # minLength 1: invalid, dropped (not strict)
    get = bus.registry.get_sample_value
    assert get("sipmesh_events_published_total", {"event": "E_UL_AOR_INSERT"}) == 3
    assert get("sipmesh_events_published_total", {"event": "E_UL_AOR_DELETE"}) is None
    assert get("sipmesh_events_dropped_total", {"reason": "overflow"}) == 1
    assert get("sipmesh_events_dropped_total", {"reason": "invalid"}) == 1
    await bus.start()
    assert await bus.flush(2)
    assert get("sipmesh_events_delivered_total", {"backend": "embedded"}) == 3
    await bus.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP and never answers: an AMQP handshake stalls."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@pytest.mark.parametrize("port_kind", ["refused", "silent"])
async def test_close_while_connecting_to_an_away_broker_leaves_no_task(
        port_kind: str, refused_port: int, silent_port: int) -> None:
    """Closing while the drain loop is inside the first connect (what a loaded machine
    makes likely) must end every task the connection started. aio-pika's reconnect
    task swallows a cancellation until its connection is closed: left running, it hung
    the event loop's teardown of the test above."""
    port = refused_port if port_kind == "refused" else silent_port
    before = asyncio.all_tasks()
    bus = RabbitMQEventBus(
        CATALOG, url=f"amqp://guest:guest@127.0.0.1:{port}/", service="edge", node="n1",
        strict=True, backoff_initial=0.01, backoff_max=0.05, connect_timeout=30.0,
    )
    await bus.start()
    bus.publish("E_UL_AOR_INSERT", {"aor": "u@x"})
    # Let the drain loop enter the connect (the silent broker holds it there).
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(bus.close(drain_timeout=0.01), 10)
    assert loop.time() - t0 < 5
    await eventually(lambda: not (asyncio.all_tasks() - before - {asyncio.current_task()}),
                     5, "no task left behind by the closed bus")
