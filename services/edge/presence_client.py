"""The edge's client of the presence service (gRPC `sipmesh.presence.v1.Presence`,
services/presence).

Where the presence nodes are: a fixed `host:port` list (`[edge] presence`), or else every
passing instance of service `presence` in discovery (the `grpc` entry of its metadata),
kept current by a watch task (those not ready skipped). A request goes to the first node
(sorted; all nodes share their state through the store), the next one only when the
first could not be reached (UNAVAILABLE: nothing was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import grpc
import structlog

from contracts.generated.sipmesh.presence.v1 import presence_pb2 as pb
from contracts.generated.sipmesh.presence.v1 import presence_pb2_grpc as pb_grpc


class PresenceUnavailable(Exception):
    """No presence node could be reached."""


class PresenceClient:
    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "presence", timeout: float = 5.0) -> None:
        self.static = [a for a in addresses if a]
        self.registry = registry
        self.service = service
        self.timeout = timeout
        self.uac = ""  # this edge worker's Uac API, set once it listens
        self.log = structlog.get_logger("edge.presence")
        self.targets: list[str] = list(self.static)
        self.registered = bool(self.static)  # some node known, ready or not (`present`)
        self._stubs: dict[str, tuple[grpc.aio.Channel, Any]] = {}
        self._watcher: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """A ready presence node is known."""
        self._ensure_watch()
        return bool(self.targets)

    @property
    def present(self) -> bool:
        """The mesh has a presence service, ready or not: its requests are for it (503
        while no node is ready, e.g. a single node restarting and catching up)."""
        self._ensure_watch()
        return self.registered

    def _ensure_watch(self) -> None:
        if self._watcher is not None or self.static or self.registry is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watcher = loop.create_task(self._watch())

    async def start(self) -> None:
        if self.static or self.registry is None:
            return
        with contextlib.suppress(Exception):
            self._set(await self.registry.healthy(self.service))
        self._ensure_watch()

    def _set(self, instances: Sequence[Any]) -> None:
        # meta "ready" "0": registered, not ready yet (a restarted node catching up with
        # the shared store); an older release that does not say is taken as ready.
        self.targets = sorted({i.meta["grpc"] for i in instances
                               if i.meta.get("grpc") and i.meta.get("ready") != "0"})
        self.registered = any(i.meta.get("grpc") for i in instances)

    async def _watch(self) -> None:
        from shared.discovery.port import watch

        while True:
            try:
                async for instances in watch(self.registry, self.service, wait=10.0):
                    self._set(instances)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # registry away: keep the last list, retry
                self.log.warning("presence_watch_failed", error=repr(exc))
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()

    def _stub(self, target: str) -> Any:
        found = self._stubs.get(target)
        if found is None:
            channel = grpc.aio.insecure_channel(target)
            found = (channel, pb_grpc.PresenceStub(channel))  # type: ignore[no-untyped-call]
            self._stubs[target] = found
        return found[1]

    async def handle(self, message: bytes, *, source: str, local_contact: str, to_tag: str,
                     sharing_tag: str = "") -> tuple[int, str, list[tuple[str, str]]]:
        """(status, reason, headers) of the presence service's answer to a PUBLISH or
        SUBSCRIBE; PresenceUnavailable when no node answered."""
        request = pb.SipRequest(message=message, source=source, local_contact=local_contact,
                                edge_uac=self.uac, to_tag=to_tag, sharing_tag=sharing_tag)
        last: Exception | None = None
        for target in list(self.targets):
            try:
                answer = await self._stub(target).Handle(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                last = exc
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break  # sent and not answered: it may have taken effect
                continue
            return answer.status, answer.reason, [(h.name, h.value) for h in answer.headers]
        raise PresenceUnavailable(str(last) if last else "no presence node known")
