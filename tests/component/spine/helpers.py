"""In-process mesh pieces for component tests: embedded registry, gateway, a service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from shared.discovery import DiscoveryConfig
from shared.discovery.embedded import RegistryServer
from shared.events.config import EventsConfig
from shared.rpc import JsonRpcClient
from shared.service import RuntimeConfig, ServiceRuntime


@dataclass
class Mesh:
    registry: RegistryServer
    discovery: DiscoveryConfig
    gateway: ServiceRuntime
    gateway_url: str
    client: JsonRpcClient


@contextlib.asynccontextmanager
async def running_mesh(
    ttl: float = 10.0, events: EventsConfig | None = None
) -> AsyncIterator[Mesh]:
    server = RegistryServer()
    url = await server.start()
    discovery = DiscoveryConfig(url=url, ttl=ttl)
    # Subscriptions in memory unless the test names a store: tests never share a file.
    runtime, _ = build_gateway(GatewayConfig(port=0, call_timeout=2.0), discovery,
                               events or EventsConfig(store=":memory:"))
    await runtime.start()
    gw_url = f"{runtime.base_url}/mi"
    client = JsonRpcClient(gw_url)
    try:
        yield Mesh(server, discovery, runtime, gw_url, client)
    finally:
        await client.close()
        await runtime.stop()
        await server.stop()


@contextlib.asynccontextmanager
async def started(rt: ServiceRuntime) -> AsyncIterator[ServiceRuntime]:
    """Starts a runtime whose commands are already declared; stops it on exit."""
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


def service(name: str, discovery: DiscoveryConfig, **cfg: object) -> ServiceRuntime:
    return ServiceRuntime(name, config=RuntimeConfig(**cfg), discovery=discovery)  # type: ignore[arg-type]
