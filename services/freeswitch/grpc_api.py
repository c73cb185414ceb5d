"""The gRPC face of the bridge (`sipmesh.freeswitch.v1.Freeswitch`, for edge routing).

Api / BgApi answer with OpenSIPS freeswitch_esl's outlook: code 1 whenever FreeSWITCH
answered (an `-ERR` is an answer), a negative code otherwise, never a gRPC error for a
box problem.  Watch: a snapshot of the boxes first and after each change (coalesced:
at most one per SNAPSHOT_INTERVAL), the events asked for as they come.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from contracts.generated.sipmesh.freeswitch.v1 import freeswitch_pb2 as pb
from contracts.generated.sipmesh.freeswitch.v1 import freeswitch_pb2_grpc as pb_grpc
from services.freeswitch.bridge import SNAPSHOT_INTERVAL, Bridge, UnknownBox
from services.freeswitch.client import EslTimeout, EslUnavailable

SERVICE = "sipmesh.freeswitch.v1.Freeswitch"
OK, NO_BOX, LINK_DOWN, TIMEOUT, BAD_COMMAND = 1, -1, -2, -3, -4


def _failure(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, UnknownBox):
        return NO_BOX, str(exc)
    if isinstance(exc, EslTimeout):
        return TIMEOUT, str(exc) or "no answer in time"
    if isinstance(exc, EslUnavailable):
        return LINK_DOWN, str(exc)
    if isinstance(exc, ValueError):
        return BAD_COMMAND, str(exc)
    raise exc


class FreeswitchServicer(pb_grpc.FreeswitchServicer):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    async def Api(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            body = await self.bridge.api(request.box, request.command)
        except Exception as exc:
            code, error = _failure(exc)
            return pb.ApiReply(code=code, error=error)
        return pb.ApiReply(code=OK, body=body)

    async def BgApi(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            job, result, accepted = await self.bridge.bgapi(request.box, request.command)
            if not accepted:
                return pb.BgApiReply(code=OK, job_uuid=job, body=result.result())
            body = await asyncio.shield(result) if request.wait else ""
        except Exception as exc:
            code, error = _failure(exc)
            return pb.BgApiReply(code=code, error=error)
        return pb.BgApiReply(code=OK, job_uuid=job, body=body)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        bridge = self.bridge
        watcher = bridge.watch(request.events)
        loop = asyncio.get_running_loop()
        last_snapshot = -SNAPSHOT_INTERVAL
        try:
            while True:
                item = await watcher.queue.get()
                if item[0] == "boxes":
                    wait = last_snapshot + SNAPSHOT_INTERVAL - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)  # coalesce a burst of changes
                    watcher.snapshot_due = False
                    last_snapshot = loop.time()
                    yield pb.WatchUpdate(boxes=self.snapshot(last_snapshot))
                else:
                    _, spec, event = item
                    yield pb.WatchUpdate(event=pb.FsEvent(
                        name=event.name, sender=spec.host, box=spec.id, body=event.raw))
        finally:
            bridge.unwatch(watcher)

    def snapshot(self, now: float) -> Any:
        config = self.bridge.config
        return pb.Boxes(policy=config.policy, max_weight=config.max_weight, boxes=[
            pb.Box(id=s["id"], group=s["group"], sip_uri=s["sip_uri"], up=s["up"],
                   session_count=s["session_count"], max_sessions=s["max_sessions"],
                   idle_cpu=s["idle_cpu"], heartbeat_age=s["heartbeat_age"],
                   stale_after=s["stale_after"])
            for s in self.bridge.states(now)])
