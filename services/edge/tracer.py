"""Per-call SIP tracing at the edge (OpenSIPS ``tracer``): ``ctx.trace()`` in routing,
dynamic trace filters by MI (``trace``, ``trace_start``, ``trace_stop``), and the
capture hub every SIP capture of a worker goes through (``sip_trace`` included).

Trace ids (OpenSIPS ``trace_id``) are named destinations: ``[edge] trace_ids =
["name=URI", ...]`` with the URIs of :mod:`services.edge.capture_sinks` (HEP v3 over UDP
or TCP, or a pcap file). Routing calls ``ctx.trace(trace_id, scope)`` on a request to
capture its call in that scope (:mod:`services.edge.trace_table`: ``d`` dialog, ``t``
transaction, ``m`` message), replies and in-dialog requests of a traced dialog included,
both directions. ``trace_start id uri [filter] [scope]`` adds a trace id at run time that
traces, by itself, every new call its filters (``caller=``, ``callee=``, ``ip=``) match;
``trace_stop id`` removes it. ``trace [on|off] [id]`` switches tracing (every trace id,
or one) and, without a mode, lists the trace ids. Through the gateway every edge worker
is set (``fanout``); each worker opens its own connection or appends to the same file.

The hub is installed as ``app.capture`` only while something is to be captured (sip_trace
on, a dynamic filter, or a traced call): otherwise the edge's hot path pays one attribute
test. Statistics ``tracer:`` (``traced_messages``, ``traced_calls``, ``send_errors``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from services.edge.capture_sinks import Sink, open_sink
from services.edge.hep import Capture, call_id_of
from services.edge.trace_table import (
    SCOPES,
    FilterSet,
    TraceTable,
    call_id,
    filters_of,
    initial_request,
)
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, MiError

if TYPE_CHECKING:
    from services.edge.addresses import Destination, Source
    from services.edge.app import EdgeApp
    from services.edge.config import EdgeConfig
    from services.edge.routing import RouteContext
    from shared.service.runtime import ServiceRuntime

EXPIRE_EVERY = 10.0


def inbound(app: EdgeApp, data: bytes, source: Source, cid: str | None = None) -> Capture:
    itf = source.interface
    return Capture(data, (source.host, source.port), (itf.host, itf.port), itf.transport,
                   time.time(), call_id_of(data) if cid is None else cid)


def outbound(app: EdgeApp, data: bytes, dest: Destination, cid: str | None = None
             ) -> Capture:
    itf = dest.interface or next(iter(app.interfaces), None)
    local = (itf.host, itf.sent_by_port) if itf is not None else ("0.0.0.0", 0)
    return Capture(data, local, (dest.host, dest.port), dest.transport, time.time(),
                   call_id_of(data) if cid is None else cid)


@dataclass
class TraceId:
    name: str
    uri: str
    sink: Sink
    dynamic: bool = False
    filters: FilterSet = field(default_factory=FilterSet)
    scope: str = "d"
    on: bool = True
    messages: int = 0

    def answer(self) -> dict[str, Any]:
        return {"id": self.name, "uri": self.uri, "state": "on" if self.on else "off",
                "dynamic": self.dynamic, "scope": self.scope,
                "filters": [str(f) for f in self.filters.filters],
                "messages": self.messages, "pid": os.getpid()}


class CaptureHub:
    """``app.capture`` while anything is captured: sip_trace's all-messages tracer and
    the per-call trace ids."""

    def __init__(self, app: EdgeApp, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self.siptrace: Any = None  # services/edge/siptrace.HepTracer while sip_trace is on
        self.ids: dict[str, TraceId] = {}
        self.global_on = True  # MI `trace on|off` without an id
        self.table = TraceTable()
        self.messages = 0
        self.errors = 0
        self._next_expiry = 0.0
        self.log = structlog.get_logger("edge")

    # -- activation ------------------------------------------------------------------------
    def refresh(self) -> None:
        dynamic = self.global_on and any(t.dynamic and t.on for t in self.ids.values())
        active = self.siptrace is not None or dynamic or bool(self.table.calls)
        self.app.capture = self if active else None

    def set_siptrace(self, tracer: Any) -> None:
        self.siptrace = tracer
        self.refresh()

    # -- the capture interface the edge's hot path calls ------------------------------------
    def received(self, data: bytes, source: Source) -> None:
        if self.siptrace is not None:
            self.siptrace.received(data, source)
        if len(data) <= 4 or not self.global_on:
            return
        cid = call_id(data)
        now = self.clock()
        targets = self.table.targets(cid, data, now) if self.table.calls else set()
        if not targets and self._dynamic():
            request = initial_request(data)
            if request is not None:
                for tid in self.ids.values():
                    if tid.dynamic and tid.on and tid.filters.matches(request, source.host):
                        cseq = request.cseq
                        self.table.add(cid, tid.name, tid.scope, cseq.number, cseq.method,
                                       now)
                        self.log.info("tracer.call", trace_id=tid.name, call_id=cid)
                targets = self.table.targets(cid, data, now)
        if targets:
            self._emit(targets, inbound(self.app, data, source, cid))
        self._maybe_expire(now)

    def sent(self, data: bytes, dest: Destination) -> None:
        if self.siptrace is not None:
            self.siptrace.sent(data, dest)
        if len(data) <= 4 or not self.global_on or not self.table.calls:
            return
        cid = call_id(data)
        targets = self.table.targets(cid, data, self.clock())
        if targets:
            self._emit(targets, outbound(self.app, data, dest, cid))

    def _dynamic(self) -> bool:
        return any(t.dynamic and t.on for t in self.ids.values())

    def _emit(self, targets: set[str], capture: Capture) -> None:
        for name in targets:
            tid = self.ids.get(name)
            if tid is None or not tid.on:
                continue
            if tid.sink.emit(capture):
                tid.messages += 1
                self.messages += 1
            else:
                self.errors += 1

    def _maybe_expire(self, now: float) -> None:
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRE_EVERY
            self.table.expire(now)
            self.refresh()

    # -- ctx.trace() ------------------------------------------------------------------------
    def trace_request(self, ctx: RouteContext, trace_id: str, scope: str) -> int:
        if scope not in SCOPES:
            raise ValueError(f"trace scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if not trace_id:
            trace_id = next((t.name for t in self.ids.values() if not t.dynamic), "")
        tid = self.ids.get(trace_id)
        if tid is None:
            raise ValueError(f"no trace id {trace_id!r} ([edge] trace_ids)")
        if not (self.global_on and tid.on):
            return -1
        request = ctx.request
        cid = request.call_id
        was_active = self.app.capture is self
        known = cid in self.table.calls and trace_id in self.table.calls[cid].ids
        cseq = request.cseq
        self.table.add(cid, trace_id, scope, cseq.number, request.method, self.clock())
        self.refresh()
        if not (known and was_active):
            # The hub was not looking when this request arrived: capture it now.
            itf = ctx.source.interface
            self._emit({trace_id}, Capture(
                request.serialize(), (ctx.source.host, ctx.source.port), (itf.host, itf.port),
                itf.transport, time.time(), cid))
        return 1

    def close(self) -> None:
        for tid in self.ids.values():
            tid.sink.close()
        self.ids.clear()
        self.app.capture = None


def hub_of(app: EdgeApp) -> CaptureHub:
    """The worker's capture hub (made on first use)."""
    hub = app.services.get("tracer")
    if not isinstance(hub, CaptureHub):
        hub = CaptureHub(app)
        app.services["tracer"] = hub
    return hub


def route_trace(ctx: RouteContext, trace_id: str, scope: str) -> int:
    hub = ctx.services.get("tracer")
    if not isinstance(hub, CaptureHub):
        raise ValueError("no tracer in this edge")
    return hub.trace_request(ctx, trace_id, scope)


def parse_trace_ids(entries: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, uri = entry.partition("=")
        if not sep or not name.strip() or not uri.strip():
            raise ValueError(f"[edge].trace_ids entries are name=URI, not {entry!r}")
        out[name.strip()] = uri.strip()
    return out


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise MiError(BAD_REQUEST, "Bad parameter value", "filter: a string or a list")


def attach_tracer(runtime: ServiceRuntime, app: EdgeApp, config: EdgeConfig) -> CaptureHub:
    hub = hub_of(app)
    log = structlog.get_logger("edge")
    capture_id, auth_key = config.hep_capture_id, config.hep_auth_key
    for name, uri in parse_trace_ids(config.trace_ids).items():
        hub.ids[name] = TraceId(name, uri, open_sink(uri, capture_id=capture_id,
                                                      auth_key=auth_key))

    @runtime.command("trace", ((), ("trace_mode",), ("trace_mode", "id")), fanout=True,
                     doc="per-call tracing on or off (all trace ids, or one); "
                         "without a mode, the trace ids")
    async def trace(trace_mode: Any = None, id: Any = None) -> Any:
        if trace_mode is None:
            return {"global": "on" if hub.global_on else "off",
                    "ids": [t.answer() for t in hub.ids.values()]}
        mode = str(trace_mode).strip().lower()
        if mode not in ("on", "off"):
            raise MiError(BAD_REQUEST, "Bad parameter value", "trace_mode: on or off")
        if id is None:
            hub.global_on = mode == "on"
        else:
            tid = hub.ids.get(str(id))
            if tid is None:
                raise MiError(NOT_FOUND, "Unknown trace id", str(id))
            tid.on = mode == "on"
        hub.refresh()
        log.info("tracer.mode", mode=mode, trace_id=id)
        return "OK"

    @runtime.command("trace_start", (("id", "uri"), ("id", "uri", "filter"),
                                     ("id", "uri", "filter", "scope")), fanout=True,
                     doc="a dynamic trace id capturing every new call its filters match")
    async def trace_start(id: Any, uri: Any, filter: Any = None,
                          scope: Any = None) -> Any:
        name, dest = str(id).strip(), str(uri).strip()
        if not name:
            raise MiError(BAD_REQUEST, "Bad parameter value", "id is empty")
        if name in hub.ids:
            raise MiError(BAD_REQUEST, "Trace id exists", name)
        sc = "d" if scope is None else str(scope).strip().lower()[:1]
        if sc not in SCOPES:
            raise MiError(BAD_REQUEST, "Bad parameter value", "scope: dialog, transaction "
                          "or message (d, t, m)")
        try:
            filters = filters_of(_list(filter))
            sink = open_sink(dest, capture_id=capture_id, auth_key=auth_key)
        except ValueError as exc:
            raise MiError(BAD_REQUEST, "Bad parameter value", str(exc)) from None
        except OSError as exc:
            raise MiError(BAD_REQUEST, "Cannot open the destination", str(exc)) from None
        hub.ids[name] = TraceId(name, dest, sink, dynamic=True, filters=filters, scope=sc)
        hub.refresh()
        log.info("tracer.start", trace_id=name, uri=dest, filters=_list(filter), scope=sc)
        return "OK"

    @runtime.command("trace_stop", (("id",),), fanout=True,
                     doc="remove a dynamic trace id (trace_start)")
    async def trace_stop(id: Any) -> Any:
        name = str(id).strip()
        tid = hub.ids.get(name)
        if tid is None:
            raise MiError(NOT_FOUND, "Unknown trace id", name)
        if not tid.dynamic:
            raise MiError(BAD_REQUEST, "Not a dynamic trace id", name)
        del hub.ids[name]
        hub.table.drop_id(name)
        tid.sink.close()
        hub.refresh()
        log.info("tracer.stop", trace_id=name, messages=tid.messages)
        return "OK"

    runtime.stats.group("tracer", lambda: {
        "traced_messages": hub.messages, "traced_calls": len(hub.table.calls),
        "send_errors": hub.errors})

    @runtime.on_stop
    async def _close() -> None:
        hub.close()
        await asyncio.sleep(0)

    return hub
