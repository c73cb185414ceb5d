"""The edge's client of the media broker (gRPC `sipmesh.media.v1.Media`, services/media).

Where the brokers are: a fixed `host:port` list (`[edge] media`), or else every passing
instance of service `media` in discovery (the `grpc` entry of its metadata), kept current
by a watch task.  Any broker can serve any call (they agree on each call's rtpengine
instance), so calls go round-robin; a call whose broker cannot be reached (UNAVAILABLE:
nothing was sent) moves to the next broker, one that was sent and not answered in time is
not repeated (an offer may have created the call leg).  Every call has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

import grpc
import structlog

from contracts.generated.sipmesh.media.v1 import media_pb2 as pb
from contracts.generated.sipmesh.media.v1 import media_pb2_grpc as pb_grpc


class MediaUnavailable(Exception):
    """No media broker could be reached."""


class MediaClient:
    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "media", timeout: float = 6.0, anchor: bool = False,
                 flags: str = "", set_id: int = 0) -> None:
        self.static = [a for a in addresses if a]
        # The default routing's policy ([edge] media_anchor, media_flags, media_set).
        self.anchor = anchor
        self.flags = flags
        self.set_id = set_id
        self.registry = registry
        self.service = service
        self.timeout = timeout
        self.log = structlog.get_logger("edge.media")
        self.targets: list[str] = list(self.static)
        self._stubs: dict[str, tuple[grpc.aio.Channel, Any]] = {}
        self._rr = itertools.count()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
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
        if self.static or self.registry is None:
            return
        with contextlib.suppress(Exception):
            self._set(await self.registry.healthy(self.service))
        self._ensure_watch()

    def _set(self, instances: Sequence[Any]) -> None:
        self.targets = sorted({i.meta["grpc"] for i in instances if i.meta.get("grpc")})

    async def _watch(self) -> None:
        from shared.discovery.port import watch

        while True:
            try:
                async for instances in watch(self.registry, self.service, wait=10.0):
                    self._set(instances)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # registry away: keep the last list, retry
                self.log.warning("media_watch_failed", error=repr(exc))
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
            found = (channel, pb_grpc.MediaStub(channel))  # type: ignore[no-untyped-call]
            self._stubs[target] = found
        return found[1]

    async def call(self, name: str, request: Any) -> Any:
        """`name` (Offer, Answer, Delete, Query) on a broker; MediaUnavailable when none
        answered."""
        targets = list(self.targets)
        if not targets:
            raise MediaUnavailable("no media broker known")
        start = next(self._rr) % len(targets)
        last: Exception | None = None
        for target in targets[start:] + targets[:start]:
            try:
                return await getattr(self._stub(target), name)(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                last = exc
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break  # sent and not answered: it may have taken effect
        raise MediaUnavailable(str(last))

    @staticmethod
    def request(**fields: Any) -> Any:
        return pb.MediaRequest(**fields)
