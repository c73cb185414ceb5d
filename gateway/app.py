"""Wires the gateway: config -> runtime (HTTP, discovery, metrics, events) -> mesh router,
and the web console on the same HTTP server."""

from __future__ import annotations

import asyncio

from gateway.config import GatewayConfig
from gateway.console import Console
from gateway.events import GatewayEvents
from gateway.router import MeshRouter
from shared.config import load_section
from shared.discovery import DiscoveryConfig, open_registry
from shared.events.config import EventsConfig
from shared.service.runtime import RuntimeConfig, ServiceRuntime


def build_gateway(
    cfg: GatewayConfig, discovery: DiscoveryConfig, events: EventsConfig | None = None,
) -> tuple[ServiceRuntime, MeshRouter]:
    """The gateway's runtime (registered as service ``gateway``) and its router; the
    router answers the event interface's MI commands (:mod:`gateway.events`)."""
    events = events if events is not None else load_section(EventsConfig, "events")
    runtime = ServiceRuntime(
        "gateway",
        config=RuntimeConfig(host=cfg.host, port=cfg.port, mi_path=cfg.path, token=cfg.token,
                             advertise=cfg.advertise, drain_timeout=cfg.drain_timeout,
                             drain_delay=cfg.drain_delay, drain_grace=cfg.drain_grace,
                             token_setting="[gateway] token (SIPMESH_GATEWAY_TOKEN)"),
        discovery=discovery, events=events, local_events=True, sip_handling=False,
    )
    # The router reads discovery with its own client so routing never shares the
    # heartbeat's connection.
    router = MeshRouter(runtime, open_registry(discovery),
                        service_token=cfg.service_token or None, call_timeout=cfg.call_timeout)
    runtime.public_dispatch = router.dispatch
    router.events = GatewayEvents(runtime, events)
    router.events.add_commands(router.core)
    if cfg.console:
        console = Console(router, token=cfg.token, interval=cfg.console_interval)
        router.events.feed.observers.append(console.on_event)

    async def close_router() -> None:
        await router.close()
        await router.registry.close()

    runtime.on_stop(close_router)
    return runtime, router


async def serve(cfg: GatewayConfig, discovery: DiscoveryConfig,
                stop: asyncio.Event | None = None, events: EventsConfig | None = None) -> None:
    runtime, _ = build_gateway(cfg, discovery, events)
    await runtime.serve(stop)
