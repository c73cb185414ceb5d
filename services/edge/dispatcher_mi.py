"""The dispatcher in a running edge: the table read, OPTIONS probes sent, MI commands.

The rules are in :mod:`services.edge.dispatcher` (sans-IO). `DispatcherService` reads
SipMesh's ``dispatcher`` table (``[edge] ds_db``, by default the registrar's store, where
``sipmesh import opensips`` writes it) at start and on ``ds_reload``, sends the OPTIONS
probes the sets ask for through the edge's own proxy core (a client transaction of the
Uac API: Timer F, 408 when unanswered), and raises ``E_DISPATCHER_STATUS {group, address,
status}`` on every state change. Routing reaches it as ``ctx.services["dispatcher"]``
through ``ctx.dispatch``.

MI (OpenSIPS 2.4 names, OpenSIPS 3's shapes; schemas in ``contracts/mi``):
``ds_list [full]``, ``ds_set_state state group address`` (state ``a``/``i``/``p``; 404
"Destination not found"), ``ds_reload`` (every edge, through the gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from services.edge.dispatcher import (
    MI_STATES,
    Change,
    DispatcherError,
    DispatcherSets,
)
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, MiError, int_param
from shared.store.edge_tables import open_dispatcher_table

if TYPE_CHECKING:
    from services.edge.app import EdgeApp
    from services.edge.config import EdgeConfig
    from shared.service.runtime import ServiceRuntime

PROBE_TICK = 0.5  # s between looks at what is due (the sets decide what is)


def ds_location(config: EdgeConfig) -> str | None:
    if config.ds_db.lower() == "none":
        return None
    if config.ds_db:
        return config.ds_db
    from services.registrar.config import RegistrarConfig
    from shared.config import load_section

    return load_section(RegistrarConfig, "registrar").store_location


class DispatcherService:
    def __init__(self, location: str, config: EdgeConfig, app: EdgeApp,
                 publish: Any) -> None:
        self.location = location
        self.config = config
        self.app = app
        self.publish = publish
        self.sets = DispatcherSets(
            interval=config.ds_ping_interval, mode=config.ds_probing_mode,
            reply_codes=[int(c) for c in config.ds_options_reply_codes],
            threshold=config.ds_probing_threshold)
        self.log = structlog.get_logger("edge")
        self.probes_sent = 0
        self._task: asyncio.Task[None] | None = None

    async def reload(self) -> None:
        table = open_dispatcher_table(self.location)
        await table.open()
        try:
            rows = await table.all()
        finally:
            await table.close()
        self.sets.load(rows)
        for row, reason in self.sets.skipped:
            self.log.warning("dispatcher.row_skipped", setid=row.setid,
                             destination=row.destination, reason=reason)
        self.log.info("dispatcher.loaded", sets=len(self.sets.sets),
                      destinations=sum(len(s.dests) for s in self.sets.sets.values()))

    def changed(self, change: Change) -> None:
        self.log.warning("dispatcher.state", group=change.setid, address=change.uri,
                         status=change.status)
        self.publish("E_DISPATCHER_STATUS", {"group": change.setid, "address": change.uri,
                                             "status": change.status})

    # -- probing -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.config.ds_ping_interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._probe_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PROBE_TICK)  # the probe timer's tick
            if self.app.core is None:
                continue
            for dest in self.sets.due(loop.time()):
                try:
                    self._probe(dest.setid, dest.uri)
                except Exception as exc:  # a URI the core cannot send to: that one only
                    self.log.warning("dispatcher.probe_failed", address=dest.uri,
                                     error=str(exc))
                    self._result(dest.setid, dest.uri, 500)

    def _probe(self, setid: int, uri: str) -> None:
        from services.edge.routing import Target
        from services.edge.uac_core import UacOwner, build_request

        request = build_request("OPTIONS", uri, [("To", f"<{uri}>"),
                                                 ("From", f"<{self.config.ds_ping_from}>")])

        def on_final(status: int, _reason: str, _response: Any) -> None:
            self._result(setid, uri, status)

        self.probes_sent += 1
        self.app.run_core(lambda core, now: core.uac_request(
            request, Target(uri), UacOwner(request, on_final, core), now))

    def _result(self, setid: int, uri: str, code: int) -> None:
        change = self.sets.probe_result(setid, uri, code)
        if change is not None:
            self.changed(change)


def attach_dispatcher(runtime: ServiceRuntime, app: EdgeApp,
                      config: EdgeConfig) -> DispatcherService | None:
    location = ds_location(config)
    if location is None:
        return None
    runtime.declare_events("E_DISPATCHER_STATUS")
    service = DispatcherService(location, config, app, runtime.events.publish)
    app.services["dispatcher"] = service

    @runtime.on_start
    async def _load() -> None:
        try:
            await service.reload()
        except Exception as exc:
            service.log.warning("dispatcher.load_failed", location=location, error=str(exc))
        service.start()

    @runtime.on_stop
    async def _stop() -> None:
        await service.stop()

    @runtime.command("ds_list", ((), ("full",)), doc="the dispatcher sets and their state")
    async def ds_list(full: Any = None) -> Any:
        return service.sets.mi_list(full is not None and str(full) not in ("", "0"))

    @runtime.command("ds_set_state", (("state", "group", "address"),
                                      ("state", "group", "address", "partition")),
                     fanout=True, doc="set a destination Active, Inactive or Probing")
    async def ds_set_state(state: Any, group: Any, address: Any,
                           partition: Any = None) -> Any:
        code = MI_STATES.get(str(state).strip().lower()[:1])
        if code is None:
            raise MiError(BAD_REQUEST, "Bad state value")
        if partition not in (None, "", "default"):
            raise MiError(NOT_FOUND, "Partition not found")
        try:
            change = service.sets.set_state(int_param(group, "group"), str(address), code)
        except DispatcherError:
            raise MiError(NOT_FOUND, "Destination not found") from None
        if change is not None:
            service.changed(change)
        return "OK"

    @runtime.command("ds_reload", fanout=True, doc="read the dispatcher table again")
    async def ds_reload() -> Any:
        try:
            await service.reload()
        except Exception as exc:
            service.log.warning("dispatcher.reload_failed", error=str(exc))
            raise MiError(BAD_REQUEST, "ERROR Reloading data") from None
        return "OK"

    def values() -> dict[str, int]:
        dests = [d for s in service.sets.sets.values() for d in s.dests]
        return {"destinations": len(dests),
                "active": sum(1 for d in dests if d.state == 0),
                "probing": sum(1 for d in dests if d.state == 2),
                "inactive": sum(1 for d in dests if d.state == 1),
                "probes_sent": service.probes_sent}

    runtime.stats.group("dispatcher", values)
    return service
