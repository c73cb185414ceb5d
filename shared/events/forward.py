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

Events go in batches: the drain loop hands over up to ``max_in_flight`` (default 64)
buffered events at once and they travel in one call, in order (one call at a time, so
the gateway sees them in the order they were raised). The gateway answers
``{"accepted": n, "refused": [{"index": i, "error": "..."}]}``: a refused event (its
contracts differ from the gateway's) is logged and let go, never retried, so it cannot
wedge the buffer. An event leaves the buffer only once the gateway answered; until then
(no gateway registered yet, gateway restarting, a timeout) it stays at the head of the
buffer and the drain loop backs off and retries, choosing the gateway again from
discovery. So the SIP
path never waits, order is kept, and a restart of the gateway loses nothing within the
buffer bound. Delivery is at least once (an answer lost after the gateway took the event
means it is sent again); the gateway drops duplicates by the envelope id.

With several gateways, each event goes to one of them: the embedded mode is meant for a
single gateway; meshes with more use RabbitMQ (``[events] rabbitmq_url``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from shared.discovery import RegistryError, ServiceRegistry
from shared.events.bus import BufferedEventBus
from shared.events.envelope import Event
from shared.events.schema import EventCatalog
from shared.rpc import JsonRpcClient

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
        max_in_flight: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(catalog, max_in_flight=max_in_flight, **kwargs)
        self.discovery = discovery
        self.gateway_service = gateway_service
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._client: JsonRpcClient | None = None
        self._pending: list[tuple[Event, asyncio.Future[None]]] = []
        self.target: str | None = None  # the gateway MI URL in use
        self.rejected = 0  # events the gateway refused (logged, not retried)

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
        # The drain loop starts the _deliver of a whole batch (up to max_in_flight events,
        # in buffer order) in one loop iteration; the first schedules one send for all of
        # them, so a batch is one JSON-RPC call, and the gateway takes it in order.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, done))
        if len(self._pending) == 1:
            loop.call_soon(lambda: loop.create_task(self._send_pending()))
        await done

    async def _send_pending(self) -> None:
        batch, self._pending = self._pending, []
        try:
            await self._prepare()
            assert self._client is not None
            answer = await self._client.call(
                INGEST_METHOD, {"events": [event_to_wire(e) for e, _ in batch]})
        except Exception as exc:
            # Discovery, transport or a refusal of the call itself: every event of the
            # batch stays buffered and the next attempt re-reads discovery.
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        refused = answer.get("refused", []) if isinstance(answer, dict) else []
        for item in refused if isinstance(refused, list) else []:
            # The gateway refuses this very event (e.g. its contracts differ): sending
            # it again would wedge the buffer behind it, so it is logged and let go.
            index = item.get("index") if isinstance(item, dict) else None
            name = batch[index][0].name if isinstance(index, int) and \
                0 <= index < len(batch) else "?"
            self.rejected += 1
            log.warning("event_rejected_by_gateway", event_name=name,
                        error=str(item.get("error") if isinstance(item, dict) else item))
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    async def _reset_backend(self) -> None:
        self._client = None
        self.target = None

    async def _close_backend(self) -> None:
        self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None
