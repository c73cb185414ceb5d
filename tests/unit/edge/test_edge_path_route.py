"""A branch with a preloaded route set (RFC 3327 §5.3: the binding's Path), in the sans-IO
proxy core and through the default routing with the real user location in memory.

The route values become the branch's Route header fields, in order, on top of any Route
left after §16.4; the branch goes to the first one (loose routing), or the first hop gets
the §16.6 step 6 strict-router fix-up; the Request-URI stays the contact; a route set
wins over `next_hop` (and a binding's Path over its NAT `received`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from services.edge.routing import RouteContext
from shared.sip import Request, Response, parse_message
from tests.unit.edge.proxyharness import UAC, Harness, answer, invite, to, unsigned
from tests.unit.edge.test_edge_registrar_routing import (
    DOMAIN,
    InProcessRegistrar,
    final,
    harness,
    run,
)

CONTACT = "sip:bob@10.0.0.9:5094"
P1 = "<sip:p1@127.0.0.1:5071;lr>"
P2 = "<sip:p2@127.0.0.1:5072;lr>"


class Preloaded:
    """A routing script forking one branch with a route set (and a next hop it overrides)."""

    def __init__(self, route: Sequence[str] | str, *, next_hop: str | None = None,
                 rr: bool = False) -> None:
        self.route = route
        self.next_hop = next_hop
        self.rr = rr

    def request_route(self, request: Request, ctx: RouteContext) -> None:
        if self.rr:
            ctx.record_route()
        ctx.forward(CONTACT, next_hop=self.next_hop, route=self.route)


def requests_sent(sends: list[Any]) -> list[tuple[int, Request]]:
    out = []
    for s in sends:
        m = parse_message(s.data)
        if isinstance(m, Request):
            out.append((s.dest.port, m))
    return out


def test_route_set_is_put_as_route_headers_in_order_and_sent_to_the_first_hop() -> None:
    h = Harness(Preloaded([P1, P2], next_hop="sip:127.0.0.1:5090", rr=True))
    sends = h.feed(invite("sip:bob@example.com"))
    # Only to p1: not to the next hop the route set overrides, nor to the contact.
    [(port, fwd)] = requests_sent(sends)
    assert port == 5071
    assert fwd.uri == CONTACT  # RFC 3327 §5.3: the Request-URI is the contact
    assert fwd.get_all("Route") == [P1, P2]
    assert unsigned(fwd.get_all("Record-Route")) == ["<sip:127.0.0.1:5060;lr>"]
    assert fwd.max_forwards == 69 and fwd.vias[0].port == 5060
    # The branch is a real client transaction towards p1: its answers reach the caller.
    relayed = h.feed(answer(fwd, 180), peer=("127.0.0.1", 5071))
    assert [r.status for r in to(relayed, UAC[1]) if isinstance(r, Response)] == [180]


def test_route_set_goes_above_the_routes_left_after_preprocessing() -> None:
    h = Harness(Preloaded([P1, P2]))
    # Our own Route on top is removed (§16.4); the next one stays, below the route set.
    sends = h.feed(invite("sip:bob@example.com", extra="Route: <sip:127.0.0.1:5060;lr>, "
                          "<sip:far@127.0.0.1:5080;lr>\r\n"))
    [(port, fwd)] = requests_sent(sends)
    assert port == 5071
    assert fwd.get_all("Route") == [P1, P2, "<sip:far@127.0.0.1:5080;lr>"]


def test_strict_router_first_hop_gets_the_contact_as_last_route() -> None:
    strict = "<sip:p1@127.0.0.1:5071>"  # no lr: a strict router (RFC 2543)
    h = Harness(Preloaded([strict, P2]))
    [(port, fwd)] = requests_sent(h.feed(invite("sip:bob@example.com")))
    # §16.6 step 6: the strict hop's URI is the Request-URI, the contact the last Route.
    assert port == 5071
    assert fwd.uri == "sip:p1@127.0.0.1:5071"
    assert fwd.get_all("Route") == [P2, f"<{CONTACT}>"]


def test_first_hop_transport_is_used() -> None:
    h = Harness(Preloaded(["<sip:p1@127.0.0.1:5071;transport=tcp;lr>"]))
    sends = h.feed(invite("sip:bob@example.com"))
    [send] = [s for s in sends if isinstance(parse_message(s.data), Request)]
    assert (send.dest.transport, send.dest.port) == ("tcp", 5071)
    assert parse_message(send.data).top_via.transport == "TCP"


def test_one_string_is_a_one_hop_route() -> None:
    h = Harness(Preloaded(P1))
    [(port, fwd)] = requests_sent(h.feed(invite("sip:bob@example.com")))
    assert port == 5071 and fwd.get_all("Route") == [P1]


def test_bare_uri_is_bracketed_so_lr_stays_a_uri_parameter() -> None:
    h = Harness(Preloaded(["sip:p1@127.0.0.1:5071;lr", P2]))
    [(port, fwd)] = requests_sent(h.feed(invite("sip:bob@example.com")))
    # Loose routing to p1: the contact stays the Request-URI (no strict-router fix-up).
    assert port == 5071 and fwd.uri == CONTACT
    assert fwd.get_all("Route") == [P1, P2]


def test_route_value_that_does_not_parse_fails_the_branch_not_the_proxy() -> None:
    h = Harness(Preloaded(["garbage"]))
    sends = h.feed(invite("sip:bob@example.com"))
    assert requests_sent(sends) == []
    finals = [r.status for r in to(sends, UAC[1]) if isinstance(r, Response) and r.status >= 200]
    # Nothing can carry the branch: it fails as a send error, 477 (as OpenSIPS/Kamailio).
    assert finals == [477]


@pytest.mark.parametrize("bad", ["<sip:p1@127.0.0.1;lr>\r\nX-Injected: 1", "  "])
def test_route_value_with_line_breaks_or_blank_is_a_routing_error(bad: str) -> None:
    h = Harness(Preloaded([P1, bad]))
    sends = h.feed(invite("sip:bob@example.com"))
    assert requests_sent(sends) == []
    finals = [r for r in to(sends, UAC[1]) if isinstance(r, Response) and r.status >= 200]
    assert [(r.status, r.reason) for r in finals] == [(500, "Routing Error")]


def register_with_path(path_lines: str, *, contact_port: int = 5094) -> str:
    # From 127.0.0.1:5091 with a Contact at 10.0.0.9: the registrar also keeps `received`.
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKpath1;rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:bob@{DOMAIN}>;tag=r1\r\n"
        f"To: <sip:bob@{DOMAIN}>\r\nCall-ID: reg-path\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:bob@10.0.0.9:{contact_port}>\r\n{path_lines}"
        "Supported: path\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n")


INVITE_BOB = (
    f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKi1\r\n"
    f"Max-Forwards: 70\r\nFrom: <sip:carol@far.example>;tag=c1\r\nTo: <sip:bob@{DOMAIN}>\r\n"
    "Call-ID: call-path\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@127.0.0.1:5070>\r\n"
    "Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize("path_lines", [
    f"Path: {P1}, {P2}\r\n",  # one header field, two values
    f"Path: {P1}\r\nPath: {P2}\r\n",  # two header fields
])
async def test_call_to_the_aor_goes_through_every_path_hop(path_lines: str) -> None:
    reg = InProcessRegistrar(register_auth=False)
    h = harness(reg)
    ok = final(await run(h, h.feed(register_with_path(path_lines))))
    assert ok.status == 200 and ok.get_all("Path") == [P1, P2]
    [binding] = reg.location.lookup(f"bob@{DOMAIN}", "INVITE", reg.now)
    assert binding.received == "sip:127.0.0.1:5091"  # the proxy's address, not used
    sends = await run(h, h.feed(INVITE_BOB, peer=("127.0.0.1", 5070)))
    [(port, fwd)] = requests_sent(sends)
    assert port == 5071  # the first Path hop wins over `received` (5091)
    assert fwd.uri == "sip:bob@10.0.0.9:5094"
    assert fwd.get_all("Route") == [P1, P2]


async def test_bindings_with_and_without_path_fork_each_their_own_way() -> None:
    reg = InProcessRegistrar(register_auth=False)
    h = harness(reg)
    assert final(await run(h, h.feed(register_with_path(f"Path: {P1}\r\n")))).status == 200
    plain = register_with_path("", contact_port=5096).replace(
        "CSeq: 1 ", "CSeq: 2 ").replace("z9hG4bKpath1", "z9hG4bKpath2")
    assert final(await run(h, h.feed(plain))).status == 200
    sends = await run(h, h.feed(INVITE_BOB, peer=("127.0.0.1", 5070)))
    sent = {port: fwd for port, fwd in requests_sent(sends)}
    assert sorted(sent) == [5071, 5091]  # Path hop; NAT `received` of the other binding
    assert sent[5071].uri == "sip:bob@10.0.0.9:5094" and sent[5071].get_all("Route") == [P1]
    assert sent[5091].uri == "sip:bob@10.0.0.9:5096" and not sent[5091].has("Route")
