"""The edge's client of the media broker (gRPC `sipmesh.media.v1.Media`, services/media).

Where the brokers are: a fixed `host:port` list (`[edge] media`), or else every passing
instance of service `media` in discovery (the `grpc` entry of its metadata), kept current
by a watch task (`shared.rpc.discovered`).  Any broker can serve any call (they agree on
each call's rtpengine instance), so calls go round-robin; a call whose broker cannot be
reached (UNAVAILABLE: nothing was sent) moves to the next broker, one that was sent and
not answered in time is not repeated (an offer may have created the call leg).  Every
call has a deadline.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

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

    async def call(self, name: str, request: Any) -> Any:
        """`name` (Offer, Answer, Delete, Query) on a broker; MediaUnavailable when none
        answered."""
        targets = list(self.targets)
        if not targets:
            raise MediaUnavailable("no media broker known")
        start = next(self._rr) % len(targets)
        reply, last = await first_reachable(self.stubs, targets[start:] + targets[:start],
                                            name, request, self.timeout)
        if reply is None:
            raise MediaUnavailable(str(last))
        return reply

    @staticmethod
    def request(**fields: Any) -> Any:
        return pb.MediaRequest(**fields)
