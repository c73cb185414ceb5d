"""The edge's client of the presence service (gRPC `sipmesh.presence.v1.Presence`,
services/presence).

Where the presence nodes are: a fixed `host:port` list (`[edge] presence`), or else every
passing instance of service `presence` in discovery (the `grpc` entry of its metadata),
kept current by a watch task (`shared.rpc.discovered`). A request goes to the first node
(sorted; all nodes share their state through the store), the next one only when the first
could not be reached (UNAVAILABLE: nothing was sent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.generated.sipmesh.presence.v1 import presence_pb2 as pb
from contracts.generated.sipmesh.presence.v1 import presence_pb2_grpc as pb_grpc
from shared.rpc.discovered import DiscoveredGrpcClient, first_reachable


class PresenceUnavailable(Exception):
    """No presence node could be reached."""


class PresenceClient(DiscoveredGrpcClient):
    LOGGER = "edge.presence"
    WATCH_FAILED = "presence_watch_failed"

    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "presence", timeout: float = 5.0) -> None:
        super().__init__(addresses=addresses, registry=registry, service=service,
                         stub=pb_grpc.PresenceStub)
        self.timeout = timeout
        self.uac = ""  # this edge worker's Uac API, set once it listens

    async def handle(self, message: bytes, *, source: str, local_contact: str, to_tag: str,
                     sharing_tag: str = "") -> tuple[int, str, list[tuple[str, str]]]:
        """(status, reason, headers) of the presence service's answer to a PUBLISH or
        SUBSCRIBE; PresenceUnavailable when no node answered."""
        request = pb.SipRequest(message=message, source=source, local_contact=local_contact,
                                edge_uac=self.uac, to_tag=to_tag, sharing_tag=sharing_tag)
        answer, last = await first_reachable(self.stubs, list(self.targets), "Handle",
                                             request, self.timeout)
        if answer is None:
            raise PresenceUnavailable(str(last) if last else "no presence node known")
        return answer.status, answer.reason, [(h.name, h.value) for h in answer.headers]
