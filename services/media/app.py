"""Wiring of the media broker process: config -> store -> broker -> gRPC + MI.

`serve(config)` opens the `rtpengine` table (SQLite by default, `[media] db_url` for
PostgreSQL), loads the sets (plus `[media] rtpengine_sock`), pings every instance, starts
the gRPC server (`sipmesh.media.v1.Media` + standard health) and the service runtime (MI
`rtpengine_*`, /metrics with an ng round-trip histogram, /health, discovery as `media` with
`grpc` = host:port in its metadata, where the edges find it).  One line when ready:

    media ready grpc 127.0.0.1:PORT http http://127.0.0.1:PORT pid PID sets 1 instances 2

or, with nothing provisioned (the broker then idles: edges get "no rtpengine set 0"):

    media ready grpc ... -- no rtpengine configured: sipmesh rtpengine add udp:HOST:PORT
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import grpc
from prometheus_client import Histogram

from contracts.generated.sipmesh.media.v1 import media_pb2 as pb
from contracts.generated.sipmesh.media.v1 import media_pb2_grpc as pb_grpc
from services.media.broker import Broker, Outcome
from services.media.config import MediaConfig
from services.media.flags import SipFacts
from services.media.mi import register_mi
from services.media.sets import StatusChange
from services.media.stats import CallStats

SERVICE = "sipmesh.media.v1.Media"
EVENT = "E_RTPENGINE_STATUS"


def _facts(request: Any) -> SipFacts:
    return SipFacts(request.call_id, request.from_tag, request.to_tag, request.reply,
                    request.received_from, tuple(request.via_branches))


def _sdp_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _mos(target: Any, values: dict[str, int | None]) -> None:
    for name, value in values.items():
        if value is not None:
            setattr(target, name, value)


def fill_stats(target: Any, stats: CallStats) -> None:
    """`stats` into a CallStats message, in place."""
    _mos(target.mos, {"mos_average": stats.mos_average, "mos_min": stats.mos_min,
                      "mos_min_at": stats.mos_min_at, "mos_max": stats.mos_max,
                      "mos_max_at": stats.mos_max_at})
    for name in ("jitter_average", "roundtrip_average", "packetloss_average", "packets_lost"):
        value = getattr(stats, name)
        if value is not None:
            setattr(target, name, value)
    for name in ("rtp_packets", "rtp_bytes", "rtp_errors", "rtcp_packets", "rtcp_bytes",
                 "rtcp_errors"):
        setattr(target, name, getattr(stats, name))
    for tag, values in stats.by_tag.items():
        _mos(target.by_tag[tag], values)


class MediaServicer(pb_grpc.MediaServicer):
    """The gRPC face of the broker; rtpengine's failures are answers, never gRPC errors."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def _sdp_call(self, command: str, request: Any) -> Any:
        outcome = await self.broker.command(
            command, _facts(request), flags=request.flags, sdp=_sdp_text(request.sdp),
            set_id=request.set_id, hint=request.instance)
        return pb.MediaReply(ok=outcome.ok, sdp=outcome.sdp.encode("utf-8", "surrogateescape"),
                             instance=outcome.instance, error=outcome.error,
                             warning=outcome.warning)

    async def Offer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._sdp_call("offer", request)

    async def Answer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._sdp_call("answer", request)

    async def _stats_call(self, command: str, request: Any) -> Any:
        outcome: Outcome = await self.broker.command(
            command, _facts(request), flags=request.flags, set_id=request.set_id,
            hint=request.instance)
        reply = pb.DeleteReply(ok=outcome.ok, instance=outcome.instance, error=outcome.error,
                               warning=outcome.warning, json=outcome.json())
        stats = outcome.stats()
        if stats is not None:
            fill_stats(reply.stats, stats)
        return reply

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._stats_call("delete", request)

    async def Query(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._stats_call("query", request)

    async def _subscription(self, command: str, request: Any) -> Any:
        outcome = await self.broker.subscription(
            command, request.call_id, set_id=request.set_id, hint=request.instance,
            to_tag=request.to_tag, sdp=_sdp_text(request.sdp))
        reply = outcome.reply or {}
        tags = reply.get("from-tags")
        to_tag = reply.get("to-tag")
        return pb.MediaReply(
            ok=outcome.ok, sdp=outcome.sdp.encode("utf-8", "surrogateescape"),
            instance=outcome.instance, error=outcome.error, warning=outcome.warning,
            to_tag=to_tag if isinstance(to_tag, str) else "",
            from_tags=[t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [])

    async def Subscribe(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._subscription("subscribe request", request)

    async def SubscribeAnswer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._subscription("subscribe answer", request)

    async def Unsubscribe(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._subscription("unsubscribe", request)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from shared.service.boot import arguments

    p = arguments("media", "SipMesh media broker (rtpengine)")
    p.add_argument("--db-url", help="SQLite file or postgresql:// DSN of the rtpengine table")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> MediaConfig:
    from shared.service.boot import load_settings

    return load_settings(MediaConfig, "media", args, ("grpc_port", "http_port", "db_url"))


async def serve(config: MediaConfig) -> None:
    from services.media.store import open_media_store
    from shared.service.boot import GrpcApi, serve_announced, service_runtime

    runtime = service_runtime("media", config)
    runtime.declare_events("rtpengine.#")  # advertised by the gateway's events_list
    latency = Histogram("sipmesh_media_ng_seconds", "rtpengine ng round trip",
                        ["command", "outcome"], registry=runtime.metrics,
                        buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1, 5))

    def observe(command: str, seconds: float, ok: bool) -> None:
        latency.labels(command, "ok" if ok else "timeout").observe(seconds)

    def on_status(change: StatusChange) -> None:
        runtime.events.publish(EVENT, {"socket": change.url, "set": change.set_id,
                                       "status": "active" if change.active else "inactive"})

    broker = Broker(
        store=open_media_store(config.store_location, table=config.db_table),
        static_sets=config.rtpengine_sock, timeout=config.rtpengine_tout,
        tries=config.rtpengine_retr, disable_timeout=config.rtpengine_disable_tout,
        ping_interval=config.ping_interval, recheck_tick=config.recheck_tick,
        record_max_age=config.call_record_max_age, on_status=on_status, observe=observe)
    register_mi(runtime, broker)
    api = GrpcApi(runtime, config, SERVICE,
                  lambda s: pb_grpc.add_MediaServicer_to_server(  # type: ignore[no-untyped-call]
                      MediaServicer(broker), s))

    @runtime.on_start
    async def _start() -> None:
        await broker.start()
        await api.start()
        purged = await broker.purge()
        if purged:
            runtime.log.info("call_records_purged", count=purged)

    @runtime.on_stop
    async def _stop() -> None:
        await api.stop()
        await broker.close()

    def line() -> str:
        sets = len(broker.sets.sets)
        instances = sum(1 for _ in broker.sets.engines())
        tail = (f"sets {sets} instances {instances}" if instances else
                "-- no rtpengine configured: sipmesh rtpengine add udp:HOST:PORT "
                "(then MI rtpengine_reload)")
        if not instances:
            runtime.log.warning("no_rtpengine_configured", table=config.db_table,
                                db=config.store_location)
        return (f"media ready grpc {runtime.meta['grpc']} http {runtime.base_url} "
                f"pid {os.getpid()} {tail}")

    await serve_announced(runtime, line, ready=lambda: api.serving)


def main(argv: Sequence[str] | None = None) -> int:
    from shared.service.boot import service_main

    return service_main("media", lambda: load_config(_parse_args(argv)), serve)
