"""SIP capture at the edge (OpenSIPS ``siptrace``): every SIP message a worker receives
or sends, as HEP v3 (:mod:`services.edge.hep`) to a capture server such as Homer.

``[edge] hep_dest`` names the server: ``host:port`` (HEP over UDP), ``host:port;transport=tcp``
(HEP over TCP) or ``file:/path.pcap`` (a pcap file), see
:mod:`services.edge.capture_sinks`; ``hep_capture_id`` and
``hep_auth_key`` go in every packet, ``sip_trace`` is the state at start (off, as
OpenSIPS's ``trace_on``). MI ``sip_trace [on|off]`` (OpenSIPS 2.4: without a parameter it
answers the state, ``"on"`` or ``"off"``; through the gateway every edge worker is set)
switches it at run time. While off the edge's hot path pays one attribute test.
Statistics ``siptrace:`` (``traced_requests``, ``traced_replies``, ``send_errors``).
A message whose packet cannot be sent (too big for HEP's 16-bit length, a refused
send) is counted and skipped: capture never stops SIP.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from services.edge.capture_sinks import Sink, open_sink, parse_uri
from services.edge.tracer import hub_of, inbound, outbound
from shared.rpc.jsonrpc import BAD_REQUEST, MiError

if TYPE_CHECKING:
    from services.edge.addresses import Destination, Source
    from services.edge.app import EdgeApp
    from services.edge.config import EdgeConfig
    from shared.service.runtime import ServiceRuntime


def parse_dest(value: str) -> tuple[str, int]:
    """``host:port`` of a HEP destination (``hep:`` / ``udp:`` / ``tcp:`` prefixes,
    ``;transport=`` and ``[v6]`` accepted)."""
    kind, host, port = parse_uri(value)
    if kind == "file" or not isinstance(port, int):
        raise ValueError(f"[edge].hep_dest names no HEP server: {value!r}")
    return host, port


class HepTracer:
    """sip_trace: every message a worker receives or sends, to one destination."""

    def __init__(self, app: EdgeApp, sink: Sink) -> None:
        self.app = app
        self.sink = sink
        self.requests = 0
        self.replies = 0
        self.errors = 0

    @property
    def dest(self) -> str:
        return self.sink.uri

    def received(self, data: bytes, source: Source) -> None:
        if len(data) > 4:  # a CRLF keep-alive is not a SIP message
            self._count(data, self.sink.emit(inbound(self.app, data, source)))

    def sent(self, data: bytes, dest: Destination) -> None:
        if len(data) > 4:
            self._count(data, self.sink.emit(outbound(self.app, data, dest)))

    def _count(self, data: bytes, ok: bool) -> None:
        if not ok:
            self.errors += 1
        elif data.startswith(b"SIP/"):
            self.replies += 1
        else:
            self.requests += 1

    def close(self) -> None:
        self.sink.close()


def attach_siptrace(runtime: ServiceRuntime, app: EdgeApp, config: EdgeConfig) -> None:
    log = structlog.get_logger("edge")
    tracer: HepTracer | None = None
    if config.hep_dest:
        tracer = HepTracer(app, open_sink(config.hep_dest, capture_id=config.hep_capture_id,
                                          auth_key=config.hep_auth_key))
    hub = hub_of(app)  # services/edge/tracer.py: every capture goes through it
    if tracer is not None and config.sip_trace:
        hub.set_siptrace(tracer)

    @runtime.command("sip_trace", ((), ("trace_mode",)), fanout=True,
                     doc="SIP capture (HEP v3) on or off; without a mode, its state")
    async def sip_trace(trace_mode: Any = None) -> Any:
        if trace_mode is None:
            return "on" if hub.siptrace is not None else "off"
        mode = str(trace_mode).strip().lower()
        if mode not in ("on", "off"):
            raise MiError(BAD_REQUEST, "Bad parameter value")
        if tracer is None:
            raise MiError(BAD_REQUEST, "No trace destination", "[edge] hep_dest is not set")
        hub.set_siptrace(tracer if mode == "on" else None)
        log.info("siptrace.mode", mode=mode, dest=tracer.dest)
        return "OK"

    def values() -> dict[str, int]:
        if tracer is None:
            return {"traced_requests": 0, "traced_replies": 0, "send_errors": 0}
        return {"traced_requests": tracer.requests, "traced_replies": tracer.replies,
                "send_errors": tracer.errors}

    runtime.stats.group("siptrace", values)

    @runtime.on_stop
    async def _close() -> None:
        hub.set_siptrace(None)
        if tracer is not None:
            tracer.close()
        await asyncio.sleep(0)
