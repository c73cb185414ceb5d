"""Wiring of the SIPREC recorder process: config -> clients -> recorder -> MI, events.

`serve(config)` runs the service runtime (discovery as `siprec`, MI, /metrics, /health)
with the recorder.  Edges call `siprec_start` when a call marked with `ctx.record(...)`
is answered and `siprec_stop` when it ends; operators list and stop recordings with
`siprec_list` / `siprec_stop`.  One line when ready:

    siprec ready http http://127.0.0.1:PORT pid PID
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Histogram

from services.siprec.clients import MediaForker, UacSender
from services.siprec.config import SiprecConfig
from services.siprec.recorder import Recorder, RecorderClosing
from services.siprec.session import RecordingError, Table
from shared.rpc.jsonrpc import (
    BAD_REQUEST,
    NOT_FOUND,
    SERVICE_UNAVAILABLE,
    MiCommand,
    MiError,
)
from shared.service.runtime import ServiceRuntime

SERVICE = "siprec"
TAKE_OVER_POLL = 0.25  # s between looks at discovery while the replaced recorder runs


def register_mi(runtime: ServiceRuntime, recorder: Recorder) -> None:
    async def siprec_start(params: Any) -> Any:
        if not isinstance(params, Mapping):
            raise MiError(BAD_REQUEST, "siprec_start takes named params: callid, from_tag, "
                                       "srs, caller, callee, instance[, group, headers, ...]")
        try:
            return await recorder.start(params)
        except RecorderClosing as exc:
            raise MiError(SERVICE_UNAVAILABLE, str(exc)) from None
        except RecordingError as exc:
            raise MiError(BAD_REQUEST, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise MiError(BAD_REQUEST, f"bad params: {exc}") from None

    runtime.mi.add(MiCommand(
        "siprec_start", siprec_start, None,
        "record a call to an SRS (OpenSIPS siprec_start_recording): callid, from_tag, "
        "srs (comma-separated failover list), caller, callee, instance (its rtpengine)"))

    @runtime.command("siprec_stop", (("callid",), ("callid", "reason")), fanout=True,
                     doc="end the recording of a call (BYE to the SRS)")
    async def siprec_stop(callid: Any, reason: Any = "mi") -> Any:
        try:
            found = await recorder.stop(str(callid), str(reason))
        except RecorderClosing as exc:
            raise MiError(SERVICE_UNAVAILABLE, str(exc)) from None
        if found is None:
            raise MiError(NOT_FOUND, "Recording not found")
        return found

    @runtime.command("siprec_update", (("callid", "from_tag", "direction"),),
                     fanout=True, doc="a re-INVITE of a recorded call was accepted "
                     "(its offer's direction): re-INVITE to the SRS when hold changes")
    async def siprec_update(callid: Any, from_tag: Any, direction: Any) -> Any:
        found = await recorder.update(str(callid), str(from_tag), str(direction))
        if found is None:
            raise MiError(NOT_FOUND, "Recording not found")
        return found

    @runtime.command("siprec_srs_bye", (("rs_callid",),), fanout=True,
                     doc="the SRS ended a recording session (its BYE reached an edge)")
    async def siprec_srs_bye(rs_callid: Any) -> Any:
        found = await recorder.srs_bye(str(rs_callid))
        if found is None:
            raise MiError(NOT_FOUND, "Recording not found")
        return found

    @runtime.command("siprec_list", fanout=True, doc="the active recordings")
    async def siprec_list() -> Any:
        return {"Recordings": recorder.listing(recorder.clock())}

    def values() -> dict[str, int]:
        return {**recorder.counters, "active": len(recorder.table)}

    runtime.stats.group("siprec", values)


async def _other_recorders(runtime: ServiceRuntime) -> set[str]:
    """The other recorders in discovery (their instance ids)."""
    try:
        found = await runtime.registry.healthy(runtime.name)
    except Exception:
        return set()
    return {i.id for i in found if i.id != runtime.instance_id}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from shared.service.boot import arguments

    p = arguments("siprec", "SipMesh SIPREC recording client", grpc=False)
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> SiprecConfig:
    from shared.service.boot import load_settings

    return load_settings(SiprecConfig, "siprec", args, ("http_port",))


async def serve(config: SiprecConfig) -> None:
    from shared.service.boot import serve_announced, service_runtime

    runtime = service_runtime(SERVICE, config, drain_timeout=5.0)
    runtime.declare_events("siprec.#")
    setup = Histogram("sipmesh_siprec_setup_seconds",
                      "subscribe + INVITE to the SRS + subscribe answer", ["outcome"],
                      registry=runtime.metrics,
                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    media = MediaForker(addresses=config.media, registry=runtime.registry,
                        service=config.media_service, timeout=config.media_timeout)
    uac = UacSender(registry=runtime.registry, service=config.edge_service,
                    timeout=config.uac_timeout)

    def on_event(name: str, params: Mapping[str, Any]) -> None:
        runtime.events.publish(name, params)

    from services.siprec.store import open_recording_store

    store = open_recording_store(config.db_url, table=config.db_table)
    recorder = Recorder(
        media, uac, table=Table(skip_failover=frozenset(config.skip_failover_codes),
                                user_agent=config.user_agent),
        on_event=on_event, observe=lambda outcome, s: setup.labels(outcome).observe(s),
        store=store)
    register_mi(runtime, recorder)
    tasks: list[asyncio.Task[None]] = []

    async def checker() -> None:
        # The first check right away: recordings taken back may have lost their call.
        while True:
            try:
                await recorder.check()
            except Exception as exc:
                runtime.log.warning("siprec_check_failed", error=repr(exc))
            if config.check_interval <= 0:
                return
            await asyncio.sleep(config.check_interval)

    async def take_over(others: set[str]) -> None:
        # A rolling restart runs this recorder beside the one it replaces (surge): that
        # one still ends its recordings while it drains, so they are taken back only
        # once it is gone from discovery and its drain is over; a stop meanwhile finds
        # its recording in the store (Recorder._adopt).
        while others & await _other_recorders(runtime):
            await asyncio.sleep(TAKE_OVER_POLL)  # polling discovery while the old one runs
        await asyncio.sleep(config.drain_delay + config.drain_grace + 1.0)  # its drain
        await recorder.restore()
        await checker()

    @runtime.on_start
    async def _start() -> None:
        others = await _other_recorders(runtime)
        if store is not None:
            await store.open()
            if not others:
                await recorder.restore()
        loop = asyncio.get_running_loop()
        if others and store is not None:
            runtime.log.info("siprec_beside", others=sorted(others))
            tasks.append(loop.create_task(take_over(others)))
        else:
            tasks.append(loop.create_task(checker()))

    @runtime.on_stop
    async def _stop() -> None:
        for task in tasks:
            task.cancel()
        # Starts and stops under way finish (new ones go to another recorder) before
        # the media and Uac clients they use close.
        await recorder.close(config.drain_grace + 2.0)
        if store is None:
            await recorder.stop_all("shutdown")  # kept nowhere: end them with the process
        await media.close()
        await uac.close()
        if store is not None:
            await store.close()

    await serve_announced(
        runtime, lambda: f"siprec ready http {runtime.base_url} pid {os.getpid()}")


def main(argv: Sequence[str] | None = None) -> int:
    from shared.service.boot import service_main

    return service_main(SERVICE, lambda: load_config(_parse_args(argv)), serve)
