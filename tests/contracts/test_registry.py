"""One contract suite over every discovery backend.

Backends: the in-process MemoryRegistry, the embedded registry over loopback HTTP, the Consul
backend against the in-repo fake Consul (written from Consul's HTTP API docs), and the Consul
backend against a real Consul agent when CONSUL_HTTP_ADDR is set (skipped otherwise).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from shared.discovery import Instance, RegistryError, ServiceRegistry, watch
from shared.discovery.consul_backend import ConsulRegistry
from shared.discovery.embedded import HttpRegistry, RegistryServer
from shared.discovery.memory import MemoryRegistry
from shared.discovery.testing.fake_consul import FakeConsul

BACKENDS = ["memory", "embedded", "consul-fake", "consul-real"]


@pytest.fixture(params=BACKENDS)
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[ServiceRegistry]:
    kind = request.param
    if kind == "memory":
        mem = MemoryRegistry()
        reaper = asyncio.create_task(mem.run_reaper(0.05))
        yield mem
        reaper.cancel()
    elif kind == "embedded":
        server = RegistryServer()
        url = await server.start()
        client = HttpRegistry(url)
        yield client
        await client.close()
        await server.stop()
    elif kind == "consul-fake":
        fake = FakeConsul()
        addr = await fake.start()
        client_c = ConsulRegistry(addr)
        yield client_c
        await client_c.close()
        await fake.stop()
    else:
        addr = os.environ.get("CONSUL_HTTP_ADDR", "")
        if not addr:
            pytest.skip("CONSUL_HTTP_ADDR not set: no real Consul to test against")
        client_r = ConsulRegistry(addr, token=os.environ.get("CONSUL_HTTP_TOKEN"))
        yield client_r
        for inst in await client_r.instances():
            if inst.service.startswith("contract-"):
                await client_r.deregister(inst.id)
        await client_r.close()


def _svc() -> str:
    # Unique per test so a real shared Consul never sees leftovers of another run.
    return f"contract-{uuid.uuid4().hex[:8]}"


def _inst(service: str, n: int, **meta: str) -> Instance:
    return Instance(service, f"{service}-{n}", "127.0.0.1", 5000 + n, meta=meta, tags=("t",))


async def _until(registry: ServiceRegistry, service: str,
                 pred: Callable[[list[Instance]], bool],
                 timeout: float = 8.0) -> list[Instance]:
    """Waits (blocking queries, no sleeps) until pred(healthy instances) holds."""
    index = 0
    async with asyncio.timeout(timeout):
        while True:
            index, found = await registry.wait_instances(service, index, 1.0)
            if pred(found):
                return found


async def test_registered_instance_is_passing_with_its_data(registry: ServiceRegistry) -> None:
    svc = _svc()
    await registry.register(_inst(svc, 1, mi_url="http://127.0.0.1:1/mi"), ttl=10)
    [got] = await registry.healthy(svc)
    assert (got.id, got.address, got.port, got.passing) == (f"{svc}-1", "127.0.0.1", 5001, True)
    assert got.meta["mi_url"] == "http://127.0.0.1:1/mi"
    assert got.tags == ("t",)


async def test_healthy_lists_only_that_service_sorted(registry: ServiceRegistry) -> None:
    a, b = _svc(), _svc()
    await registry.register(_inst(a, 2), ttl=10)
    await registry.register(_inst(a, 1), ttl=10)
    await registry.register(_inst(b, 1), ttl=10)
    assert [i.id for i in await registry.healthy(a)] == [f"{a}-1", f"{a}-2"]
    assert [i.id for i in await registry.instances(b)] == [f"{b}-1"]


async def test_deregister_removes_and_unknown_is_ignored(registry: ServiceRegistry) -> None:
    svc = _svc()
    await registry.register(_inst(svc, 1), ttl=10)
    await registry.deregister(f"{svc}-1")
    assert await registry.healthy(svc) == []
    assert await registry.instances(svc) == []
    await registry.deregister(f"{svc}-missing")


async def test_missed_ttl_turns_critical_and_heartbeat_revives(registry: ServiceRegistry) -> None:
    svc = _svc()
    await registry.register(_inst(svc, 1), ttl=1)
    await _until(registry, svc, lambda found: found == [])
    [stale] = await registry.instances(svc)
    assert stale.status == "critical"
    await registry.heartbeat(f"{svc}-1")
    [back] = await registry.healthy(svc)
    assert back.passing


async def test_heartbeat_of_unknown_instance_raises(registry: ServiceRegistry) -> None:
    with pytest.raises(RegistryError):
        await registry.heartbeat(f"{_svc()}-nobody")


async def test_blocking_query_returns_on_change(registry: ServiceRegistry) -> None:
    svc = _svc()
    _index, found = await registry.wait_instances(svc, 0, 0)
    assert found == []

    async def later() -> None:
        await registry.register(_inst(svc, 1), ttl=10)

    waiter = asyncio.create_task(_until(registry, svc, lambda f: len(f) == 1, timeout=8))
    await asyncio.sleep(0)  # let the waiter issue its blocking query first
    await later()
    assert [i.id for i in await waiter] == [f"{svc}-1"]


async def test_blocking_query_times_out_with_same_snapshot(registry: ServiceRegistry) -> None:
    svc = _svc()
    await registry.register(_inst(svc, 1), ttl=30)
    index, first = await registry.wait_instances(svc, 0, 0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    _, again = await registry.wait_instances(svc, index, 1)
    assert again == first
    assert loop.time() - t0 >= 0.5  # it really blocked instead of answering at once


async def test_reregister_replaces(registry: ServiceRegistry) -> None:
    svc = _svc()
    await registry.register(_inst(svc, 1, v="1"), ttl=10)
    await registry.register(_inst(svc, 1, v="2"), ttl=10)
    [got] = await registry.healthy(svc)
    assert got.meta["v"] == "2"


async def test_watch_yields_the_current_set_then_each_change(registry: ServiceRegistry) -> None:
    svc = _svc()
    await registry.register(_inst(svc, 1), ttl=10)
    stream = watch(registry, svc, wait=1.0)
    async with asyncio.timeout(10):
        first = await anext(stream)
        assert [i.id for i in first] == [f"{svc}-1"]
        await registry.register(_inst(svc, 2), ttl=10)
        second = await anext(stream)
        assert [i.id for i in second] == [f"{svc}-1", f"{svc}-2"]
        await registry.deregister(f"{svc}-1")
        third = await anext(stream)
        assert [i.id for i in third] == [f"{svc}-2"]
    await stream.aclose()  # type: ignore[attr-defined]  # an async generator
