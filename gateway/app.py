"""Wires the gateway: config -> runtime (HTTP, discovery, metrics) -> mesh router."""

from __future__ import annotations

import asyncio

from gateway.config import GatewayConfig
from gateway.router import MeshRouter
from shared.discovery import DiscoveryConfig, open_registry
from shared.service.runtime import RuntimeConfig, ServiceRuntime


def build_gateway(
    cfg: GatewayConfig, discovery: DiscoveryConfig
) -> tuple[ServiceRuntime, MeshRouter]:
    """The gateway's runtime (registered as service ``gateway``) and its router."""
    runtime = ServiceRuntime(
        "gateway",
        config=RuntimeConfig(host=cfg.host, port=cfg.port, mi_path=cfg.path, token=cfg.token,
                             drain_timeout=cfg.drain_timeout),
        discovery=discovery,
    )
    # The router reads discovery with its own client so routing never shares the
    # heartbeat's connection.
    router = MeshRouter(runtime, open_registry(discovery),
                        service_token=cfg.service_token or None, call_timeout=cfg.call_timeout)
    runtime.public_dispatch = router.dispatch

    async def close_router() -> None:
        await router.close()
        await router.registry.close()

    runtime.on_stop(close_router)
    return runtime, router


async def serve(cfg: GatewayConfig, discovery: DiscoveryConfig,
                stop: asyncio.Event | None = None) -> None:
    runtime, _ = build_gateway(cfg, discovery)
    await runtime.serve(stop)
