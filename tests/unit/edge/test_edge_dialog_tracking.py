"""Dialog tracking and the Uac API in the sans-IO proxy core (no sockets: the Harness
feeds bytes and collects sends; the dialog client is a recorder of events)."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge.dialog_tracking import DialogTracker
from services.edge.routing import Target
from services.edge.uac_core import UacOwner, build_request
from shared.sip import Request, Response, parse_message

from .proxyharness import UAC, UDP, Harness, answer, invite, msg, to

UAS = 5090


class Recorder:
    """Stands for DialogClient: what the tracker emits, in order."""

    available = True

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        out = []
        for e in self.events:
            kind = e.WhichOneof("kind")
            if kind == "reply":
                out.append(f"reply {e.reply.status}")
            elif kind == "request":
                out.append(e.request.method)
            else:
                out.append(kind)
        return out


def tracked(router: Any = None) -> tuple[Harness, Recorder]:
    h = Harness(router)
    rec = Recorder()
    tracker = DialogTracker(rec)  # type: ignore[arg-type]
    tracker.set_interfaces([UDP])
    tracker.edge_uac = "127.0.0.1:7000"
    h.core.tracker = tracker
    return h, rec


def call(h: Harness) -> Request:
    """An INVITE through the edge answered 180 then 200 (with the callee's Contact)."""
    sent = h.feed(invite())
    fwd = msg(next(s for s in sent if s.dest.port == UAS))
    assert isinstance(fwd, Request)
    h.feed(answer(fwd, 180), peer=("127.0.0.1", UAS))
    rr = "".join(f"Record-Route: {v}\r\n" for v in fwd.get_all("Record-Route"))
    h.feed(answer(fwd, 200, extra=f"Contact: <sip:bob@127.0.0.1:{UAS}>\r\n{rr}"),
           peer=("127.0.0.1", UAS))
    return fwd


def in_dialog(method: str, cseq: int, route: str) -> str:
    return (f"{method} sip:bob@127.0.0.1:{UAS} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{UAC[1]};branch=z9hG4bK{method}{cseq};rport\r\n"
            f"Route: {route}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\n"
            f"To: <sip:bob@127.0.0.1>;tag=b1\r\nCall-ID: c1\r\nCSeq: {cseq} {method}\r\n"
            "Content-Length: 0\r\n\r\n")


def test_a_record_routed_call_is_reported_from_invite_to_bye() -> None:
    h, rec = tracked()
    fwd = call(h)
    route = fwd.get_all("Record-Route")[0]
    h.feed(in_dialog("ACK", 1, route))
    h.feed(in_dialog("BYE", 2, route))
    assert rec.kinds() == ["create", "reply 180", "reply 200", "ACK", "BYE"]
    create = rec.events[0].create
    assert (create.callid, create.from_tag, create.ruri) == ("c1", "a1", f"sip:bob@127.0.0.1:{UAS}")
    assert create.source == f"udp:127.0.0.1:{UAC[1]}" and create.edge_addrs == ["127.0.0.1:5060"]
    assert create.edge_uac == "127.0.0.1:7000" and create.contact == f"sip:alice@127.0.0.1:{UAC[1]}"
    ok = rec.events[2].reply
    assert ok.to_tag == "b1" and ok.contact == f"sip:bob@127.0.0.1:{UAS}"
    assert list(ok.record_route) == [route] and ok.source == f"udp:127.0.0.1:{UAS}"
    assert rec.events[4].request.cseq == 2


class CountingTracker(DialogTracker):
    """A tracker that counts the core's calls (what each returned is the base's)."""

    def __init__(self, client: Any, *, enabled: bool = True) -> None:
        super().__init__(client, enabled=enabled)
        self.calls = 0

    def forwarded(self, ctx: Any, targets: Any) -> None:
        self.calls += 1
        super().forwarded(ctx, targets)

    def relayed(self, ctx: Any, response: Any, dest: Any = None) -> None:
        self.calls += 1
        super().relayed(ctx, response, dest)


@pytest.mark.parametrize(("available", "enabled"), [(True, True), (False, True), (True, False)])
def test_the_core_calls_the_tracker_only_when_it_would_report(
        available: bool, enabled: bool) -> None:
    """`ProxyCore._tracking` and the `dialog_options` test before `relayed` are the
    tracker's own first tests: with a dialog service known the call is reported as when
    the core called the tracker for every message (the test above), and without one (the
    standalone edge of `make bench`) or with tracking off the tracker is not called."""
    h = Harness()
    rec = Recorder()
    rec.available = available
    tracker = CountingTracker(rec, enabled=enabled)
    tracker.set_interfaces([UDP])
    h.core.tracker = tracker
    route = call(h).get_all("Record-Route")[0]
    h.feed(in_dialog("ACK", 1, route))
    h.feed(in_dialog("BYE", 2, route))
    if available and enabled:
        assert rec.kinds() == ["create", "reply 180", "reply 200", "ACK", "BYE"]
        assert tracker.calls == 5  # INVITE, 180, 200 (relayed: no 100), ACK, BYE
    else:
        assert rec.kinds() == [] and tracker.calls == 0


def test_routing_options_travel_in_the_create_event() -> None:
    class Router:
        def request_route(self, request: Any, ctx: Any) -> None:
            ctx.dialog.set_timeout(30.2)
            ctx.dialog.set_profile("caller", "alice")
            ctx.dialog.set_profile("calls")
            ctx.dialog.set_sharing_tag("vip")
            ctx.acc.extra["account"] = 42
            ctx.forward()  # no record_route(): setting dialog options record-routes

    h, rec = tracked(Router())
    sent = h.feed(invite())
    fwd = msg(next(s for s in sent if s.dest.port == UAS))
    assert fwd.get_all("Record-Route")
    create = rec.events[0].create
    assert create.timeout == 31 and create.timeout_set and create.sharing_tag == "vip"
    assert [(p.name, p.value, p.has_value) for p in create.profiles] == [
        ("caller", "alice", True), ("calls", "", False)]
    assert dict(create.extra) == {"account": "42"}


def test_an_invite_that_is_not_record_routed_or_disabled_is_not_tracked() -> None:
    class NoRR:
        def request_route(self, request: Any, ctx: Any) -> None:
            ctx.forward()

    h, rec = tracked(NoRR())
    h.feed(invite())
    assert rec.events == []

    class Off:
        def request_route(self, request: Any, ctx: Any) -> None:
            ctx.dialog.disable()
            ctx.record_route()
            ctx.forward()

    h, rec = tracked(Off())
    sent = h.feed(invite())
    fwd = msg(next(s for s in sent if s.dest.port == UAS))
    h.feed(answer(fwd, 200), peer=("127.0.0.1", UAS))
    assert rec.events == []


def test_a_reserved_place_is_given_back_when_routing_answers_itself() -> None:
    class Full:
        def request_route(self, request: Any, ctx: Any) -> None:
            ctx.dialog.reserved = True  # as set_profile_limited leaves it
            ctx.reply(486, "Busy Here")

    h, rec = tracked(Full())
    h.feed(invite())
    assert rec.kinds() == ["reply 486"]


def test_a_failure_is_reported_as_the_final_reply() -> None:
    h, rec = tracked()
    sent = h.feed(invite())
    fwd = msg(next(s for s in sent if s.dest.port == UAS))
    h.feed(answer(fwd, 486), peer=("127.0.0.1", UAS))
    assert rec.kinds() == ["create", "reply 486"]


def test_uac_request_goes_to_its_route_and_gets_its_final_response() -> None:
    h = Harness()
    finals: list[tuple[int, str]] = []
    bye = build_request("BYE", f"sip:bob@127.0.0.1:{UAS}", [
        ("From", "<sip:alice@127.0.0.1>;tag=a1"), ("To", "<sip:bob@127.0.0.1>;tag=b1"),
        ("Call-ID", "c9"), ("CSeq", "7 BYE")], route=["<sip:127.0.0.1:5999;lr>"])
    owner = UacOwner(bye, lambda s, r, resp: finals.append((s, r)), h.core)
    outs = h.core.uac_request(bye, Target(bye.uri), owner, h.now)
    (sent,) = h._collect(outs)
    assert (sent.dest.host, sent.dest.port) == ("127.0.0.1", 5999)  # the first Route hop
    wire = msg(sent)
    assert isinstance(wire, Request)
    assert (wire.top_via.branch or "").startswith("z9hG4bK")
    assert wire.get("Max-Forwards") == "70" and wire.cseq.number == 7
    h.feed(answer(wire, 200), peer=("127.0.0.1", 5999))
    assert finals == [(200, "X")]


def test_uac_request_times_out_with_408_and_an_invite_2xx_is_acked() -> None:
    h = Harness()
    finals: list[int] = []
    opt = build_request("OPTIONS", "sip:127.0.0.1:5998", [("To", "<sip:127.0.0.1>")])
    owner = UacOwner(opt, lambda s, r, resp: finals.append(s), h.core)
    h._collect(h.core.uac_request(opt, Target(opt.uri), owner, h.now))
    for _ in range(80):
        h.tick(0.5)
    assert finals == [408]
    inv = build_request("INVITE", f"sip:srs@127.0.0.1:{UAS}", [
        ("To", "<sip:srs@127.0.0.1>"), ("Contact", "<sip:rec@127.0.0.1:5060>")])
    got: list[Response | None] = []
    owner = UacOwner(inv, lambda s, r, resp: got.append(resp), h.core)
    (sent,) = h._collect(h.core.uac_request(inv, Target(inv.uri), owner, h.now))
    wire = msg(sent)
    assert isinstance(wire, Request) and wire.from_tag  # generated (§8.1.1.3)
    acks = h.feed(answer(wire, 200, extra=f"Contact: <sip:srs@127.0.0.1:{UAS}>\r\n"),
                  peer=("127.0.0.1", UAS))
    assert got and got[0] is not None and got[0].status == 200
    ack = parse_message(acks[0].data)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.cseq.number == 1
    assert ack.uri == f"sip:srs@127.0.0.1:{UAS}"


def test_cancel_invite_cancels_a_pending_call_for_its_caller() -> None:
    h = Harness()
    sent = h.feed(invite())
    fwd = msg(next(s for s in sent if s.dest.port == UAS))
    h.feed(answer(fwd, 180), peer=("127.0.0.1", UAS))
    found, outs = h.core.cancel_invite("c1", "a1", h.now)
    sends = h._collect(outs)
    assert found and [m.method for m in to(sends, UAS)] == ["CANCEL"]  # type: ignore[union-attr]
    cancel = to(sends, UAS)[0]
    assert isinstance(cancel, Request)
    h.feed(answer(fwd, 487), peer=("127.0.0.1", UAS))
    replies = [m for m in to(h.sent, UAC[1]) if isinstance(m, Response)]
    assert replies[-1].status == 487
    assert h.core.cancel_invite("c1", "a1", h.now)[0] is False  # answered: nothing pending
    assert h.core.cancel_invite("nope", "a1", h.now)[0] is False


@pytest.mark.parametrize("headers", [
    [("From", "<sip:a@b>")],  # no To
    [("To", "<sip:b@c>"), ("X-Bad", "a\r\nInjected: 1")],
    [("To", "not a uri <<")],
])
def test_build_request_refuses_what_cannot_be_a_request(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        build_request("BYE", "sip:b@c", headers)
    with pytest.raises(ValueError):
        build_request("", "sip:b@c", [("To", "<sip:b@c>")])
