"""Subscribed FreeSWITCH events on a real `sipmesh up` in RabbitMQ mode (the broker on
5672, a private exchange per run): a FreeSWITCH event reaches a subscriber made with
the `opensips` package's event handler through the gateway, and a queue bound to the
exchange, as E_FREESWITCH {name, sender, body, box}."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import jsonschema
import pytest
from opensips.event import OpenSIPSEventHandler
from opensips.mi import OpenSIPSMI

from services.freeswitch.testing.fake_freeswitch import FakeThread, Load
from shared.events.envelope import Event
from tests.integration.edge.edge_harness import free_port
from tests.integration.freeswitch.harness import (
    Box,
    mi,
    start_box,
    start_mesh,
    stop_boxes,
    wait_usable,
    write_config,
)
from tests.integration.spine.meshproc import ROOT, MeshProcess

pytestmark = pytest.mark.peers

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
SCHEMA = json.loads((ROOT / "contracts/events/E_FREESWITCH.json").read_text())


@pytest.fixture(scope="module")
def exchange() -> Iterator[str]:
    name = f"test.fs.{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await aio_pika.connect(AMQP)
        await (await conn.channel()).exchange_delete(name)
        await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory,
          exchange: str) -> Iterator[tuple[MeshProcess, Box, FakeThread]]:
    tmp = tmp_path_factory.mktemp("fsrmq")
    thread = FakeThread()
    boxes: list[Box] = []
    mesh = None
    try:
        boxes = [start_box(thread, tmp, "fs-rmq", Load(1, 50, 95.0), heartbeat=0.5)]
        config = tmp / "sipmesh.toml"
        write_config(config, boxes, events="CHANNEL_CREATE,CHANNEL_HANGUP", heartbeat=0.5,
                     store=tmp / "freeswitch.sqlite")
        mesh = start_mesh(tmp, config, free_port(), SIPMESH_EVENTS_RABBITMQ_URL=AMQP,
                          SIPMESH_EVENTS_EXCHANGE=exchange)
        wait_usable(mesh.gateway_url, {boxes[0].id: True})
        yield mesh, boxes[0], thread
    finally:
        if mesh is not None:
            mesh.stop()
        stop_boxes(thread, boxes)


async def _consuming(url: str) -> None:
    async with asyncio.timeout(20):
        while (await asyncio.to_thread(mi, url, "get_statistics", [["events:consumer_ready"]])
               )["events:consumer_ready"] != 1:
            await asyncio.sleep(0.1)  # polling pace


async def test_freeswitch_events_reach_an_opensips_subscriber_and_rabbitmq(
        setup: tuple[MeshProcess, Box, FakeThread], exchange: str) -> None:
    mesh, box, thread = setup
    await _consuming(mesh.gateway_url)
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[Any] = asyncio.Queue()

    def callback(msg: Any) -> None:  # the handler's reader thread
        loop.call_soon_threadsafe(received.put_nowait, msg)

    conn = await aio_pika.connect(AMQP)
    handler = OpenSIPSEventHandler(mi=OpenSIPSMI("http", url=mesh.gateway_url),
                                   _type="datagram", ip="127.0.0.1", port=0)
    await asyncio.to_thread(handler.subscribe, "E_FREESWITCH", callback, 120)
    try:
        channel = await conn.channel()
        tap = await channel.declare_queue(exclusive=True, auto_delete=True)
        # The routing key is <family>.<name> (ARCHITECTURE.md): a consumer binds the family.
        await tap.bind(await channel.get_exchange(exchange), "freeswitch.#")
        call = await asyncio.to_thread(thread.call, lambda: box.fake.add_call(
            cid_num="Zoë", dest="conference"))
        msg = await asyncio.wait_for(received.get(), 20)
        assert msg["method"] == "E_FREESWITCH"
        params = dict(msg["params"])
        jsonschema.validate(params, SCHEMA)
        assert (params["name"], params["sender"], params["box"]) == (
            "CHANNEL_CREATE", "127.0.0.1", box.id)
        body = json.loads(params["body"])
        assert body["Unique-ID"] == call and body["Caller-Caller-ID-Number"] == "Zoë"
        async with asyncio.timeout(20), tap.iterator() as messages:
            async for message in messages:
                await message.ack()
                event = Event.from_body(message.body, message.routing_key)
                break
        assert message.routing_key == "freeswitch.E_FREESWITCH" and message.delivery_mode == 2
        assert event.service == "freeswitch"
        assert json.loads(event.params["body"])["Unique-ID"] == call
        # the hangup through fs_api uuid_kill raises CHANNEL_HANGUP the same way
        killed = await asyncio.to_thread(mi, mesh.gateway_url, "fs_api",
                                         [box.id, f"uuid_kill {call}"])
        assert killed == "+OK\n"
        msg = await asyncio.wait_for(received.get(), 20)
        assert msg["params"]["name"] == "CHANNEL_HANGUP"
        assert json.loads(msg["params"]["body"])["Unique-ID"] == call
    finally:
        await asyncio.to_thread(handler.unsubscribe, "E_FREESWITCH")
        await conn.close()
