"""The dialog service's client of the edges' Uac API (contracts/proto/sipmesh/edge/v1).

A request goes to the edge that handled the dialog (its `edge_uac` address, written in the
Create event); when that edge cannot be reached it goes to another edge found in
discovery (instances of `[dialog] edge_service` announcing `uac` in their metadata).
Sending is not idempotent (a BYE that reached the phone must not be sent twice), so only
a connection that could not be made moves to the next edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from contracts.generated.sipmesh.edge.v1 import uac_pb2 as pb
from contracts.generated.sipmesh.edge.v1 import uac_pb2_grpc as pb_grpc
from services.dialog.byes import Outgoing
from shared.rpc.discovered import GrpcStubs, first_reachable, healthy_instances, meta_values


class UacClient:
    def __init__(self, registry: Any = None, service: str = "edge",
                 timeout: float = 5.0) -> None:
        self.registry = registry
        self.service = service
        self.timeout = timeout
        self.log = structlog.get_logger("dialog.uac")
        self.stubs = GrpcStubs(pb_grpc.UacStub)

    async def _edges(self) -> list[str]:
        # discovery away: only the dialog's own edge is known
        return meta_values(await healthy_instances(self.registry, self.service), "uac")

    async def send(self, preferred: str, out: Outgoing) -> tuple[int, str]:
        """(final status, reason) of the request; 503 when no edge could send it."""
        request = pb.UacRequest(
            method=out.method, ruri=out.ruri, route=list(out.route), next_hop=out.next_hop,
            headers=[pb.Header(name=n, value=v) for n, v in out.headers],
            timeout=self.timeout)
        targets = [t for t in [preferred] if t]
        targets += [t for t in await self._edges() if t not in targets]
        # Only an edge that could not be reached moves on: one that may have sent it, never
        # twice.
        reply, error = await first_reachable(self.stubs, targets, "Send", request,
                                             self.timeout + 2)
        if reply is not None:
            return reply.status, reply.reason or reply.error
        return 503, f"{error.code().name}: {error.details()}" if error else "no edge known"

    async def send_all(self, preferred: str, requests: Sequence[Outgoing]
                       ) -> list[tuple[int, str]]:
        return list(await asyncio.gather(*(self.send(preferred, r) for r in requests)))

    async def close(self) -> None:
        await self.stubs.close()
