"""SIP capture at the edge (OpenSIPS ``siptrace``): every SIP message a worker receives
or sends, as HEP v3 (:mod:`services.edge.hep`) to a capture server such as Homer.

``[edge] hep_dest`` (``host:port``, UDP) names the server, ``hep_capture_id`` and
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
import socket
import time
from typing import TYPE_CHECKING, Any

import structlog

from services.edge.hep import Capture, call_id_of, encode
from shared.rpc.jsonrpc import BAD_REQUEST, MiError

if TYPE_CHECKING:
    from services.edge.addresses import Destination, Source
    from services.edge.app import EdgeApp
    from services.edge.config import EdgeConfig
    from shared.service.runtime import ServiceRuntime


def parse_dest(value: str) -> tuple[str, int]:
    """``host:port`` (``hep:`` / ``udp:`` prefixes and ``[v6]`` accepted)."""
    text = value.strip()
    for prefix in ("hep:", "udp:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"[edge].hep_dest must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


class HepTracer:
    def __init__(self, app: EdgeApp, dest: tuple[str, int], *, capture_id: int,
                 auth_key: str) -> None:
        self.app = app
        self.dest = dest
        self.capture_id = capture_id
        self.auth_key = auth_key
        family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.requests = 0
        self.replies = 0
        self.errors = 0

    def received(self, data: bytes, source: Source) -> None:
        itf = source.interface
        self._emit(data, (source.host, source.port), (itf.host, itf.port), itf.transport)

    def sent(self, data: bytes, dest: Destination) -> None:
        itf = dest.interface or next(iter(self.app.interfaces), None)
        local = (itf.host, itf.sent_by_port) if itf is not None else ("0.0.0.0", 0)
        self._emit(data, local, (dest.host, dest.port), dest.transport)

    def _emit(self, data: bytes, src: tuple[str, int], dst: tuple[str, int],
              transport: str) -> None:
        if len(data) <= 4:  # a CRLF keep-alive is not a SIP message
            return
        try:
            packet = encode(Capture(data, src, dst, transport, time.time(), call_id_of(data)),
                            capture_id=self.capture_id, auth_key=self.auth_key)
            self.sock.sendto(packet, self.dest)
        except (OSError, ValueError):
            self.errors += 1
            return
        if data.startswith(b"SIP/"):
            self.replies += 1
        else:
            self.requests += 1

    def close(self) -> None:
        self.sock.close()


def attach_siptrace(runtime: ServiceRuntime, app: EdgeApp, config: EdgeConfig) -> None:
    log = structlog.get_logger("edge")
    tracer: HepTracer | None = None
    if config.hep_dest:
        tracer = HepTracer(app, parse_dest(config.hep_dest), capture_id=config.hep_capture_id,
                           auth_key=config.hep_auth_key)
        if config.sip_trace:
            app.capture = tracer

    @runtime.command("sip_trace", ((), ("trace_mode",)), fanout=True,
                     doc="SIP capture (HEP v3) on or off; without a mode, its state")
    async def sip_trace(trace_mode: Any = None) -> Any:
        if trace_mode is None:
            return "on" if app.capture is not None else "off"
        mode = str(trace_mode).strip().lower()
        if mode not in ("on", "off"):
            raise MiError(BAD_REQUEST, "Bad parameter value")
        if tracer is None:
            raise MiError(BAD_REQUEST, "No trace destination", "[edge] hep_dest is not set")
        app.capture = tracer if mode == "on" else None
        log.info("siptrace.mode", mode=mode, dest=f"{tracer.dest[0]}:{tracer.dest[1]}")
        return "OK"

    def values() -> dict[str, int]:
        if tracer is None:
            return {"traced_requests": 0, "traced_replies": 0, "send_errors": 0}
        return {"traced_requests": tracer.requests, "traced_replies": tracer.replies,
                "send_errors": tracer.errors}

    runtime.stats.group("siptrace", values)

    @runtime.on_stop
    async def _close() -> None:
        app.capture = None
        if tracer is not None:
            tracer.close()
        await asyncio.sleep(0)
