"""Drive a sans-IO ProxyCore in memory: feed bytes from addresses, collect what it sends."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from services.edge.addresses import Interface, Source
from services.edge.core import Await, ProxyCore, Send
from services.edge.routing import LoadedRouter, RouterSetup, load_router
from shared.sip import Request, Response, parse_message
from shared.transaction import TimerSettings

UDP = Interface("udp", "127.0.0.1", 5060)
TCP = Interface("tcp", "127.0.0.1", 5060)
UAC = ("127.0.0.1", 5091)


class Harness:
    def __init__(self, router: Any = None, *, local_domains: tuple[str, ...] = (),
                 static_routes: dict[str, str] | None = None,
                 trusted: tuple[str, ...] = ("127.0.0.0/8",),
                 settings: TimerSettings | None = None, auth: Any = None) -> None:
        if router is None:
            router = load_router("services.edge.default_routing",
                                 RouterSetup(frozenset(local_domains), static_routes or {}))
        elif not isinstance(router, LoadedRouter):
            router = LoadedRouter(router.request_route, getattr(router, "reply_route", None),
                                  getattr(router, "failure_route", None), "test")
        self.core = ProxyCore(
            [UDP, TCP], router, settings=settings or TimerSettings(t1=0.5, timer_c=10),
            local_domains=local_domains, static_routes=static_routes,
            trusted=[ipaddress.ip_network(n) for n in trusted], auth=auth)
        self.now = 0.0
        self.sent: list[Send] = []
        self.awaits: list[Await] = []

    def feed(self, data: bytes | str, peer: tuple[str, int] = UAC, itf: Interface = UDP,
             conn: int | None = None) -> list[Send]:
        raw = data.encode() if isinstance(data, str) else data
        outs = self.core.receive(raw, Source(itf, peer[0], peer[1], conn), self.now)
        return self._collect(outs)

    def tick(self, seconds: float) -> list[Send]:
        self.now += seconds
        outs = []
        while (deadline := self.core.next_deadline()) is not None and deadline <= self.now:
            outs.extend(self.core.handle_timer(deadline))
        return self._collect(outs)

    def _collect(self, outs: list[Any]) -> list[Send]:
        sends = [o for o in outs if isinstance(o, Send)]
        self.awaits.extend(o for o in outs if isinstance(o, Await))
        self.sent.extend(sends)
        return sends


def unsigned(values: list[str]) -> list[str]:
    """Record-Route values without our signature parameter (services/edge/rr_signing.py)."""
    return [re.sub(r";sg=[0-9a-f]+", "", v) for v in values]


def msg(send: Send) -> Request | Response:
    return parse_message(send.data)


def to(sends: list[Send], port: int) -> list[Request | Response]:
    return [parse_message(s.data) for s in sends if s.dest.port == port]


def invite(uri: str = "sip:bob@127.0.0.1:5090", *, branch: str = "z9hG4bKuac1",
           method: str = "INVITE", extra: str = "", mf: int = 70, call_id: str = "c1",
           to_tag: str | None = None, port: int = 5091, transport: str = "UDP") -> str:
    to_hdr = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        f"Max-Forwards: {mf}\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: {to_hdr}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:alice@127.0.0.1:{port}>\r\n"
        f"{extra}Content-Length: 0\r\n\r\n")


def answer(req: Request | Response, status: int, *, tag: str = "b1", extra: str = "") -> str:
    assert isinstance(req, Request), req  # what the proxy forwarded to a UAS
    vias = "".join(f"Via: {v}\r\n" for v in req.get_all("Via"))
    return (
        f"SIP/2.0 {status} X\r\n{vias}From: {req.get('From')}\r\n"
        f"To: {req.get('To')};tag={tag}\r\nCall-ID: {req.call_id}\r\n"
        f"CSeq: {req.cseq.number} {req.cseq.method}\r\n{extra}Content-Length: 0\r\n\r\n")
