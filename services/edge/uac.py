"""The edge's Uac API as a gRPC service (contracts/proto/sipmesh/edge/v1/uac.proto): the
asyncio adapter of `services/edge/uac_core.py`.

`UacServicer.Send` builds the request (400 for one that cannot be built), hands it to the
worker's proxy core through `EdgeApp.run_core` (the core adds its Via, so the response
comes back to this worker, and runs the RFC 3261 §17.1 client transaction), then waits for
the final response and answers with it: status, reason, headers, body. A CANCEL names a
pending INVITE of this edge by Call-ID and From tag: the edge cancels it as if its caller
had (`ProxyCore.cancel_invite`), 200 when found, 481 otherwise.

Each edge worker serves its own Uac API (its address is `uac` in the worker's discovery
metadata and in the dialogs it reports): a request must leave from the worker whose
private port its response comes back to.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from contracts.generated.sipmesh.edge.v1 import uac_pb2 as pb
from contracts.generated.sipmesh.edge.v1 import uac_pb2_grpc as pb_grpc
from services.edge.recording import RECORDING_SUFFIX
from services.edge.uac_core import UacOwner, build_request
from shared.sip import Response

if TYPE_CHECKING:
    from services.edge.app import EdgeApp

SERVICE = "sipmesh.edge.v1.Uac"


class UacServicer(pb_grpc.UacServicer):
    def __init__(self, app: EdgeApp) -> None:
        self.app = app
        self.log = structlog.get_logger("edge.uac")
        self.sent = 0
        self.failed = 0

    async def Send(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        app = self.app
        if app.core is None:
            return pb.UacReply(status=503, reason="Service Unavailable", error="edge starting")
        headers = [(h.name, h.value) for h in request.headers]
        try:
            sip = build_request(request.method, request.ruri, headers, list(request.route),
                                request.body)
        except ValueError as exc:
            self.failed += 1
            return pb.UacReply(status=400, reason="Bad Request", error=str(exc))
        if sip.method == "CANCEL":
            return self._cancel(sip)
        if sip.method == "BYE" and not sip.call_id.endswith(RECORDING_SUFFIX):
            # A call ended by a service (dialog timeout, dlg_end_dlg, billing): its
            # recording ends too (services/edge/recording.py; no-op when none).
            siprec = getattr(app, "services", {}).get("siprec")
            if siprec is not None:
                siprec.spawn(siprec.stop(sip.call_id, "dialog"))
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, str, Response | None]] = loop.create_future()

        def on_final(status: int, reason: str, response: Response | None) -> None:
            if not done.done():
                done.set_result((status, reason, response))

        from services.edge.routing import Target

        owner = UacOwner(sip, on_final, app.core, auto_ack=not request.no_auto_ack)
        target = Target(sip.uri, request.next_hop or None)
        app.run_core(lambda core, now: core.uac_request(sip, target, owner, now))
        wait = request.timeout if request.timeout > 0 else 64 * app.config.t1 + 1
        try:
            status, reason, response = await asyncio.wait_for(done, wait)
        except TimeoutError:
            status, reason, response = 408, "Request Timeout", None
        self.sent += 1
        self.log.info("uac_request", method=sip.method, call_id=sip.call_id, status=status)
        reply = pb.UacReply(status=status, reason=reason)
        if response is not None:
            reply.headers.extend(pb.Header(name=n, value=v) for n, v in response.header_lines())
            reply.body = response.body
        return reply

    def _cancel(self, sip: Any) -> Any:
        found, _ = self.app.run_core(
            lambda core, now: core.cancel_invite(sip.call_id, sip.from_tag or "", now))
        if not found:
            return pb.UacReply(status=481, reason="Call/Transaction Does Not Exist")
        return pb.UacReply(status=200, reason="OK")
