"""Two gateway processes as one HA pair on the real RabbitMQ and PostgreSQL: one shared
durable queue (competing consumers) and one shared subscription table (followed through
LISTEN/NOTIFY).

A UDP subscriber records each datagram with its source port: each gateway sends from one
UDP socket of its own, so the port says which replica delivered it. Events are published
straight to the exchange as a registrar would, so no other service runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from shared.discovery.embedded import RegistryServer
from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventCatalog
from tests.integration.mesh_events.meshkit import mi
from tests.support.ports import release_port, reserve_port
from tests.support.waiting import eventually

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PG = "postgresql://postgres@127.0.0.1:5432/test"
EVENT = "E_UL_AOR_INSERT"
CATALOG = EventCatalog.load()
ROOT = Path(__file__).resolve().parents[3]
PREFETCH = 100  # RabbitMQEventConsumer's default: the most a replica holds unacked
pytestmark = pytest.mark.timeout(60)


@dataclass
class Subscriber(asyncio.DatagramProtocol):
    """``udp:`` subscriber keeping (aor, source port) of every datagram, in order."""

    got: list[tuple[str, int]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls) -> Subscriber:
        sub = cls()
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: sub, local_addr=("127.0.0.1", 0))
        return sub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        body = json.loads(data)
        assert body["method"] == EVENT
        self.got.append((str(body["params"]["aor"]), addr[1]))

    @property
    def socket(self) -> str:
        assert self.transport is not None
        return f"udp:127.0.0.1:{self.transport.get_extra_info('sockname')[1]}"

    def aors(self) -> list[str]:
        return [aor for aor, _ in self.got]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Gateway:
    proc: asyncio.subprocess.Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mi"

    async def stat(self, name: str) -> int:
        """This gateway's own statistic (``/mi`` would sum the mesh's)."""
        return int((await mi(f"{self.url}/local", "get_statistics", [[f"events:{name}"]]))[
            f"events:{name}"])

    async def knows(self, sock: str) -> bool:
        answer = await mi(self.url, "subscribers_list", [EVENT])
        return any(s["socket"] == sock for s in answer["Subscribers"])


@dataclass
class Pair:
    exchange: str
    env: dict[str, str]
    tmp: Path
    gateways: list[Gateway] = field(default_factory=list)

    async def start(self) -> Gateway:
        port = reserve_port()
        log = (self.tmp / f"gw-{port}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", cwd=ROOT, stdout=log, stderr=log,
            env=dict(self.env, SIPMESH_GATEWAY_PORT=str(port)))
        gw = Gateway(proc, port)
        self.gateways.append(gw)

        async def consuming() -> bool:
            assert proc.returncode is None, (self.tmp / f"gw-{port}.log").read_text()
            return await gw.stat("consumer_ready") == 1

        await eventually(consuming, 20, f"gateway on {port} consuming",
                         ignore=(OSError, Exception), interval=0.1)
        return gw

    async def publish(self, aors: list[str], pace: float = 0.0) -> None:
        bus = RabbitMQEventBus(CATALOG, url=AMQP, exchange=self.exchange,
                               service="registrar", node="reg-1", strict=True)
        await bus.start()
        for aor in aors:
            bus.publish(EVENT, {"aor": aor})
            if pace:
                await asyncio.sleep(pace)  # a steady rate, not a synchronisation
        await bus.close(10)
        assert bus.stats.delivered == len(aors)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    tag = uuid.uuid4().hex[:10]
    exchange, queue, schema = f"test.gwpair.{tag}", f"test.gwpair.{tag}.gateway", f"gwp_{tag}"
    conn = await asyncpg.connect(PG)
    await conn.execute(f"CREATE SCHEMA {schema}")
    registry = RegistryServer()
    env = dict(os.environ, SIPMESH_CONFIG="", SIPMESH_DISCOVERY_URL=await registry.start(),
               SIPMESH_EVENTS_RABBITMQ_URL=AMQP, SIPMESH_EVENTS_EXCHANGE=exchange,
               SIPMESH_EVENTS_CONSUMER_QUEUE=queue,
               # a schema of its own: this test's table, and its own NOTIFY channel
               SIPMESH_EVENTS_STORE=f"{PG}?search_path={schema}",
               SIPMESH_GATEWAY_DRAIN_DELAY="0.1")
    p = Pair(exchange, env, tmp_path)
    try:
        yield p
    finally:
        for gw in p.gateways:
            if gw.proc.returncode is None:
                gw.proc.kill()
                await gw.proc.wait()
            release_port(gw.port)
        await registry.stop()
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
        amqp = await aio_pika.connect(AMQP)
        async with amqp:
            channel = await amqp.channel()
            await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)


async def test_each_event_once_and_a_subscription_through_either_replica(
    pair: Pair,
) -> None:
    a, b = await pair.start(), await pair.start()
    first, second = await Subscriber.open(), await Subscriber.open()
    try:
        assert await mi(a.url, "event_subscribe", [EVENT, first.socket, 300]) == "OK"
        began = time.monotonic()
        await eventually(lambda: b.knows(first.socket), 5, "B knows A's subscription",
                         interval=0.02)
        seen_by_b = time.monotonic() - began

        n = 200
        batch = [f"u{i}@example.com" for i in range(n)]
        await pair.publish(batch)
        await eventually(lambda: len(set(first.aors())) == n, 10, "every event delivered",
                         interval=0.05)
        # The broker gave each message to one replica: together they took N, each a share.
        taken = [await a.stat("received"), await b.stat("received")]
        assert sum(taken) == n and min(taken) > 0, taken
        assert sorted(first.aors()) == sorted(batch)  # each once
        assert len({port for _, port in first.got}) == 2  # delivered by both replicas

        # Subscribed through B, unsubscribed through B: A follows both.
        assert await mi(b.url, "event_subscribe", [EVENT, second.socket, 300]) == "OK"
        assert await mi(b.url, "event_subscribe", [EVENT, first.socket, 0]) == "OK"
        began = time.monotonic()
        await eventually(
            lambda: _both(a.knows(second.socket), _not(a.knows(first.socket))), 5,
            "A follows B's subscribe and unsubscribe", interval=0.02)
        seen_by_a = time.monotonic() - began
        more = [f"v{i}@example.com" for i in range(n)]
        await pair.publish(more)
        await eventually(lambda: len(set(second.aors())) == n, 10, "the second subscriber",
                         interval=0.05)
        assert sorted(second.aors()) == sorted(more)
        assert await a.stat("received") + await b.stat("received") == 2 * n
        assert sorted(first.aors()) == sorted(batch)  # nothing after the unsubscribe
        print(f"\nsubscription seen by the other replica after {seen_by_b * 1000:.0f} ms "
              f"and {seen_by_a * 1000:.0f} ms")
        assert seen_by_b < 2.0 and seen_by_a < 2.0  # NOTIFY, not the 30 s periodic read
    finally:
        first.close()
        second.close()


async def _both(x: Any, y: Any) -> bool:
    return bool(await x) and bool(await y)


async def _not(x: Any) -> bool:
    return not await x


async def test_a_replica_killed_mid_stream_loses_no_event(pair: Pair) -> None:
    a, b = await pair.start(), await pair.start()
    sub = await Subscriber.open()
    try:
        assert await mi(a.url, "event_subscribe", [EVENT, sub.socket, 300]) == "OK"
        await eventually(lambda: b.knows(sub.socket), 5, "B knows the subscription")
        m = 400
        aors = [f"k{i}@example.com" for i in range(m)]
        publishing = asyncio.create_task(pair.publish(aors, pace=0.004))  # >= 1.6 s
        # Kill B once both replicas are delivering, the stream in full flow.
        await eventually(lambda: len({p for _, p in sub.got}) == 2 and len(sub.got) > 100,
                         10, "both replicas delivering", interval=0.01)
        b.proc.send_signal(signal.SIGKILL)
        await b.proc.wait()
        killed_at = len(sub.got)
        await publishing
        await eventually(lambda: set(sub.aors()) == set(aors), 15, "every event delivered",
                         interval=0.05)
        assert killed_at < m  # it did die mid-stream
        survivor = sub.got[-1][1]  # after the kill only A delivers
        dead = {p for _, p in sub.got} - {survivor}
        assert len(dead) == 1
        # Duplicates only of what B had delivered but not acked when it died: each first
        # came from B and then from A, and there are at most B's prefetch of them.
        copies: dict[str, list[int]] = {}
        for aor, port in sub.got:
            copies.setdefault(aor, []).append(port)
        twice = {aor: ports for aor, ports in copies.items() if len(ports) > 1}
        assert all(ports == [*dead, survivor] for ports in twice.values()), twice
        assert len(twice) <= PREFETCH
        print(f"\nB killed after {killed_at} of {m} delivered; {len(twice)} delivered twice")
    finally:
        sub.close()
