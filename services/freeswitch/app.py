"""Wiring of the FreeSWITCH bridge process: config -> store -> bridge -> gRPC + MI.

`serve(config)` opens the box table (unless `use_store = false`), starts one ESL link per
box (`services.freeswitch.bridge`), the gRPC server (`sipmesh.freeswitch.v1.Freeswitch` +
standard health) and the service runtime (MI, /metrics, /health, discovery as
`freeswitch` with `grpc` = host:port in its metadata, where the edge finds it), and runs
until SIGTERM.  It prints one line when ready:

    freeswitch ready grpc 127.0.0.1:PORT http http://127.0.0.1:PORT boxes N pid PID

With no box configured it says so and idles (MI fs_add / fs_subscribe can add one).

Rolling restart (services/freeswitch/handover.py): started while another bridge is in
discovery, it comes up in standby (ready once its links are subscribed) and goes live
when that one hands over (MI `fs_handover`) or has been gone `handover_timeout` s;
stopping, it freezes and hands over to every other bridge in discovery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from contracts.generated.sipmesh.freeswitch.v1 import freeswitch_pb2_grpc as pb_grpc
from services.freeswitch.bridge import Bridge
from services.freeswitch.config import FreeswitchConfig
from services.freeswitch.grpc_api import SERVICE, FreeswitchServicer
from services.freeswitch.handover import Mark, encode_marks
from services.freeswitch.mi import register_mi
from services.freeswitch.store import BoxStore, open_box_store
from shared.service.runtime import ServiceRuntime

HANDOVER_POLL = 0.25  # s between looks at discovery while in standby


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

    # A bridge in standby is ready once every box sends it what the old one gets.
    runtime.ready_check("handover", lambda: not bridge.standby or bridge.linked())
    watchdog: list[asyncio.Task[None]] = []

    @runtime.on_start
    async def _start() -> None:
        if store is not None:
            await store.open()
        predecessors = await _other_bridges(runtime)
        if predecessors:
            bridge.standby = True  # before the links: every event is kept
            bridge.log.info("handover_standby", predecessors=sorted(predecessors))
            watchdog.append(asyncio.create_task(
                _take_over_when_gone(runtime, bridge, set(predecessors), config)))
        await bridge.start()
        await api.start()
        runtime.meta["boxes"] = str(len(bridge.boxes))

    @runtime.on_stop
    async def _stop() -> None:
        for task in watchdog:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await api.stop()
        await bridge.settle(config.drain_grace)  # commands in flight get their answers
        if not bridge.standby:
            await _hand_over(runtime, bridge.freeze(), list(bridge.our_jobs), config)
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


async def _other_bridges(runtime: ServiceRuntime) -> dict[str, str]:
    """The other bridges in discovery: instance id -> MI URL."""
    try:
        found = await runtime.registry.healthy(runtime.name)
    except Exception as exc:  # no registry: nobody to hand over with
        runtime.log.warning("handover_discovery_failed", error=str(exc))
        return {}
    out = {}
    for inst in found:
        url = inst.meta.get("mi_url", "")
        if inst.id != runtime.instance_id and url.startswith(("http://", "https://")):
            out[inst.id] = url
    return out


async def _take_over_when_gone(runtime: ServiceRuntime, bridge: Bridge,
                               predecessors: set[str], config: FreeswitchConfig) -> None:
    """Standby's fallback: no hand-over came and the old bridges have been gone from
    discovery `handover_timeout` s (killed): go live with every event kept."""
    loop = asyncio.get_running_loop()
    gone_since: float | None = None
    while bridge.standby:
        present = predecessors & set(await _other_bridges(runtime))
        now = loop.time()
        if present:
            gone_since = None
        elif gone_since is None:
            gone_since = now
        elif now - gone_since >= config.handover_timeout:
            bridge.log.warning("handover_missing", waited=config.handover_timeout)
            bridge.take_over({})
            return
        await asyncio.sleep(HANDOVER_POLL)  # polling discovery, bounded by the timeout


async def _hand_over(runtime: ServiceRuntime, marks: dict[str, Mark], jobs: list[str],
                     config: FreeswitchConfig) -> None:
    """Tells every other bridge in discovery where this one stopped (MI fs_handover)."""
    import aiohttp

    successors = await _other_bridges(runtime)
    if not successors:
        return
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "fs_handover",
                       "params": {"marks": encode_marks(marks), "jobs": jobs}})
    headers = {"Content-Type": "application/json"}
    if config.http_token:
        headers["Authorization"] = f"Bearer {config.http_token}"
    timeout = aiohttp.ClientTimeout(total=max(config.drain_grace, 1.0))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for instance, url in successors.items():
            try:
                async with http.post(url, data=body, headers=headers) as resp:
                    answer = await resp.json(content_type=None)
                runtime.log.info("handover_given", to=instance,
                                 answer=answer.get("result", answer.get("error")))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                runtime.log.warning("handover_failed", to=instance, error=str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    from shared.service.boot import service_main

    return service_main("freeswitch", lambda: load_config(_parse_args(argv)), serve)
