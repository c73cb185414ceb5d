"""The capture hub (services/edge/tracer.py) between the edge's hot path and the trace
ids: installed only while something is traced, filters starting traces on initial
requests, both directions captured, trace on/off, trace ids dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.edge.addresses import Destination, Interface, Source
from services.edge.hep import Capture
from services.edge.trace_table import filters_of
from services.edge.tracer import CaptureHub, TraceId

ITF = Interface("udp", "127.0.0.1", 5060)
CALLER = Source(ITF, "192.0.2.1", 5070)
CALLEE = Destination("udp", "192.0.2.2", 5080, ITF)


@dataclass
class ListSink:
    uri: str = "list:"
    got: list[Capture] = field(default_factory=list)
    closed: bool = False

    def emit(self, capture: Capture) -> bool:
        self.got.append(capture)
        return True

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeApp:
    capture: Any = None
    interfaces: list[Interface] = field(default_factory=lambda: [ITF])
    services: dict[str, Any] = field(default_factory=dict)


def sip(start: str, cseq: str, call_id: str, user: str = "bob", to_tag: str = "") -> bytes:
    to = f"<sip:{user}@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{start}\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK{call_id}{cseq[0]}\r\n"
            f"From: <sip:alice@example.com>;tag=a\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def make() -> tuple[CaptureHub, FakeApp, ListSink]:
    app = FakeApp()
    now = [0.0]
    hub = CaptureHub(app, clock=lambda: now[0])  # type: ignore[arg-type]
    sink = ListSink()
    hub.ids["dyn"] = TraceId("dyn", "list:", sink, dynamic=True,
                             filters=filters_of(["callee=bob"]))
    return hub, app, sink


def test_idle_hub_is_not_installed_and_a_filter_installs_it() -> None:
    app = FakeApp()
    hub = CaptureHub(app)  # type: ignore[arg-type]
    hub.refresh()
    assert app.capture is None
    hub, app, _sink = make()
    hub.refresh()
    assert app.capture is hub
    hub.ids["dyn"].on = False
    hub.refresh()
    assert app.capture is None


def test_a_matching_call_is_captured_both_ways_and_another_is_not() -> None:
    hub, _app, sink = make()
    hub.refresh()
    hub.received(sip("INVITE sip:carol@example.com SIP/2.0", "1 INVITE", "c0", "carol"), CALLER)
    invite = sip("INVITE sip:bob@example.com SIP/2.0", "1 INVITE", "c1")
    hub.received(invite, CALLER)
    hub.sent(invite, CALLEE)
    ok = sip("SIP/2.0 200 OK", "1 INVITE", "c1", to_tag="b")
    hub.received(ok, Source(ITF, "192.0.2.2", 5080))
    hub.sent(ok, Destination("udp", "192.0.2.1", 5070, ITF))
    bye = sip("BYE sip:alice@192.0.2.1 SIP/2.0", "2 BYE", "c1", to_tag="b")
    hub.received(bye, Source(ITF, "192.0.2.2", 5080))
    assert [c.correlation for c in sink.got] == ["c1"] * 5
    assert sink.got[0].src == ("192.0.2.1", 5070) and sink.got[0].dst == ("127.0.0.1", 5060)
    assert sink.got[1].dst == ("192.0.2.2", 5080)
    assert hub.ids["dyn"].messages == 5 and hub.messages == 5
    # trace off: nothing, even for the traced call
    hub.global_on = False
    hub.received(bye, Source(ITF, "192.0.2.2", 5080))
    assert len(sink.got) == 5


def test_keepalives_are_not_messages() -> None:
    hub, _app, sink = make()
    hub.received(b"\r\n\r\n", CALLER)
    hub.sent(b"\r\n", CALLEE)
    assert sink.got == []
