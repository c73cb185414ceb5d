"""The edge's client of the media broker (gRPC `sipmesh.media.v1.Media`, services/media).

Where the brokers are: a fixed `host:port` list (`[edge] media`), or else every passing
instance of service `media` in discovery (the `grpc` entry of its metadata), kept current
by a watch task (`shared.rpc.discovered`).  Any broker can serve any call (they agree on
each call's rtpengine instance), so calls go round-robin; a call whose broker cannot be
reached (UNAVAILABLE: nothing was sent) moves to the next broker, one that was sent and
not answered in time is not repeated (an offer may have created the call leg).  Every
call has a deadline (`timeout`).

A broker being restarted (`sipmesh restart media`: it leaves discovery, drains, and a new
one registers a moment later) leaves the edge with no broker for that moment.  Once a
broker has been seen in discovery (`expected`), a call that finds none, or reaches none
of those listed (nothing was sent), waits for discovery to change and tries again, within
its deadline: the offer or the delete is late, not lost (issue 20: calls went unanchored
and BYEs left their rtpengine sessions behind during a restart).  With fixed addresses
nothing can change, so such a call fails at once, as before.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import grpc

from contracts.generated.sipmesh.media.v1 import media_pb2 as pb
from contracts.generated.sipmesh.media.v1 import media_pb2_grpc as pb_grpc
from shared.rpc.discovered import DiscoveredGrpcClient, first_reachable


class MediaUnavailable(Exception):
    """No media broker could be reached."""


class MediaClient(DiscoveredGrpcClient):
    LOGGER = "edge.media"
    WATCH_FAILED = "media_watch_failed"

    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "media", timeout: float = 6.0, anchor: bool = False,
                 flags: str = "", set_id: int = 0) -> None:
        super().__init__(addresses=addresses, registry=registry, service=service,
                         stub=pb_grpc.MediaStub)
        # The default routing's policy ([edge] media_anchor, media_flags, media_set).
        self.anchor = anchor
        self.flags = flags
        self.set_id = set_id
        self.timeout = timeout
        self._rr = itertools.count()
        # A broker belongs to this deployment once one is configured or was seen in
        # discovery: none known then is a broker restarting, not a mesh without media.
        self.expected = bool(self.static)
        self._changed = asyncio.Event()  # set on every discovery update

    def _set(self, instances: Sequence[Any]) -> None:
        super()._set(instances)
        self.expected = self.expected or bool(self.targets)
        self._changed.set()

    async def call(self, name: str, request: Any) -> Any:
        """`name` (Offer, Answer, Delete, Query) on a broker; MediaUnavailable when none
        answered within the deadline (see the module docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        self._ensure_watch()
        while True:
            self._changed.clear()  # a discovery update during this attempt is not missed
            targets = list(self.targets)
            last: grpc.aio.AioRpcError | None = None
            if targets:
                start = next(self._rr) % len(targets)
                reply, last = await first_reachable(
                    self.stubs, targets[start:] + targets[:start], name, request,
                    max(deadline - loop.time(), 0.001))
                if reply is not None:
                    return reply
                if last is not None and last.code() != grpc.StatusCode.UNAVAILABLE:
                    raise MediaUnavailable(str(last))  # sent: it may have taken effect
            remaining = deadline - loop.time()
            if self.static or self.registry is None or not self.expected or remaining <= 0:
                raise MediaUnavailable(str(last) if last else "no media broker known")
            # Nothing was sent anywhere: wait for discovery to list another broker.
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                raise MediaUnavailable(
                    str(last) if last else "no media broker known") from None

    @staticmethod
    def request(**fields: Any) -> Any:
        return pb.MediaRequest(**fields)
