"""A billing-style consumer binds a RabbitMQ queue by family, as the README says.

A real ``sipmesh up`` (gateway, edge, registrar) publishes to a private exchange on the
real broker; the test's own queues are bound to ``usrloc.#`` and ``core.#``; a phone (sipp,
digest) registers through the edge. The usrloc queue gets the registration's
``E_UL_AOR_INSERT`` and ``E_UL_CONTACT_INSERT`` under ``usrloc.<EVENT>`` keys and nothing
else; ``E_CORE_THRESHOLD`` (raised by every MI request here) lands in the core queue only.
``events_list`` advertises what these services raise and not the contracts nobody raises.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

from shared.events.envelope import Event
from tests.integration.mesh_events.meshkit import mi, raise_on_edge
from tests.integration.registrar.harness import SCENARIOS
from tests.integration.spine.meshproc import MeshProcess
from tests.support.ports import reserve_port
from tests.support.waiting import eventually, eventually_sync

pytestmark = pytest.mark.peers
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="module")
def exchange() -> Iterator[str]:
    name = f"test.families.{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await aio_pika.connect(AMQP)
        await (await conn.channel()).exchange_delete(name)
        await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory,
         exchange: str) -> Iterator[tuple[MeshProcess, int]]:
    """The mesh and its edge's SIP port."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: run tests/peers/ensure.sh (make test does)")
    tmp = tmp_path_factory.mktemp("families")
    port = reserve_port()
    m = MeshProcess(tmp, SIPMESH_MESH_SERVICES="gateway,edge,registrar",
                    SIPMESH_EDGE_LISTEN=f"udp:127.0.0.1:{port}",
                    SIPMESH_REGISTRAR_STORE=str(tmp / "subscribers.sqlite"),
                    SIPMESH_EVENTS_RABBITMQ_URL=AMQP, SIPMESH_EVENTS_EXCHANGE=exchange,
                    SIPMESH_EVENTS_EXEC_THRESHOLD="1")
    try:
        m.line(r"^endpoint registrar grpc \S+")
        m.line(r"^endpoint edge sip ")
        yield m, port
    finally:
        m.stop()


@pytest.fixture
async def queues(exchange: str) -> AsyncIterator[dict[str, aio_pika.abc.AbstractQueue]]:
    conn = await aio_pika.connect(AMQP)
    channel = await conn.channel()
    ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    found = {}
    for binding in ("usrloc.#", "core.#"):
        q = await channel.declare_queue(exclusive=True, auto_delete=True)
        await q.bind(ex, binding)
        found[binding] = q
    try:
        yield found
    finally:
        await conn.close()


async def drain(q: aio_pika.abc.AbstractQueue) -> list[tuple[str, Event]]:
    got = []
    while (msg := await q.get(no_ack=True, fail=False)) is not None:
        got.append((msg.routing_key or "", Event.from_body(msg.body)))
    return got


def register(edge_port: int, tmp: Path, user: str, password: str, contact_port: int) -> bool:
    cmd = ["sipp", "-sf", str(SCENARIOS / "register_auth.xml"), "-i", "127.0.0.1",
           "-p", str(contact_port), f"127.0.0.1:{edge_port}",
           "-s", user, "-au", user, "-ap", password, "-m", "1", "-nostdin",
           "-timeout", "10s", "-timeout_error"]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, timeout=30).returncode == 0


async def test_a_queue_bound_to_usrloc_gets_a_registrations_events_only(
        mesh: tuple[MeshProcess, int], queues: dict[str, aio_pika.abc.AbstractQueue],
        tmp_path: Path) -> None:
    m, edge_port = mesh
    added = m.cli("user", "add", "erin@127.0.0.1", "erin-pw")
    assert added.returncode == 0, added.stderr
    contact = reserve_port()
    # The edge learns the registrar from discovery: until then REGISTER is refused.
    await asyncio.to_thread(eventually_sync, lambda: register(
        edge_port, tmp_path, "erin", "erin-pw", contact), 30, "erin registered", interval=0.5)
    await raise_on_edge(m.gateway_url)  # E_CORE_THRESHOLD from the edge, family core

    usrloc: list[tuple[str, Event]] = []
    core: list[tuple[str, Event]] = []

    async def arrived() -> bool:
        usrloc.extend(await drain(queues["usrloc.#"]))
        core.extend(await drain(queues["core.#"]))
        names = {e.name for _, e in usrloc if e.params.get("aor") == "erin@127.0.0.1"}
        return {"E_UL_AOR_INSERT", "E_UL_CONTACT_INSERT"} <= names and bool(core)

    await eventually(arrived, 20, "erin's usrloc events and a core event", interval=0.1)
    assert all(key == f"usrloc.{ev.name}" and ev.name.startswith("E_UL_")
               for key, ev in usrloc), usrloc
    assert all(key == f"core.{ev.name}" for key, ev in core), core
    insert = next(ev for _, ev in usrloc if ev.name == "E_UL_CONTACT_INSERT")
    assert insert.params["uri"] == f"sip:erin@127.0.0.1:{contact}"
    assert insert.service == "registrar"


async def test_events_list_advertises_what_the_running_services_raise(
        mesh: tuple[MeshProcess, int]) -> None:
    names = {e["name"] for e in (await mi(mesh[0].gateway_url, "events_list"))["Events"]}
    assert {"E_CORE_THRESHOLD", "E_UL_AOR_INSERT", "E_UL_CONTACT_INSERT",
            "E_UL_LATENCY_UPDATE"} <= names
    # Contracts kept, not advertised: no running service raises them.
    assert not names & {"E_ACC_CDR", "E_DLG_STATE_CHANGED", "E_CORE_PKG_THRESHOLD",
                        "E_CLUSTERER_NODE_STATE_CHANGED"}
