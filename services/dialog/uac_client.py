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

from services.dialog.byes import Outgoing
from shared.rpc.discovered import EdgeUac


class UacClient(EdgeUac):
    def __init__(self, registry: Any = None, service: str = "edge",
                 timeout: float = 5.0) -> None:
        super().__init__(registry, service, timeout)
        self.log = structlog.get_logger("dialog.uac")

    async def send(self, preferred: str, out: Outgoing) -> tuple[int, str]:
        """(final status, reason) of the request; 503 when no edge could send it."""
        return await self.send_request(preferred, self.request(
            out.method, out.ruri, route=out.route, next_hop=out.next_hop,
            headers=out.headers))

    async def send_all(self, preferred: str, requests: Sequence[Outgoing]
                       ) -> list[tuple[int, str]]:
        return list(await asyncio.gather(*(self.send(preferred, r) for r in requests)))
