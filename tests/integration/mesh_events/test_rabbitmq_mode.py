"""Issue 5 end to end on a real ``sipmesh up`` in RabbitMQ mode (the broker on 5672).

Every process publishes to the events exchange (a private one per test run); the gateway
consumes it and delivers to the subscribers made through its MI; ``sipmesh events``
reads the exchange directly and shows which service and node raised each event.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from shared.events.envelope import Event
from tests.integration.mesh_events.meshkit import (
    UdpSubscriber,
    check_threshold_event,
    mi,
    raise_on_edge,
    start_mesh,
)
from tests.integration.spine.meshproc import ROOT, MeshProcess
from tests.support.ports import release_port, reserve_port
from tests.support.waiting import eventually

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
EVENT = "E_CORE_THRESHOLD"


@pytest.fixture(scope="module")
def exchange() -> Iterator[str]:
    name = f"test.mesh.{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await aio_pika.connect(AMQP)
        await (await conn.channel()).exchange_delete(name)
        await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, exchange: str
) -> Iterator[tuple[MeshProcess, str]]:
    m, edge_pid = start_mesh(tmp_path_factory.mktemp("mesh_rmq"),
                             SIPMESH_EVENTS_RABBITMQ_URL=AMQP,
                             SIPMESH_EVENTS_EXCHANGE=exchange)
    yield m, edge_pid
    assert m.stop() == 0


async def _consuming(url: str) -> None:
    """Until the gateway's consumer is bound to the exchange (its statistic says so)."""
    async def ready() -> bool:
        answer = await mi(url, "get_statistics", [["events:consumer_ready"]])
        return bool(answer["events:consumer_ready"] == 1)

    await eventually(ready, 20, "the gateway's consumer", interval=0.1)


async def test_subscriber_gets_the_edge_event_through_the_broker(
    mesh: tuple[MeshProcess, str], exchange: str,
) -> None:
    m, edge_pid = mesh
    await _consuming(m.gateway_url)
    conn = await aio_pika.connect(AMQP)
    sub = await UdpSubscriber.open()
    try:
        # Also tap the exchange: the body is the parameters plus the envelope.
        channel = await conn.channel()
        tap = await channel.declare_queue(exclusive=True, auto_delete=True)
        await tap.bind(await channel.get_exchange(exchange), f"core.{EVENT}")
        assert await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 60]) == "OK"
        await raise_on_edge(m.gateway_url)
        got = await sub.next(20)
        assert got["method"] == EVENT
        check_threshold_event(got["params"], edge_pid)
        async with asyncio.timeout(15), tap.iterator() as messages:
            async for message in messages:
                await message.ack()
                event = Event.from_body(message.body, message.routing_key)
                break
        assert message.routing_key == f"core.{EVENT}"  # <family>.<EVENT_NAME>
        assert message.delivery_mode == 2  # persistent
        assert event.service == "edge" and event.node.endswith(f"-{edge_pid}")
        check_threshold_event(dict(event.params), edge_pid)
        stats = await mi(m.gateway_url, "get_statistics", [["events:"]])
        assert stats["events:raised"] >= 1 and stats["events:notified"] >= 1
        assert stats["events:dropped"] == 0
    finally:
        await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 0])
        sub.close()
        await conn.close()


async def test_sipmesh_events_reads_the_exchange(mesh: tuple[MeshProcess, str]) -> None:
    m, edge_pid = mesh
    env = dict(m.env, SIPMESH_DISCOVERY_URL=m.registry_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipmesh.cli.main", "events", EVENT, "--count", "1", "--json",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        # Its private queue is bound some time after start, invisibly to the mesh: raise
        # real events until one reaches it (the command exits after one).
        wait = asyncio.ensure_future(proc.communicate())
        async with asyncio.timeout(20):
            while not wait.done():
                await raise_on_edge(m.gateway_url)
                await asyncio.wait([wait], timeout=0.3)
        out, err = wait.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    body = json.loads(out.decode().splitlines()[0])
    assert body["_envelope"]["service"] == "edge"
    assert body["_envelope"]["node"].endswith(f"-{edge_pid}")
    check_threshold_event({k: v for k, v in body.items() if k != "_envelope"}, edge_pid)


@pytest.mark.parametrize("queue_setting", ["default", "named"])
async def test_durable_gateway_queue_keeps_events_raised_while_it_restarts(
    tmp_path: Path, exchange: str, queue_setting: str,
) -> None:
    """The gateway's queue is durable, so an event the edge raises while the gateway
    process is dead reaches the subscriber afterwards (the subscription itself comes back
    from the store): with ``[events] consumer_queue`` unset (the default: a queue named
    after the gateway's host and MI port, which the restarted gateway finds again) or set
    to a name."""
    port = reserve_port()
    env = {"SIPMESH_GATEWAY_PORT": str(port)}
    if queue_setting == "named":
        queue = f"{exchange}.gw"
        env["SIPMESH_EVENTS_CONSUMER_QUEUE"] = queue
    else:
        queue = f"{exchange}.gateway.{socket.gethostname()}-{port}"
    m, edge_pid = start_mesh(tmp_path, SIPMESH_EVENTS_RABBITMQ_URL=AMQP,
                             SIPMESH_EVENTS_EXCHANGE=exchange,
                             SIPMESH_MESH_BACKOFF_INITIAL="2",  # the gateway stays down 2 s
                             **env)
    sub = await UdpSubscriber.open()
    try:
        await _consuming(m.gateway_url)
        await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 300])
        edge_mi = m.line(r"^endpoint edge metrics (\S+)/metrics$").group(1) + "/mi"
        pid = [int(x.split()[3]) for x in m.seen if x.startswith("started gateway pid")][-1]
        os.kill(pid, signal.SIGKILL)
        m.expect(rf"^exited gateway pid {pid} ")
        down = asyncio.get_running_loop().time()
        # Straight to the edge (no gateway now): its slow MI request raises the event.
        await mi(edge_mi, "get_statistics", [["core:rcv_requests"]])
        assert asyncio.get_running_loop().time() - down < 1.5  # well inside the outage
        m.gateway_url = m.expect(r"^endpoint gateway mi (\S+)").group(1)
        got = await sub.next(30)
        assert got["method"] == EVENT
        check_threshold_event(got["params"], edge_pid)
        await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 0])
    finally:
        sub.close()
        assert m.stop() == 0
        release_port(port)
        conn = await aio_pika.connect(AMQP)
        await (await conn.channel()).queue_delete(queue)
        await conn.close()
