"""Clients of a gRPC service whose nodes are found in discovery (or configured).

What every such client repeated, written once:

* :class:`GrpcStubs` -- one channel and one stub per ``host:port`` target, opened on first
  use and kept (no connect per call), closed together;
* :func:`healthy_instances` and :func:`meta_values` -- one discovery lookup that never
  raises (discovery away: nothing found) and the sorted, distinct values of one metadata
  entry (``grpc``, ``uac``...) of what it found;
* :func:`first_reachable` -- a call tried on each target in turn until one is reached: only
  a target that could not be reached (UNAVAILABLE: nothing was sent) moves the call on, one
  that was sent and failed is not repeated elsewhere (it may have taken effect);
* :class:`DiscoveredGrpcClient` -- the nodes of one service: a fixed ``host:port`` list, or
  else every passing instance of the service in discovery (the ``grpc`` entry of its
  metadata), read once by ``start()`` and kept current by a watch task (started lazily, on
  the first ``available`` asked inside the loop). A registry that goes away keeps the last
  list and the watch retries every second. ``close()`` stops the watch and the channels;
  a subclass holding buffered work hands it over before calling it.

* :class:`EdgeUac` -- a service's client of the edges' Uac API (BYEs, NOTIFYs).

Which node a call goes to, and what is retried, stays each client's own decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog

from contracts.generated.sipmesh.edge.v1 import uac_pb2, uac_pb2_grpc


class GrpcStubs:
    """One channel and one stub (``factory(channel)``) per target."""

    def __init__(self, factory: Callable[[grpc.aio.Channel], Any],
                 options: Sequence[tuple[str, Any]] | None = None) -> None:
        self.factory = factory
        self.options = list(options) if options else None
        self.channels: dict[str, tuple[grpc.aio.Channel, Any]] = {}

    def get(self, target: str) -> Any:
        found = self.channels.get(target)
        if found is None:
            channel = grpc.aio.insecure_channel(target, options=self.options)
            found = self.channels[target] = (channel, self.factory(channel))
        return found[1]

    def pop(self, target: str) -> grpc.aio.Channel | None:
        """Forgets `target`'s stub; its channel, for the caller to close (None if none)."""
        found = self.channels.pop(target, None)
        return found[0] if found is not None else None

    async def close(self) -> None:
        channels, self.channels = self.channels, {}
        for channel, _ in channels.values():
            with contextlib.suppress(Exception):
                await channel.close()


async def healthy_instances(registry: Any, service: str) -> list[Any]:
    """The passing instances of `service`; none without a registry or when it is away."""
    if registry is None:
        return []
    try:
        return list(await registry.healthy(service))
    except Exception:  # discovery away: only what the caller knows otherwise
        return []


def meta_values(instances: Sequence[Any], key: str,
                accept: Callable[[Any], bool] | None = None) -> list[str]:
    """The distinct, sorted `key` entries of the instances' metadata (those that have it
    and that `accept` takes)."""
    return sorted({i.meta[key] for i in instances
                   if i.meta.get(key) and (accept is None or accept(i))})


async def first_reachable(stubs: GrpcStubs, targets: Sequence[str], method: str,
                          request: Any, timeout: float
                          ) -> tuple[Any, grpc.aio.AioRpcError | None]:
    """(the reply, None) of the first target reached, else (None, the last error: None when
    there was no target)."""
    last: grpc.aio.AioRpcError | None = None
    for target in targets:
        try:
            return await getattr(stubs.get(target), method)(request, timeout=timeout), None
        except grpc.aio.AioRpcError as exc:
            last = exc
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                break  # sent and not answered: it may have taken effect
    return None, last


class DiscoveredGrpcClient:
    """The nodes of one gRPC service (see the module docstring) and their stubs.

    A subclass names its logger and its watch-failure event, and may narrow which
    instances count (:meth:`accepts`)."""

    LOGGER = "grpc.client"
    WATCH_FAILED = "watch_failed"

    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str, stub: Callable[[grpc.aio.Channel], Any],
                 channel_options: Sequence[tuple[str, Any]] | None = None) -> None:
        self.static = [a for a in addresses if a]
        self.registry = registry
        self.service = service
        self.log = structlog.get_logger(self.LOGGER)
        self.targets: list[str] = list(self.static)
        self.stubs = GrpcStubs(stub, channel_options)
        self._watcher: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """A node is known (configured, or registered in discovery)."""
        if self._watcher is None:  # asked for every request: no call once watching
            self._ensure_watch()
        return bool(self.targets)

    def _ensure_watch(self) -> None:
        if self._watcher is not None or self.static or self.registry is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watcher = loop.create_task(self._watch())

    async def start(self) -> None:
        """Reads discovery once (so the first request already knows the nodes)."""
        if self.static or self.registry is None:
            return
        with contextlib.suppress(Exception):
            self._set(await self.registry.healthy(self.service))
        self._ensure_watch()

    def accepts(self, instance: Any) -> bool:
        """Whether a registered instance (with a `grpc` address) is one to call."""
        return True

    def _set(self, instances: Sequence[Any]) -> None:
        self.targets = meta_values(instances, "grpc", self.accepts)

    async def _watch(self) -> None:
        from shared.discovery.port import watch

        while True:
            try:
                async for instances in watch(self.registry, self.service, wait=10.0):
                    self._set(instances)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # registry away: keep the last list, retry
                self.log.warning(self.WATCH_FAILED, error=repr(exc))
                await asyncio.sleep(1.0)

    def _stub(self, target: str) -> Any:
        return self.stubs.get(target)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.stubs.close()


class EdgeUac:
    """A service's client of the edges' Uac API (contracts/proto/sipmesh/edge/v1/uac.proto):
    the dialog service's BYEs, the presence service's NOTIFYs.

    A request goes to the edge named first (the one that handled the dialog or
    subscription, when known), then to the other edges found in discovery (instances of
    the edge service announcing `uac` in their metadata). Sending is not idempotent (a BYE
    that reached the phone must not be sent twice), so only an edge that could not be
    reached moves the request on (:func:`first_reachable`)."""
    def __init__(self, registry: Any = None, service: str = "edge",
                 timeout: float = 5.0) -> None:
        self.registry = registry
        self.service = service
        self.timeout = timeout  # the edge's own, for the request's final answer
        self.stubs = GrpcStubs(uac_pb2_grpc.UacStub)

    async def edges(self) -> list[str]:
        """The edges' Uac addresses in discovery (none when it is away: only the edge the
        caller names is known then)."""
        return meta_values(await healthy_instances(self.registry, self.service), "uac")

    def request(self, method: str, ruri: str, *, route: Sequence[str] = (),
                next_hop: str = "", headers: Sequence[tuple[str, str]] = (),
                body: bytes = b"") -> Any:
        return uac_pb2.UacRequest(
            method=method, ruri=ruri, route=list(route), next_hop=next_hop,
            headers=[uac_pb2.Header(name=n, value=v) for n, v in headers], body=body,
            timeout=self.timeout)

    async def send_request(self, preferred: str, request: Any) -> tuple[int, str]:
        """(final status, reason) of the request; 503 when no edge could send it."""
        targets = [t for t in [preferred] if t]
        targets += [t for t in await self.edges() if t not in targets]
        reply, error = await first_reachable(self.stubs, targets, "Send", request,
                                             self.timeout + 2)
        if reply is not None:
            return reply.status, reply.reason or reply.error
        return 503, f"{error.code().name}: {error.details()}" if error else "no edge known"

    async def close(self) -> None:
        await self.stubs.close()
