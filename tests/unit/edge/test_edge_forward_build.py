"""The forwarded request built in one pass (RFC 3261 §16.6), against the edits it replaces.

`ProxyCore._build_branch_request` builds a branch's request with `Request.forwarded`
(one new header tuple) where it used to copy the received request and edit the copy
(Request-URI, Max-Forwards, Record-Route, our Via); `_build_edited` keeps those edits for
what the one pass leaves to them (a preloaded route set, a strict router, an odd
Max-Forwards).  Both must send the same bytes to the same place; and our own Route values
in an in-dialog request are recognised by the text this edge wrote, with the answers a
parse gives (`ProxyCore._own_route_signature`, §16.4 / §16.12).
"""

from __future__ import annotations

import ipaddress

import pytest

from services.edge.addresses import Destination, Interface, Source
from services.edge.core import ProxyCore
from services.edge.route_context import RouteContext, Target
from services.edge.routing import TrustedNetworks
from shared.sip import Request, Response, SipParseError, parse_message, parse_name_addr
from tests.unit.edge.proxyharness import TCP, UAC, UDP, Harness, invite, to

BRANCH = "z9hG4bKfeedface.1"


def _request(text: str) -> Request:
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    request.validate()
    return request


def _headers(first: str = "", after_via: str = "", mf: str | None = "Max-Forwards: 70\r\n",
             uri: str = "sip:bob@127.0.0.1:5090") -> str:
    return (f"INVITE {uri} SIP/2.0\r\n{first}"
            "Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKuac1;rport\r\n"
            f"{after_via}{mf or ''}From: <sip:alice@127.0.0.1>;tag=a1\r\n"
            "To: <sip:bob@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:alice@127.0.0.1:5091>\r\nContent-Type: application/sdp\r\n"
            "Content-Length: 4\r\n\r\nv=0\n")


REQUESTS = {
    "plain": _headers(),
    "no Max-Forwards (RFC 2543)": _headers(mf=None),
    "Max-Forwards 1": _headers(mf="Max-Forwards: 1\r\n"),
    "Record-Route below the Via": _headers(
        after_via="Record-Route: <sip:10.0.0.7;lr>, <sip:10.0.0.8;lr>\r\n"),
    "Record-Route above the Via": _headers(first="Record-Route: <sip:10.0.0.7;lr>\r\n"),
    "two Via lines, compact form": _headers(
        first="v: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKup1\r\n"),
    "Via with two values": _headers(
        first="Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKa, "
              "SIP/2.0/UDP 10.0.0.6;branch=z9hG4bKb\r\n"),
    "loose Route to another hop": _headers(after_via="Route: <sip:10.0.0.9:5070;lr>\r\n"),
    "strict Route (no lr)": _headers(after_via="Route: <sip:10.0.0.9:5070>\r\n"),
    "tcp Request-URI": _headers(uri="sip:bob@127.0.0.1:5090;transport=tcp"),
}

TARGETS = {
    "same URI": None,
    "other URI": Target("sip:carol@127.0.0.1:5092;ob"),
    "next hop": Target("sip:bob@127.0.0.1:5090", next_hop="sip:127.0.0.1:5094"),
    "tcp transport": Target("sip:bob@127.0.0.1:5090", transport="tcp"),
    "Path route set": Target("sip:bob@127.0.0.1:5090",
                             route=("<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>")),
    "port 0": Target("sip:bob@127.0.0.1:0"),
    "unsupported scheme": Target("tel:+15551234"),
}


def _core() -> ProxyCore:
    return Harness().core


def _ctx(core: ProxyCore, request: Request, itf: Interface, rr: bool) -> RouteContext:
    ctx = RouteContext(request, Source(itf, *UAC), loose_routed=False,
                       local_domains=frozenset(), static_routes={},
                       trusted=TrustedNetworks([]), is_myself=core._is_myself, services={})
    if rr:
        ctx.record_route()
    return ctx


def _outcome(build: tuple[Request, Destination] | None) -> tuple[object, ...] | None:
    if build is None:
        return None
    request, dest = build
    via = request.top_via
    return (request.serialize(), request.uri, request.max_forwards, dest.transport, dest.host,
            dest.port, dest.interface, str(via), via.branch, request.top_via_line())


@pytest.mark.parametrize("rr", [True, False], ids=["record-route", "no record-route"])
@pytest.mark.parametrize("itf", [UDP, TCP], ids=["in udp", "in tcp"])
@pytest.mark.parametrize("target_name", list(TARGETS))
@pytest.mark.parametrize("name", list(REQUESTS))
def test_one_pass_build_sends_the_bytes_the_edits_sent(name: str, target_name: str,
                                                       itf: Interface, rr: bool) -> None:
    core = _core()
    base = _request(REQUESTS[name])
    target = TARGETS[target_name] or Target(base.uri)
    before = base.serialize()
    one = _outcome(core._build_branch_request(_ctx(core, base, itf, rr), base, target, BRANCH))
    edited = _outcome(core._build_edited(_ctx(core, base, itf, rr), base, target, BRANCH))
    assert one == edited
    assert base.serialize() == before  # the received request is left as it was


def test_the_double_record_route_goes_above_the_others_outbound_first() -> None:
    core = _core()
    base = _request(REQUESTS["Record-Route below the Via"])
    built = core._build_branch_request(_ctx(core, base, UDP, True), base,
                                       Target(base.uri, transport="tcp"), BRANCH)
    assert built is not None
    request, dest = built
    assert dest.interface == TCP
    rrs = request.get_all("Record-Route")
    assert [v.split(";sg=")[0] for v in rrs[:2]] == [
        "<sip:127.0.0.1:5060;transport=tcp;lr", "<sip:127.0.0.1:5060;lr"]
    assert rrs[2:] == ["<sip:10.0.0.7;lr>", "<sip:10.0.0.8;lr>"]
    assert request.get("Via") == f"SIP/2.0/TCP 127.0.0.1:5060;branch={BRANCH}"
    assert request.max_forwards == 69


def test_max_forwards_zero_is_refused_by_both_paths_alike() -> None:
    core = _core()
    base = _request(_headers(mf="Max-Forwards: 0\r\n"))
    for build in (core._build_branch_request, core._build_edited):
        with pytest.raises(SipParseError):
            build(_ctx(core, base, UDP, True), base, Target(base.uri), BRANCH)


def test_a_request_uri_with_whitespace_is_refused_by_both_paths_alike() -> None:
    core = _core()
    base = _request(REQUESTS["plain"])
    for build in (core._build_branch_request, core._build_edited):
        with pytest.raises(ValueError):
            build(_ctx(core, base, UDP, True), base, Target("sip:bob@x y"), BRANCH)


def test_several_max_forwards_lines_are_collapsed_as_the_edits_did() -> None:
    core = _core()
    base = Request("OPTIONS", "sip:bob@127.0.0.1:5090", [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKm"), ("Max-Forwards", "9"),
        ("From", "<sip:a@127.0.0.1>;tag=1"), ("To", "<sip:bob@127.0.0.1>"),
        ("Call-ID", "m1"), ("CSeq", "1 OPTIONS"), ("Max-Forwards", "9")])
    assert base.forwarded(base.uri, (), "UDP", "h", 5060, BRANCH) is None
    one = _outcome(core._build_branch_request(_ctx(core, base, UDP, False), base,
                                              Target(base.uri), BRANCH))
    edited = _outcome(core._build_edited(_ctx(core, base, UDP, False), base,
                                         Target(base.uri), BRANCH))
    assert one == edited
    assert one is not None and isinstance(one[0], bytes)
    assert one[0].count(b"Max-Forwards: 8\r\n") == 1


# -- our own Route values, recognised without a parse (§16.4) ---------------------------------

def _parsed_answer(core: ProxyCore, value: str) -> str | None:
    """What `_preprocess_routes` reads from a parse: the `sg` of a value naming us."""
    uri = parse_name_addr(value, "Route").uri
    return (uri.params.get("sg") or None) if core._is_myself(uri) else None


@pytest.mark.parametrize("value", [
    "<sip:127.0.0.1:5060;lr;sg=0123456789abcdef0123>",
    "<sip:127.0.0.1:5060;transport=tcp;lr;sg=0123456789abcdef0123>",
    "<sip:127.0.0.1:5060;lr;sg=ABCdef>",
])
def test_our_route_as_written_gives_the_signature_a_parse_gives(value: str) -> None:
    core = _core()
    assert core._own_route_signature(value) == _parsed_answer(core, value) is not None


@pytest.mark.parametrize("value", [
    "<sip:127.0.0.1:5060;sg=0123456789abcdef0123;lr>",  # another order: parsed
    "<sip:127.0.0.1:5060;lr;sg=>",  # empty signature
    "<sip:127.0.0.1:5060;lr;sg=01;x=1>",  # a parameter after ours
    "<sip:127.0.0.1:5060;lr;sg=01?X=1>",  # URI headers
    "<sip:127.0.0.1:5060;lr;sg=01>;p=1",  # a header parameter
    " <sip:127.0.0.1:5060;lr;sg=01>",
    "<sip:127.0.0.2:5060;lr;sg=01>",  # not us
    "<sip:127.0.0.1:5062;lr;sg=01>",
])
def test_other_spellings_are_left_to_the_parse(value: str) -> None:
    assert _core()._own_route_signature(value) is None


def test_the_prefixes_are_our_interfaces_record_routes_and_follow_them() -> None:
    core = _core()
    assert set(core._own_route_prefixes) == {
        "<sip:127.0.0.1:5060;lr;sg=", "<sip:127.0.0.1:5060;transport=tcp;lr;sg="}
    core.set_interfaces([Interface("udp", "127.0.0.1", 5070)])  # bound elsewhere now
    assert core._own_route_signature("<sip:127.0.0.1:5060;lr;sg=01>") is None
    assert core._own_route_signature("<sip:127.0.0.1:5070;lr;sg=01>") == "01"


def _dialog_bye(h: Harness, route: str) -> bytes:
    """The callee's BYE on the INVITE's Record-Route (signed for the caller's Contact), from
    an untrusted address: only the verified signature lets it on (rr_signing.py)."""
    h.feed(invite(call_id="d1"))
    signed = to(h.sent, 5090)[0].get("Record-Route") or ""
    h.sent.clear()
    bye = ("BYE sip:alice@127.0.0.1:5091 SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.2:5090;branch=z9hG4bKbye1\r\n"
           f"Route: {route.format(signed=signed, sig=signed.split(';sg=')[1][:-1])}\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=b1\r\n"
           "To: <sip:alice@127.0.0.1>;tag=a1\r\nCall-ID: d1\r\nCSeq: 1 BYE\r\n"
           "Content-Length: 0\r\n\r\n")
    out = h.feed(bye, peer=("127.0.0.2", 5090))
    assert len(out) == 1, out
    return out[0].data


def test_an_in_dialog_request_on_our_route_is_routed_as_with_another_spelling() -> None:
    as_written = _dialog_bye(Harness(trusted=("127.0.0.1/32",)), "{signed}")
    reordered = _dialog_bye(Harness(trusted=("127.0.0.1/32",)),
                            "<sip:127.0.0.1:5060;sg={sig};lr>")
    forged = _dialog_bye(Harness(trusted=("127.0.0.1/32",)),
                         "<sip:127.0.0.1:5060;lr;sg=0123456789abcdef0123>")
    for data in (as_written, reordered):
        assert data.startswith(b"BYE sip:alice@127.0.0.1:5091 SIP/2.0\r\n")
        assert b"Route:" not in data  # our Route popped (§16.12), the BYE verified
    assert forged.startswith(b"SIP/2.0 403 ")  # recognised as ours, but not signed by us
    strip = [line for line in as_written.split(b"\r\n") if not line.startswith(b"Via:")]
    assert strip == [line for line in reordered.split(b"\r\n") if not line.startswith(b"Via:")]


# -- the route set a dialog will send back, known valid beforehand ----------------------------

def test_our_only_record_route_is_known_as_the_route_line_of_the_dialog() -> None:
    h = Harness()
    h.feed(invite(call_id="k1"))
    value = to(h.sent, 5090)[0].get("Record-Route") or ""
    assert h.core._own_route_signature(value) is not None
    # The callee's (and a trusted caller's) in-dialog requests: `validate` needs no parse.
    assert f"Route: {value}".encode() in h.core._known.lines


def test_a_record_route_set_with_others_in_it_is_not_remembered() -> None:
    h = Harness()
    h.feed(invite(call_id="k2", extra="Record-Route: <sip:10.0.0.7;lr>\r\n"))
    values = to(h.sent, 5090)[0].get_all("Record-Route")
    assert len(values) == 2
    assert not any(line.startswith(b"Route: ") for line in h.core._known.lines)


def test_the_resigner_returns_the_route_set_it_wrote() -> None:
    core = _core()
    ours = "<sip:127.0.0.1:5060;lr;sg=0123456789abcdef0123>"
    response = parse_message((
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKr\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag=b1\r\n"
        f"Call-ID: r1\r\nCSeq: 1 INVITE\r\nRecord-Route: <sip:10.0.0.7;lr>, {ours}\r\n"
        "Contact: <sip:bob@127.0.0.1:5090>\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(response, Response)
    joined = core._resign(response)
    assert joined is not None and joined == ", ".join(response.get_all("Record-Route"))
    assert joined.startswith("<sip:10.0.0.7;lr>, <sip:127.0.0.1:5060;lr;sg=")
    assert ours not in joined  # signed for the callee's Contact now
    response.set_header("Record-Route", "<sip:10.0.0.7;lr>")
    assert core._resign(response) is None  # none of ours: nothing changed


# -- the dialog's signature checked only when the routing asks ----------------------------------

def _in_dialog_ctx(core: ProxyCore, trusted: list[str],
                   asked: list[int]) -> tuple[Request, RouteContext]:
    """A BYE in a dialog of ours from 127.0.0.2, its signatures' check counting its calls."""
    bye = parse_message(
        b"BYE sip:alice@127.0.0.1:5091 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.2:5090;branch=z9hG4bKbye2\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=b1\r\n"
        b"To: <sip:alice@127.0.0.1>;tag=a1\r\nCall-ID: d2\r\nCSeq: 1 BYE\r\n"
        b"Content-Length: 0\r\n\r\n")
    assert isinstance(bye, Request)

    def check() -> bool:
        asked.append(1)
        return True
    ctx = RouteContext(bye, Source(UDP, "127.0.0.2", 5090), loose_routed=True,
                       local_domains=frozenset(), static_routes={},
                       trusted=TrustedNetworks([ipaddress.ip_network(n) for n in trusted]),
                       is_myself=core._is_myself, services={}, dialog_check=check)
    return bye, ctx


def test_record_routed_is_checked_once_on_first_read() -> None:
    asked: list[int] = []
    _, ctx = _in_dialog_ctx(_core(), [], asked)
    assert asked == []  # nothing checked before the routing asks
    assert ctx.record_routed and ctx.record_routed
    assert asked == [1]


def test_the_default_script_checks_only_an_untrusted_sources_signature() -> None:
    core = _core()
    for trusted, checks in ((["127.0.0.2/32"], []), ([], [1])):
        asked: list[int] = []
        bye, ctx = _in_dialog_ctx(core, trusted, asked)
        assert core.router.request_route(bye, ctx) is None
        assert len(ctx.targets) == 1  # followed, by trust or by signature
        assert asked == checks


def test_the_core_checks_a_signed_route_only_for_an_untrusted_source() -> None:
    """Through the core: a trusted source's BYE is forwarded without a MAC; an untrusted
    one's is forwarded for its signature and refused for a forged one (as before)."""
    assert _dialog_bye(Harness(trusted=("127.0.0.0/8",)),
                       "<sip:127.0.0.1:5060;lr;sg=0123456789abcdef0123>").startswith(b"BYE ")
    assert _dialog_bye(Harness(trusted=("127.0.0.1/32",)), "{signed}").startswith(b"BYE ")
