"""A service runtime registered in (fake) Consul with an HTTP check: the agent polls the
runtime's /health, so health follows the process, not a heartbeat."""

from __future__ import annotations

import asyncio

from shared.discovery import DiscoveryConfig
from shared.discovery.consul_backend import ConsulRegistry
from shared.discovery.testing.fake_consul import FakeConsul, _Check
from shared.service import ServiceRuntime


async def _until_status(registry: ConsulRegistry, service: str, status: str) -> None:
    index = 0
    async with asyncio.timeout(10):
        while True:
            index, _ = await registry.wait_instances(service, index, 1.0)
            found = await registry.instances(service)
            if found and all(i.status == status for i in found):
                return


def _check_of(fake: FakeConsul, instance_id: str) -> _Check:
    """The instance's check as the agent holds it now: the runtime re-registers when its
    readiness changes, and a re-registration replaces the check (keeping its state)."""
    [check] = [c for c in fake.checks.values() if c.service_id == instance_id]
    return check


async def test_http_check_follows_the_health_endpoint() -> None:
    fake = FakeConsul()
    addr = await fake.start()
    disc = DiscoveryConfig(backend="consul", consul_addr=addr, consul_check="http", ttl=3.0)
    reader = ConsulRegistry(addr)
    rt = ServiceRuntime("media", discovery=disc)
    healthy = True
    rt.health_checks.append(lambda: healthy)
    await rt.start()
    try:
        check = _check_of(fake, rt.instance_id)
        assert check.http == f"{rt.base_url}/health" and check.interval == 1.0
        await _until_status(reader, "media", "passing")
        healthy = False  # /health now answers 503: the agent marks it critical
        await _until_status(reader, "media", "critical")
        assert "503" in _check_of(fake, rt.instance_id).output
        healthy = True
        await _until_status(reader, "media", "passing")
    finally:
        await rt.stop()
        assert await reader.instances("media") == []
        await reader.close()
        await fake.stop()
