"""ServiceRuntime on loopback: health, metrics, MI, registration, graceful stop, auth."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import aiohttp
import pytest

from shared.config import ConfigError
from shared.discovery import DiscoveryConfig
from shared.discovery.embedded import RegistryServer
from shared.rpc import JsonRpcClient, RpcError
from shared.service import RuntimeConfig, ServiceRuntime
from tests.component.conftest import Registry


async def test_health_metrics_mi_and_registration(registry: Registry) -> None:
    server, disc = registry
    rt = ServiceRuntime("demo", discovery=disc)
    rt.meta["sip_udp"] = "sip:127.0.0.1:5060;transport=udp"
    hits = rt.stats.counter("demo", "hits")

    @rt.command("demo_hit", params=(("n",),))
    async def demo_hit(n: str) -> str:
        hits.inc(int(n))
        return "OK"

    await rt.start()
    try:
        [inst] = await server.registry.healthy("demo")
        assert inst.id == rt.instance_id and inst.port == rt.port
        assert inst.meta["mi_url"] == f"http://127.0.0.1:{rt.port}/mi"
        assert "demo_hit" in inst.meta["mi_commands"].split(",")
        assert inst.meta["sip_udp"].startswith("sip:127.0.0.1:5060")
        assert inst.meta["pid"] == str(os.getpid())
        client = JsonRpcClient(inst.meta["mi_url"])
        assert await client.call("demo_hit", ["5"]) == "OK"
        assert await client.call("get_statistics", {"statistics": ["demo:hits"]}) == {
            "demo:hits": 5}
        await client.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{rt.base_url}/health") as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "passing"
            async with http.get(f"{rt.base_url}/metrics") as resp:
                text = await resp.text()
                assert resp.headers["Content-Type"].startswith("text/plain")
                assert "sipmesh_demo_hits_total 5.0" in text
                assert "sipmesh_core_rcv_requests_total 0.0" in text
                assert "process_cpu_seconds_total" in text
    finally:
        await rt.stop()
    assert await server.registry.instances("demo") == []


async def test_heartbeat_keeps_passing_and_reregisters_after_registry_loss(
        registry: Registry) -> None:
    server, disc = registry
    # TTL 1.5 s, heartbeat every 0.5 s: a loop stall under 1 s on a busy CI box is tolerated.
    rt = ServiceRuntime("beat", discovery=DiscoveryConfig(url=disc.url, ttl=1.5))
    await rt.start()
    try:
        # Survives more than two TTLs only thanks to the heartbeat.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.5
        index = 0
        while loop.time() < deadline:
            index, found = await server.registry.wait_instances("beat", index, 0.3)
            assert [i.id for i in found] == [rt.instance_id]
        # The registry forgets it (as after a registry restart): it registers again.
        await server.registry.deregister(rt.instance_id)
        async with asyncio.timeout(5):
            while not await server.registry.healthy("beat"):
                await server.registry.wait_instances("beat", server.registry.index, 1.0)
    finally:
        await rt.stop()


async def test_sigterm_deregisters_drains_and_closes(registry: Registry) -> None:
    server, disc = registry
    rt = ServiceRuntime("graceful", discovery=disc)
    order: list[str] = []

    @rt.on_stop
    async def drain() -> None:
        order.append("drain:" + str(len(await server.registry.instances("graceful"))))

    task = asyncio.create_task(rt.serve())
    async with asyncio.timeout(5):
        while not await server.registry.healthy("graceful"):
            await server.registry.wait_instances("graceful", server.registry.index, 1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)
    # Deregistered before the drain hook ran, and the HTTP server is closed.
    assert order == ["drain:0"]
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as http:
            await http.get(f"{rt.base_url}/health")


async def test_non_loopback_without_token_refuses_to_start(registry: Registry) -> None:
    _, disc = registry
    rt = ServiceRuntime("exposed", config=RuntimeConfig(host="0.0.0.0"), discovery=disc)
    with pytest.raises(ConfigError, match="token"):
        await rt.start()
    await rt.stop()


async def test_token_is_required_when_configured(registry: Registry) -> None:
    _, disc = registry
    rt = ServiceRuntime("locked", config=RuntimeConfig(token="s3cret"), discovery=disc)
    await rt.start()
    try:
        url = rt.mi_url
        anonymous = JsonRpcClient(url)
        with pytest.raises(Exception) as denied:
            await anonymous.call("version")
        assert "401" in str(denied.value)
        await anonymous.close()
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=json.dumps({"jsonrpc": "2.0", "id": 1,
                                                        "method": "version"}),
                                 headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
        good = JsonRpcClient(url, token="s3cret")
        assert (await good.call("version"))["Server"].startswith("SipMesh")
        with pytest.raises(RpcError):
            await good.call("which", {"command": "nope"})
        await good.close()
    finally:
        await rt.stop()


async def test_service_registers_once_the_registry_comes_up() -> None:
    # Reserve a port for the registry, start the service first, then the registry on it.
    server = RegistryServer()
    url = await server.start()
    port = server.port
    await server.stop()
    rt = ServiceRuntime("early", discovery=DiscoveryConfig(url=url, ttl=0.6))
    await rt.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{rt.base_url}/health") as resp:
                assert resp.status == 200  # serving although not registered yet
        late = RegistryServer()
        await late.start(port=port)
        try:
            async with asyncio.timeout(5):
                while not await late.registry.healthy("early"):
                    await late.registry.wait_instances("early", late.registry.index, 1.0)
        finally:
            await rt.stop()
            await late.stop()
    finally:
        await rt.stop()
