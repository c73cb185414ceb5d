"""Embedded-mode backend: events travel to the gateway over the mesh's own JSON-RPC.

Without RabbitMQ there is no broker between the process that raises an event and the
gateway that holds the subscriptions, so :class:`ForwardingEventBus` is the broker's
stand-in. It is a :class:`~shared.events.bus.BufferedEventBus` (same validation, bounded
buffer, ordered drain, backoff) whose delivery step is one JSON-RPC call to the internal
method ``event_ingest`` of a passing ``gateway`` instance found in discovery, at the
gateway's own MI endpoint (``mi_url`` of its registration)::

    {"jsonrpc": "2.0", "id": 7, "method": "event_ingest",
     "params": {"events": [{"id": "...", "event": "E_CORE_THRESHOLD", "time": 1764.2,
                            "service": "edge", "node": "edge-host-4243",
                            "params": {"source": "msg processing", ...}}]}}

An event leaves the buffer only once the gateway answered; until then (no gateway
registered yet, gateway restarting, a timeout) it stays at the head of the buffer and the
drain loop backs off and retries, choosing the gateway again from discovery. So the SIP
path never waits, order is kept, and a restart of the gateway loses nothing within the
buffer bound. Delivery is at least once (an answer lost after the gateway took the event
means it is sent again); the gateway drops duplicates by the envelope id.

With several gateways, each event goes to one of them: the embedded mode is meant for a
single gateway; meshes with more use RabbitMQ (``[events] rabbitmq_url``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from shared.discovery import RegistryError, ServiceRegistry
from shared.events.bus import BufferedEventBus
from shared.events.envelope import Event
from shared.events.schema import EventCatalog
from shared.rpc import BAD_REQUEST, JsonRpcClient, RpcError

log = structlog.get_logger(__name__)

INGEST_METHOD = "event_ingest"


class GatewayUnavailableError(ConnectionError):
    """No passing gateway instance is registered (yet)."""


def event_to_wire(event: Event) -> dict[str, Any]:
    return {**event.envelope(), "params": dict(event.params)}


def event_from_wire(data: Any) -> Event:
    """An event as :func:`event_to_wire` wrote it; ValueError says what is wrong."""
    if not isinstance(data, Mapping):
        raise ValueError("an event must be a JSON object")
    name, params = data.get("event"), data.get("params")
    if not isinstance(name, str) or not name:
        raise ValueError("event: a non-empty string is required")
    if not isinstance(params, Mapping):
        raise ValueError(f"{name}: params must be a JSON object")
    when = data.get("time", 0.0)
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise ValueError(f"{name}: time must be a number")
    ident = data.get("id")
    return Event(
        name=name, params=dict(params), time=float(when),
        service=str(data.get("service", "")), node=str(data.get("node", "")),
        **({"id": ident} if isinstance(ident, str) and ident else {}),
    )


class ForwardingEventBus(BufferedEventBus):
    backend = "forward"

    def __init__(
        self,
        catalog: EventCatalog,
        *,
        discovery: ServiceRegistry,
        gateway_service: str = "gateway",
        token: str | None = None,
        timeout: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(catalog, **kwargs)
        self.discovery = discovery
        self.gateway_service = gateway_service
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._client: JsonRpcClient | None = None
        self.target: str | None = None  # the gateway MI URL in use

    async def _prepare(self) -> None:
        if self._client is not None:
            return
        try:
            found = await self.discovery.healthy(self.gateway_service)
        except RegistryError as exc:
            raise GatewayUnavailableError(f"discovery unavailable: {exc}") from exc
        urls = [i.meta["mi_url"] for i in found if i.meta.get("mi_url")]
        if not urls:
            raise GatewayUnavailableError(f"no passing {self.gateway_service!r} instance")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        self.target = urls[0]
        self._client = JsonRpcClient(
            self.target, token=self.token, timeout=self.timeout, session=self._session)

    async def _deliver(self, event: Event) -> None:
        await self._prepare()
        assert self._client is not None
        try:
            await self._client.call(INGEST_METHOD, {"events": [event_to_wire(event)]})
        except RpcError as exc:
            if exc.code != BAD_REQUEST:
                raise  # e.g. not a gateway (-32601): retry, re-reading discovery
            # The gateway refuses this very event (e.g. its contracts differ): sending it
            # again would wedge the buffer behind it, so it is logged and let go.
            log.warning("event_rejected_by_gateway", event_name=event.name,
                        error=str(exc.data or exc.message))
        # Any other failure (RpcTransportError, discovery) fails the attempt: the event
        # stays buffered and the next attempt re-reads discovery.

    async def _reset_backend(self) -> None:
        self._client = None
        self.target = None

    async def _close_backend(self) -> None:
        self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None
