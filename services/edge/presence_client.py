"""The edge's client of the presence service (gRPC `sipmesh.presence.v1.Presence`,
services/presence).

Where the presence nodes are: a fixed `host:port` list (`[edge] presence`), or else every
passing instance of service `presence` in discovery (the `grpc` entry of its metadata),
kept current by a watch task (`shared.rpc.discovered`; those not ready skipped). A request
goes to the first node (sorted; all nodes share their state through the store), the next
one only when the first could not be reached (UNAVAILABLE: nothing was sent).
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
        self.registered = bool(self.static)  # some node known, ready or not (`present`)

    @property
    def present(self) -> bool:
        """The mesh has a presence service, ready or not: its requests are for it (503
        while no node is ready, e.g. a single node restarting and catching up)."""
        self._ensure_watch()
        return self.registered

    def accepts(self, instance: Any) -> bool:
        # meta "ready" "0": registered, not ready yet (a restarted node catching up with
        # the shared store); an older release that does not say is taken as ready.
        return bool(instance.meta.get("ready") != "0")

    def _set(self, instances: Sequence[Any]) -> None:
        super()._set(instances)
        self.registered = any(i.meta.get("grpc") for i in instances)

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
