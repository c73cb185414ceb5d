"""The 401 of a REGISTER without credentials on its short path (services/edge/
register_challenge.py): the same bytes as the generic path's (the routing script run, the
response built by make_response), the same refusals where the 401 is not the answer,
retransmissions answered with the same bytes, an operator's script still asked, pike
still counting in front of it."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge import default_routing
from services.edge.addresses import Source
from services.edge.app import EdgeApp
from services.edge.auth import ProxyAuthenticator
from services.edge.config import EdgeConfig
from services.edge.permissions import AddressPermissions, SourceTrust
from services.edge.pike import PikeTree
from services.edge.pike_mi import PikeGuard
from services.edge.routing import LoadedRouter
from tests.unit.edge.proxyharness import UDP, Harness

DOMAIN = "example.com"
PHONE = ("192.0.2.10", 5099)  # untrusted (the harness trusts 127.0.0.0/8)


class Registrar:
    available = True
    expected = True
    register_auth = True
    algorithms = ("SHA-256", "MD5")


class FixedAuth:
    """Challenges with a fixed nonce: the two paths' 401s can be compared byte for byte."""

    def challenges(self, realm: str, stale: bool, algorithms: tuple[str, ...]) -> list[str]:
        return [f'Digest realm="{realm}", nonce="n-{realm}", algorithm={a}, qop="auth"'
                for a in algorithms]


def core(*, script: bool = False, auth: Any = None) -> tuple[Harness, list[str]]:
    """A harness with the default routing; `script=True`: behind an operator's script
    that calls it (another hook: the generic path), recording what it was asked."""
    asked: list[str] = []
    router = None
    if script:
        def request_route(request: Any, ctx: Any) -> Any:
            asked.append(request.method)
            return default_routing.request_route(request, ctx)

        router = LoadedRouter(request_route, default_routing.reply_route, None, "operator")
    h = Harness(router, local_domains=(DOMAIN,))
    h.core.services.update({"registrar": Registrar(), "auth": auth or FixedAuth()})
    return h, asked


def scripts(h: Harness) -> list[str]:
    """The routing coroutines the core handed out to be awaited since the last call (the
    registrar's checks), by name; closed, as no loop runs them here (a coroutine never
    awaited warns)."""
    names = []
    for pending in h.awaits:
        coro: Any = pending.awaitable
        code = getattr(coro, "cr_code", None)  # mypyc's (make compiled) has none: its class
        names.append(code.co_name if code is not None else
                     type(coro).__name__.removesuffix("_gen"))
        coro.close()
    h.awaits.clear()  # taken: the next call names only what came after
    return names


def register(head: str = "REGISTER sip:example.com SIP/2.0", *, via: str = "",
             lines: str = "") -> str:
    via = via or "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1;rport\r\n"
    lines = lines or ("From: <sip:alice@example.com>;tag=f1\r\n"
                      "To: <sip:alice@example.com>\r\nCall-ID: c1@10.0.0.1\r\n"
                      "CSeq: 7 REGISTER\r\n")
    return (f"{head}\r\n{via}Max-Forwards: 70\r\n{lines}"
            "Contact: <sip:alice@10.0.0.1:5060>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n")


REGISTERS = {
    "plain": register(),
    "no-rport-same-host": register(via="Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bKa2\r\n"),
    "two-via-lines": register(via="Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa3;rport\r\n"
                                  "Via: SIP/2.0/TCP 10.9.9.9:5070;branch=z9hG4bKphone\r\n"),
    "two-vias-one-line": register(
        via="Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa4, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKb\r\n"),
    "compact": "REGISTER sip:example.com SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa5"
               ";rport\r\nf: <sip:alice@example.com>;tag=f5\r\nt: sip:alice@example.com\r\n"
               "i: c5\r\nCSeq: 1 REGISTER\r\nm: <sip:alice@10.0.0.1>\r\nl: 0\r\n\r\n",
    "odd-case": register(via="vIA:  SIP/2.0/UDP 10.0.0.1:5060;BRANCH=z9hG4bKa6;rport\r\n",
                         lines="FROM: \"Alice, A.\" <sip:alice@example.com>;TAG=f6\r\n"
                               "tO:<sip:alice@EXAMPLE.com>\r\ncall-ID: c6\r\n"
                               "cseq:  8 REGISTER\r\n"),
    "reordered": register(lines="CSeq: 9 REGISTER\r\nCall-ID: c7\r\n"
                                "To: Alice <sip:alice@example.com>\r\n"
                                "From: Alice <sip:alice@example.com>;tag=f7\r\n"),
    "to-the-proxy": register("REGISTER sip:127.0.0.1:5060 SIP/2.0"),
}


@pytest.mark.parametrize("name", sorted(REGISTERS))
def test_the_401_is_byte_for_byte_the_generic_paths(name: str) -> None:
    data = REGISTERS[name]
    fast, _ = core()
    generic, asked = core(script=True)
    answer = fast.feed(data, PHONE)
    expected = generic.feed(data, PHONE)
    assert asked == ["REGISTER"]  # the reference did run the script
    assert len(answer) == 1 and answer[0].data.startswith(b"SIP/2.0 401 Unauthorized\r\n")
    assert answer[0].data == expected[0].data
    assert answer[0].dest == expected[0].dest
    assert fast.core.transactions == generic.core.transactions == 0  # stateless


@pytest.mark.parametrize(("data", "status"), [
    (register(lines="From: <sip:alice@example.com>;tag=f1\r\nTo: <sip:alice@example.com>\r\n"
                    "Call-ID: c1\r\nCSeq: 7 REGISTER\r\nProxy-Require: foo\r\n"), 420),
    (register().replace("Max-Forwards: 70", "Max-Forwards: 0"), 483),
    (register().replace("From: <sip:alice@example.com>", "From: <sip:alice@exa mple.com>"),
     400),
    (register(via="Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa1\r\nVia: SIP/2.0/UDP ;;\r\n"),
     400),
    (register().replace("To: <sip:alice@example.com>", "To: <sip:alice@example.com>;tag=t"),
     401),
    (register("REGISTER sip:elsewhere.org SIP/2.0"), 0),  # a relay: the script's 407 check
    (register("REGISTER tel:+15551234 SIP/2.0"), 416),
])
def test_what_is_no_plain_challenge_gets_the_generic_answer(data: str, status: int) -> None:
    fast, _ = core()
    generic, _ = core(script=True)
    answer = fast.feed(data, PHONE)
    expected = generic.feed(data, PHONE)
    assert [a.data for a in answer] == [e.data for e in expected]
    if status:
        assert answer[0].data.startswith(b"SIP/2.0 %d " % status)
    else:  # routed by the script, which awaits the registrar
        assert not answer
        assert scripts(fast) == scripts(generic) == ["_relay_authenticated"]


def test_a_register_with_credentials_or_a_route_is_routed_by_the_script() -> None:
    fast, _ = core()
    with_creds = register().replace("Expires:", 'Authorization: Digest username="alice", '
                                    'realm="example.com", nonce="x", uri="sip:example.com", '
                                    'response="0"\r\nExpires:')
    assert not fast.feed(with_creds, PHONE)
    # the script's coroutine (the credentials' check), not a 401 here
    assert scripts(fast) == ["_register_with_credentials"]
    routed = register().replace("z9hG4bKa1", "z9hG4bKa2").replace(
        "Expires:", "Route: <sip:10.5.5.5;lr>\r\nExpires:")
    assert not fast.feed(routed, PHONE)  # a relay: the script awaits its digest check
    assert scripts(fast) == ["_relay_authenticated"]


def test_a_malformed_contact_is_challenged_and_the_credentialed_retry_gets_400() -> None:
    # The documented difference: the 401 does not read the Contact (nor validate it).
    data = register().replace("<sip:alice@10.0.0.1:5060>", "<sip:alice@10.0.0.1:5060")
    fast, _ = core()
    assert fast.feed(data, PHONE)[0].data.startswith(b"SIP/2.0 401 ")
    retry = data.replace("z9hG4bKa1", "z9hG4bKa2").replace("Expires:", 'Authorization: Digest '
                         'username="alice", realm="example.com", nonce="x", '
                         'uri="sip:example.com", response="0"\r\nExpires:')
    assert fast.feed(retry, PHONE)[0].data.startswith(b"SIP/2.0 400 ")
    generic, _ = core(script=True)  # an operator's script: validated first, as before
    assert generic.feed(data, PHONE)[0].data.startswith(b"SIP/2.0 400 ")


def test_a_retransmission_gets_the_same_bytes_and_a_new_request_a_new_nonce() -> None:
    fast, _ = core(auth=ProxyAuthenticator("sipmesh", {}, b"k" * 32, lambda: 1e9))
    first = fast.feed(REGISTERS["plain"], PHONE)
    again = fast.feed(REGISTERS["plain"], PHONE)
    other = fast.feed(REGISTERS["plain"].replace("z9hG4bKa1", "z9hG4bKa9"), PHONE)
    assert first[0].data == again[0].data
    assert other[0].data != first[0].data and b"nonce=" in other[0].data


def test_an_operator_script_still_sees_every_register() -> None:
    h, asked = core(script=True)
    for name in sorted(REGISTERS):
        h.now += 10.0  # past T2: no retransmission of the one before (same branches)
        assert h.feed(REGISTERS[name], PHONE)[0].data.startswith(b"SIP/2.0 401 ")
    assert asked == ["REGISTER"] * len(REGISTERS)


def test_without_register_auth_or_registrar_the_short_path_stays_out() -> None:
    h, _ = core()
    registrar = Registrar()
    registrar.register_auth = False
    h.core.services["registrar"] = registrar
    assert not h.feed(REGISTERS["plain"], PHONE)
    assert scripts(h) == ["_register_with_credentials"]  # the script's Save, no challenge
    registrar.available = False
    assert h.feed(REGISTERS["plain"].replace("a1", "a2"), PHONE)[0].data.startswith(
        b"SIP/2.0 503 ")


def test_pike_counts_the_registers_before_the_short_path_answers() -> None:
    h, _ = core()
    blocked: list[str] = []
    sent: list[Any] = []
    app: Any = EdgeApp(EdgeConfig(listen=("udp:127.0.0.1:0",), rr_secret="k" * 32))

    class Clock:
        def time(self) -> float:
            return 0.0

    app.core, app._loop = h.core, Clock()
    app.pike = PikeGuard(PikeTree(density=4), SourceTrust([], AddressPermissions([])),
                         lambda: 0.0, blocked.append)
    app._execute = sent.extend
    source = Source(UDP, *PHONE)
    for n in range(20):
        app._on_message(REGISTERS["plain"].replace("z9hG4bKa1", f"z9hG4bKp{n}").encode(),
                        source)
    assert 0 < len(sent) < 20 and all(s.data.startswith(b"SIP/2.0 401 ") for s in sent)
    assert blocked == [PHONE[0]]
    assert app.counters.drop_requests.value == 20 - len(sent)
