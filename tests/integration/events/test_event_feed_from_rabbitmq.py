"""The gateway path: events raised by different services/nodes go through the real RabbitMQ
exchange, a consumer feeds the subscription manager, a udp: subscriber gets all of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aio_pika

from gateway.events.store import SQLiteSubscriptionStore
from gateway.events.subscriptions import SubscriptionManager
from shared.events.consumer import RabbitMQEventConsumer
from shared.events.envelope import Event
from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventCatalog

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
CATALOG = EventCatalog.load()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)


async def test_subscriber_gets_events_from_every_service_and_node(tmp_path: Path) -> None:
    exchange = f"test.feed.{uuid.uuid4().hex[:12]}"
    manager = SubscriptionManager(CATALOG, SQLiteSubscriptionStore(tmp_path / "s.db"))
    await manager.start()
    seen: list[Event] = []

    async def feed(ev: Event) -> None:
        seen.append(ev)
        await manager.on_event(ev)

    consumer = RabbitMQEventConsumer(feed, url=AMQP, exchange=exchange,
                                     patterns=["usrloc.E_UL_AOR_INSERT", "*.E_UL_AOR_DELETE"])
    buses = [
        RabbitMQEventBus(CATALOG, url=AMQP, exchange=exchange, service=svc, node=node,
                         strict=True)
        for svc, node in (("registrar", "reg-1"), ("registrar", "reg-2"), ("dialog", "dlg-1"))
    ]
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Udp, local_addr=("127.0.0.1", 0))
    try:
        await consumer.start()
        async with asyncio.timeout(10):
            await consumer.ready.wait()
        port = transport.get_extra_info("sockname")[1]
        await manager.subscribe("E_UL_AOR_INSERT", f"udp:127.0.0.1:{port}")
        for bus in buses:
            await bus.start()
            bus.publish("E_UL_AOR_INSERT", {"aor": f"{bus.node}@example.com"})
            # not bound by the consumer's pattern: must not reach it
            bus.publish("E_DLG_STATE_CHANGED", {"hash_entry": 1, "hash_id": 1, "callid": "c",
                                                "from_tag": "f", "to_tag": "", "old_state": 1,
                                                "new_state": 2})
        async with asyncio.timeout(10):
            got = sorted([json.loads(await proto.got.get())["params"]["aor"] for _ in buses])
        assert got == ["dlg-1@example.com", "reg-1@example.com", "reg-2@example.com"]
        assert {(e.service, e.node) for e in seen} == {
            ("registrar", "reg-1"), ("registrar", "reg-2"), ("dialog", "dlg-1")}
        assert all(e.name == "E_UL_AOR_INSERT" for e in seen)
    finally:
        transport.close()
        for bus in buses:
            await bus.close()
        await consumer.close()
        await manager.close()
        conn = await aio_pika.connect(AMQP)
        ch = await conn.channel()
        await ch.exchange_delete(exchange)
        await conn.close()
