"""No open relay through a Route set (issue 12): the default routing and the proxy core,
in memory, with a caller outside the trusted networks.

An untrusted initial request is authenticated or refused whatever its Route says; an
in-dialog one is followed by its Route set only when it came back on a Record-Route this
mesh signed for its very dialog and target (services/edge/rr_signing.py)."""

from __future__ import annotations

import pytest

from services.edge.auth import ProxyAuthenticator
from services.edge.core import Send
from shared.sip import Request, Response
from tests.unit.edge.proxyharness import Harness, answer, invite, to

ATTACKER = ("192.0.2.66", 5091)  # outside [edge] trusted (loopback in the harness)
EDGE = "<sip:127.0.0.1:5060;lr>"
LOOPBACK_SERVICE = "<sip:127.0.0.1:5090;lr>"


def finals(sends: list[Send], port: int = 5091) -> list[int]:
    return [m.status for m in to(sends, port) if isinstance(m, Response) and m.status >= 200]


def forwarded_to(sends: list[Send], port: int) -> list[Request]:
    return [m for m in to(sends, port) if isinstance(m, Request)]


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "OPTIONS", "SUBSCRIBE"])
def test_preloaded_route_from_an_untrusted_source_is_refused(method: str) -> None:
    h = Harness()
    sends = h.feed(invite("sip:x@example.org", method=method,
                          extra=f"Route: {EDGE}, {LOOPBACK_SERVICE}\r\n"), peer=ATTACKER)
    assert forwarded_to(sends, 5090) == []
    assert finals(sends) == [403]


def test_preloaded_route_from_an_untrusted_source_is_challenged_when_users_exist() -> None:
    auth = ProxyAuthenticator("sipmesh", {"carol": "pw"}, b"k" * 32, lambda: 1000.0)
    h = Harness(auth=auth)
    sends = h.feed(invite("sip:x@example.org", extra=f"Route: {EDGE}, {LOOPBACK_SERVICE}\r\n"),
                   peer=ATTACKER)
    assert forwarded_to(sends, 5090) == []
    assert finals(sends) == [407]


def test_a_made_up_to_tag_does_not_open_the_relay() -> None:
    h = Harness()
    for route in (f"{EDGE}, {LOOPBACK_SERVICE}", "<sip:127.0.0.1:5060;lr;sg=0123456789abcdef0123>"):
        sends = h.feed(invite("sip:x@127.0.0.1:5090", method="BYE", to_tag="forged",
                              branch=f"z9hG4bKf{len(route)}", extra=f"Route: {route}\r\n"),
                       peer=ATTACKER)
        assert forwarded_to(sends, 5090) == []
        assert finals(sends) == [403]


def test_the_same_preloaded_route_from_a_trusted_source_is_followed() -> None:
    h = Harness()
    sends = h.feed(invite("sip:x@example.org", extra=f"Route: {EDGE}, {LOOPBACK_SERVICE}\r\n"))
    [fwd] = forwarded_to(sends, 5090)
    assert fwd.get_all("Route") == [LOOPBACK_SERVICE]


def _dialog(h: Harness) -> tuple[Request, Response]:
    """An untrusted caller calls local user bob (static route): the INVITE as bob gets it
    and the 200 as the caller gets it."""
    sends = h.feed(invite("sip:bob@example.com", port=5091), peer=ATTACKER)
    [fwd] = forwarded_to(sends, 5090)
    # Bob answers as a UAS does (§12.1.1): Record-Route copied, his Contact.
    rr = "".join(f"Record-Route: {v}\r\n" for v in fwd.get_all("Record-Route"))
    sends = h.feed(answer(fwd, 200, extra=f"Contact: <sip:bob@127.0.0.1:5090>\r\n{rr}"),
                   peer=("127.0.0.1", 5090))
    [ok] = [m for m in to(sends, 5091) if isinstance(m, Response)]
    assert ok.status == 200
    return fwd, ok


def _in_dialog(method: str, uri: str, route: list[str], *, from_tag: str, to_tag: str,
               branch: str, port: int) -> str:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ATTACKER[0]}:{port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:a@x>;tag={from_tag}\r\nTo: <sip:b@x>;tag={to_tag}\r\n"
        f"Call-ID: c1\r\nCSeq: 2 {method}\r\n"
        + "".join(f"Route: {r}\r\n" for r in route) + "Content-Length: 0\r\n\r\n")


def test_in_dialog_requests_on_our_signed_record_route_are_followed_both_ways() -> None:
    h = Harness(local_domains=("example.com",),
                static_routes={"bob": "sip:bob@127.0.0.1:5090"})
    invite_to_bob, ok = _dialog(h)
    # The caller's route set comes from the 200, re-signed for bob's Contact (§16.7 step 4).
    caller_route = ok.get_all("Record-Route")
    callee_route = invite_to_bob.get_all("Record-Route")
    assert caller_route != callee_route
    bye = _in_dialog("BYE", "sip:bob@127.0.0.1:5090", caller_route, from_tag="a1",
                     to_tag="b1", branch="z9hG4bKbye1", port=5091)
    [fwd] = forwarded_to(h.feed(bye, peer=ATTACKER), 5090)
    assert not fwd.has("Route")
    # Bob's requests go to the caller's Contact along the INVITE's Record-Route (sent from
    # an untrusted address too, so only the signature lets it through).
    bye = _in_dialog("BYE", "sip:alice@127.0.0.1:5091", callee_route, from_tag="b1",
                     to_tag="a1", branch="z9hG4bKbye2", port=5090)
    sends = h.feed(bye, peer=("192.0.2.77", 5090))
    assert [m.method for m in to(sends, 5091) if isinstance(m, Request)] == ["BYE"]


def test_a_signature_of_a_real_dialog_aimed_elsewhere_is_refused() -> None:
    h = Harness(local_domains=("example.com",),
                static_routes={"bob": "sip:bob@127.0.0.1:5090"})
    _invite, ok = _dialog(h)
    route = ok.get_all("Record-Route")
    for n, (uri, call_id) in enumerate([("sip:x@127.0.0.1:5095", "c1"),
                                        ("sip:bob@127.0.0.1:5090", "other")]):
        bye = _in_dialog("BYE", uri, route, from_tag="a1", to_tag="b1",
                         branch=f"z9hG4bKevil{n}", port=5091).replace("Call-ID: c1",
                                                                      f"Call-ID: {call_id}")
        sends = h.feed(bye, peer=ATTACKER)
        assert forwarded_to(sends, 5095) == [] and forwarded_to(sends, 5090) == []
        assert finals(sends) == [403]


def test_an_untrusted_phone_with_an_outbound_proxy_reaches_a_local_user() -> None:
    # Only our own Route on top, no further hops: routed by the Request-URI as usual.
    h = Harness(local_domains=("example.com",),
                static_routes={"bob": "sip:bob@127.0.0.1:5090"})
    sends = h.feed(invite("sip:bob@example.com", extra=f"Route: {EDGE}\r\n"), peer=ATTACKER)
    [fwd] = forwarded_to(sends, 5090)
    assert fwd.uri == "sip:bob@127.0.0.1:5090"


def test_a_preloaded_route_without_ours_on_top_is_no_way_around_either() -> None:
    # To a local user, but the Route names another hop: the request would go there.
    h = Harness(local_domains=("example.com",),
                static_routes={"bob": "sip:bob@127.0.0.1:5095"})
    sends = h.feed(invite("sip:bob@example.com", extra=f"Route: {LOOPBACK_SERVICE}\r\n"),
                   peer=ATTACKER)
    assert forwarded_to(sends, 5090) == [] and forwarded_to(sends, 5095) == []
    assert finals(sends) == [403]


def test_remembered_signatures_are_the_signatures_and_stay_bounded() -> None:
    from services.edge import rr_signing

    signer = rr_signing.RecordRouteSigner(b"s" * 32)
    fresh = [rr_signing.RecordRouteSigner(b"s" * 32).sign(f"c{n}", "t", "h:5060")
             for n in range(rr_signing.KEEP + 10)]
    # Asked twice (the second answer remembered) and past the bound: the same answers.
    for _ in range(2):
        assert [signer.sign(f"c{n}", "t", "h:5060")
                for n in range(rr_signing.KEEP + 10)] == fresh
        assert len(signer._known) <= rr_signing.KEEP
    assert signer.verify(fresh[3], "c3", (None, "t"), "h:5060")
    assert not signer.verify(fresh[3], "c3", ("t",), "other:5060")
    assert rr_signing.RecordRouteSigner(b"other" * 8).sign("c3", "t", "h:5060") != fresh[3]
