"""The recorder's clients: the media broker (rtpengine forking) and the edges' Uac API.

Both over gRPC, found in discovery (`media` with `grpc`, `edge` with `uac` and `sip_udp`
in their metadata) or at fixed addresses.  A media call goes to any broker (they agree on
the call's rtpengine instance, which is passed as a hint); a SIP request goes to the edge
that handled the call when it is known, else to any edge; only a connection that could not
be made moves on to the next one (a sent INVITE or BYE is never repeated).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from contracts.generated.sipmesh.edge.v1 import uac_pb2 as uac_pb
from contracts.generated.sipmesh.edge.v1 import uac_pb2_grpc as uac_grpc
from contracts.generated.sipmesh.media.v1 import media_pb2 as media_pb
from contracts.generated.sipmesh.media.v1 import media_pb2_grpc as media_grpc
from services.siprec.session import Outgoing
from shared.rpc.discovered import GrpcStubs, healthy_instances, meta_values

TIMER_B_MAX = 64 * 4.0  # s: the longest an edge's Timer B can run (64 x T1, T1 <= 4 s)


class Unreachable(Exception):
    """No broker / edge could be reached."""


@dataclass(frozen=True)
class Edge:
    uac: str  # host:port of its Uac API
    sip: str  # its SIP URI (sip:host:port;transport=udp): our Contact


class MediaForker:
    """Subscribe / SubscribeAnswer / Unsubscribe on a media broker."""

    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "media", timeout: float = 6.0) -> None:
        self.static = [a for a in addresses if a]
        self.registry = registry
        self.service = service
        self.timeout = timeout
        self.stubs = GrpcStubs(media_grpc.MediaStub)

    async def targets(self) -> list[str]:
        if self.static:
            return list(self.static)
        return meta_values(await healthy_instances(self.registry, self.service), "grpc")

    async def call(self, name: str, **fields: Any) -> Any:
        last = "no media broker known"
        for target in await self.targets():
            try:
                return await getattr(self.stubs.get(target), name)(
                    media_pb.MediaRequest(**fields), timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                last = f"{target}: {exc.code().name}"
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break
        raise Unreachable(last)

    async def close(self) -> None:
        await self.stubs.close()


class UacSender:
    """Sends the recorder's requests through an edge (OpenSIPS t_uac_dlg)."""

    def __init__(self, *, edges: Sequence[Edge] = (), registry: Any = None,
                 service: str = "edge", timeout: float = 0.0) -> None:
        self.static = list(edges)
        self.registry = registry
        self.service = service
        self.timeout = timeout
        self.log = structlog.get_logger("siprec.uac")
        self.stubs = GrpcStubs(uac_grpc.UacStub)

    async def edges(self) -> list[Edge]:
        if self.static:
            return list(self.static)
        found = [Edge(i.meta["uac"], i.meta.get("sip_udp", ""))
                 for i in await healthy_instances(self.registry, self.service) if i.meta.get("uac")]
        return sorted(set(found), key=lambda e: e.uac)

    async def pick(self, preferred: Edge | None = None) -> list[Edge]:
        """The edges to try, the preferred one (the call's own edge) first."""
        edges = [e for e in await self.edges() if preferred is None or e.uac != preferred.uac]
        if preferred is not None and preferred.uac:
            known = [e for e in await self.edges() if e.uac == preferred.uac]
            edges.insert(0, preferred if preferred.sip or not known else known[0])
        return edges

    async def send(self, edge: Edge, out: Outgoing) -> tuple[int, str, list[tuple[str, str]],
                                                              bytes]:
        """(status, reason, headers, body) of the final response; Unreachable when the edge
        could not be reached (nothing was sent)."""
        request = uac_pb.UacRequest(
            method=out.method, ruri=out.ruri, route=list(out.route), body=out.body,
            headers=[uac_pb.Header(name=n, value=v) for n, v in out.headers],
            timeout=self.timeout)
        try:
            reply = await self.stubs.get(edge.uac).Send(
                request, timeout=(self.timeout or TIMER_B_MAX) + 2)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise Unreachable(f"{edge.uac}: {exc.code().name}") from None
            return 408, f"no answer from the edge ({exc.code().name})", [], b""
        except asyncio.CancelledError:
            raise
        return (int(reply.status), str(reply.reason),
                [(h.name, h.value) for h in reply.headers], bytes(reply.body))

    async def close(self) -> None:
        await self.stubs.close()
