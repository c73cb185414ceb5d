"""Wiring of the FreeSWITCH bridge process: config -> store -> bridge -> gRPC + MI.

`serve(config)` opens the box table (unless `use_store = false`), starts one ESL link per
box (`services.freeswitch.bridge`), the gRPC server (`sipmesh.freeswitch.v1.Freeswitch` +
standard health) and the service runtime (MI, /metrics, /health, discovery as
`freeswitch` with `grpc` = host:port in its metadata, where the edge finds it), and runs
until SIGTERM.  It prints one line when ready:

    freeswitch ready grpc 127.0.0.1:PORT http http://127.0.0.1:PORT boxes N pid PID

With no box configured it says so and idles (MI fs_add / fs_subscribe can add one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from contracts.generated.sipmesh.freeswitch.v1 import freeswitch_pb2_grpc as pb_grpc
from services.freeswitch.bridge import Bridge
from services.freeswitch.config import FreeswitchConfig
from services.freeswitch.grpc_api import SERVICE, FreeswitchServicer
from services.freeswitch.mi import register_mi
from services.freeswitch.store import BoxStore, open_box_store


class BoxCollector:
    """Per-box Prometheus gauges, read at scrape time."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Any]:
        now = asyncio.get_event_loop().time()
        up = GaugeMetricFamily("sipmesh_freeswitch_box_up", "ESL link up (1) or not",
                               labels=["box", "group"])
        sessions = GaugeMetricFamily("sipmesh_freeswitch_box_sessions",
                                     "HEARTBEAT Session-Count", labels=["box"])
        idle = GaugeMetricFamily("sipmesh_freeswitch_box_idle_cpu",
                                 "HEARTBEAT Idle-CPU (percent)", labels=["box"])
        age = GaugeMetricFamily("sipmesh_freeswitch_box_heartbeat_age_seconds",
                                "seconds since the box's last HEARTBEAT", labels=["box"])
        for state in self.bridge.states(now):
            up.add_metric([state["id"], state["group"]], 1.0 if state["up"] else 0.0)
            sessions.add_metric([state["id"]], state["session_count"])
            idle.add_metric([state["id"]], state["idle_cpu"])
            if state["heartbeat_age"] >= 0:
                age.add_metric([state["id"]], state["heartbeat_age"])
        yield from (up, sessions, idle, age)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from shared.service.boot import arguments

    p = arguments("freeswitch", "SipMesh FreeSWITCH ESL bridge")
    p.add_argument("--store", help="SQLite file or postgresql:// DSN of the box table")
    p.add_argument("--box", action="append", dest="boxes",
                   help="fs://[user]:password@host[:port][?...] (repeatable)")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> FreeswitchConfig:
    from shared.service.boot import load_settings

    def boxes(config: FreeswitchConfig) -> dict[str, Any]:
        return {"boxes": (*config.boxes, *args.boxes)} if args.boxes else {}

    return load_settings(FreeswitchConfig, "freeswitch", args,
                         ("grpc_port", "http_port", "store"), boxes)


async def serve(config: FreeswitchConfig) -> None:
    from prometheus_client import Histogram

    from shared.service.boot import GrpcApi, serve_announced, service_runtime

    runtime = service_runtime("freeswitch", config)
    runtime.declare_events("freeswitch.#")  # advertised by the gateway's events_list
    store: BoxStore | None = open_box_store(config.store_location, table=config.table) \
        if config.use_store else None
    bridge = Bridge(config, events=runtime.events, store=store)
    register_mi(runtime, bridge)
    runtime.metrics.register(BoxCollector(bridge))
    latency = Histogram("sipmesh_freeswitch_api_seconds",
                        "ESL api/bgapi round trips through the bridge", ["kind"],
                        registry=runtime.metrics,
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
    bridge.observe = lambda kind, seconds: latency.labels(kind).observe(seconds)
    api = GrpcApi(
        runtime, config, SERVICE,
        lambda s: pb_grpc.add_FreeswitchServicer_to_server(  # type: ignore[no-untyped-call]
            FreeswitchServicer(bridge), s))

    @runtime.on_start
    async def _start() -> None:
        if store is not None:
            await store.open()
        await bridge.start()
        await api.start()
        runtime.meta["boxes"] = str(len(bridge.boxes))

    @runtime.on_stop
    async def _stop() -> None:
        await api.stop()
        await bridge.stop()
        if store is not None:
            await store.close()

    def line() -> str:
        text = (f"freeswitch ready grpc {runtime.meta['grpc']} http {runtime.base_url} "
                f"boxes {len(bridge.boxes)} pid {os.getpid()}")
        if not bridge.boxes:
            text += ("\nfreeswitch: no FreeSWITCH box configured ([freeswitch] boxes, the "
                     "store's table, or MI fs_add): idle")
        return text

    await serve_announced(runtime, line, ready=lambda: api.serving)


def main(argv: Sequence[str] | None = None) -> int:
    from shared.service.boot import service_main

    return service_main("freeswitch", lambda: load_config(_parse_args(argv)), serve)
