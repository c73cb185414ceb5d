"""The default routing with a registrar, in memory: the real user location (services/
registrar) behind the edge client's interface, the real proxy core, a fake clock.

REGISTER is challenged then saved; credentials for another user are refused (403); with
register_auth off it is saved at once; calls to a local user fork in parallel to its
bindings, highest q first, through the NAT address; 404/480 for unknown/unregistered."""

from __future__ import annotations

import hashlib
from typing import Any

from services.edge.auth import ProxyAuthenticator
from services.edge.registrar_client import Credentials, LookupBranch
from services.registrar.location import Location, Origin
from services.registrar.subscribers import ha1_hashes
from shared.sip import Request, Response, answer_challenge, parse_challenge, parse_message
from tests.support.sipmsg import parse_request, parse_response
from tests.unit.edge.proxyharness import Harness, to

DOMAIN = "example.com"


class InProcessRegistrar:
    """The edge's registrar client interface served by a Location in this process."""

    def __init__(self, *, register_auth: bool = True) -> None:
        self.location = Location()
        self.users = {"alice": "alice-pw", "bob": "bob-pw"}
        self.available = True
        self.register_auth = register_auth
        self.algorithms = ("MD5",)
        self.now = 1_800_000_000.0

    async def save(self, message: bytes, host: str, port: int, transport: str,
                   socket: str) -> tuple[int, str, list[tuple[str, str]]]:
        result = self.location.save(parse_request(message), Origin(host, port, transport,
                                                                   socket), self.now)
        return result.status, result.reason, result.headers

    async def lookup(self, aor: str, method: str, *, federated: bool = False
                     ) -> tuple[int, list[LookupBranch]]:
        found = self.location.lookup(aor, method, self.now)
        if found:
            return 200, [LookupBranch(b.uri, b.next_hop(), b.q / 1000, path=b.path)
                         for b in found]
        return (480 if aor.split("@")[0] in self.users else 404), []

    async def credentials(self, username: str, domain: str, *,
                          fresh: bool = False) -> Credentials | None:
        password = self.users.get(username)
        return None if password is None else Credentials(*ha1_hashes(username, domain,
                                                                     password))


def harness(registrar: InProcessRegistrar) -> Harness:
    h = Harness(local_domains=(DOMAIN,))
    auth = ProxyAuthenticator("sipmesh", {}, b"k" * 32, lambda: registrar.now)
    h.core.services.update({"registrar": registrar, "auth": auth})
    return h


async def run(h: Harness, sends: list[Any]) -> list[Any]:
    """Let the routing hooks the core handed out finish, as the asyncio adapter does."""
    out = list(sends)
    while h.awaits:
        item = h.awaits.pop(0)
        await item.awaitable
        out.extend(h._collect(item.resume(h.now)))
    return out


def register(user: str, *, to_user: str | None = None, contact_port: int = 5091,
             cseq: int = 1, auth: str = "") -> str:
    to_user = to_user or user
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKr{cseq}{user};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=r1\r\n"
        f"To: <sip:{to_user}@{DOMAIN}>\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@10.0.0.9:{contact_port}>;q=0.{contact_port % 9 + 1}\r\n"
        f"{auth}Expires: 600\r\nContent-Length: 0\r\n\r\n")


def final(sends: list[Any]) -> Response:
    [resp] = [m for m in to(sends, 5091) if isinstance(m, Response) and m.status >= 200]
    return resp


async def authenticated(h: Harness, user: str, password: str, **kw: Any) -> Response:
    challenge = final(await run(h, h.feed(register(user, **kw))))
    assert challenge.status == 401
    offered = parse_challenge(challenge.get("WWW-Authenticate") or "")
    assert offered.realm == DOMAIN
    creds = answer_challenge(offered, username=user, password=password, method="REGISTER",
                             uri=f"sip:{DOMAIN}", cnonce="c")
    return final(await run(h, h.feed(register(user, cseq=2,
                                              auth=f"Authorization: {creds}\r\n", **kw))))


async def test_register_is_challenged_then_saved_with_the_bindings_listed() -> None:
    reg = InProcessRegistrar()
    h = harness(reg)
    ok = await authenticated(h, "alice", "alice-pw")
    assert ok.status == 200
    assert ok.get_all("Contact") == ["<sip:alice@10.0.0.9:5091>;expires=600;q=0.7"]
    # Received from 127.0.0.1:5091 while the Contact says 10.0.0.9: a NAT, kept.
    assert reg.location.lookup("alice@example.com", "", reg.now)[0].received == \
        "sip:127.0.0.1:5091"


async def test_credentials_of_another_user_are_refused() -> None:
    h = harness(InProcessRegistrar())
    refused = await authenticated(h, "alice", "alice-pw", to_user="bob")
    assert refused.status == 403


async def test_wrong_password_is_challenged_again() -> None:
    h = harness(InProcessRegistrar())
    assert (await authenticated(h, "alice", "guess")).status == 401


async def test_without_register_auth_the_registrar_answers_at_once() -> None:
    h = harness(InProcessRegistrar(register_auth=False))
    ok = final(await run(h, h.feed(register("bob"))))
    assert ok.status == 200 and ok.get("Contact")


async def test_calls_fork_to_bindings_by_q_through_nat_and_404_480() -> None:
    reg = InProcessRegistrar(register_auth=False)
    h = harness(reg)
    for port in (5094, 5096):  # q=0.1 and q=0.3, both via the NAT address 127.0.0.1:5091
        assert final(await run(h, h.feed(register("bob", contact_port=port,
                                                  cseq=port)))).status == 200
    invite = (
        f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKi1\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:carol@far.example>;tag=c1\r\nTo: <sip:bob@{DOMAIN}>\r\n"
        "Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@127.0.0.1:5070>\r\n"
        "Content-Length: 0\r\n\r\n")
    sends = await run(h, h.feed(invite, peer=("127.0.0.1", 5070)))
    forwarded = [parse_message(s.data) for s in sends if s.dest.port == 5091]
    uris = [m.uri for m in forwarded if isinstance(m, Request)]
    assert uris == ["sip:bob@10.0.0.9:5096", "sip:bob@10.0.0.9:5094"]  # q 0.3 then 0.1
    for who, status in (("nobody", 404), ("alice", 480)):
        sends = await run(h, h.feed(invite.replace("sip:bob@", f"sip:{who}@").replace(
            "z9hG4bKi1", f"z9hG4bK{who}").replace("call-1", f"call-{who}"),
            peer=("127.0.0.1", 5070)))
        [resp] = [parse_response(s.data) for s in sends if s.dest.port == 5070
                  and parse_response(s.data).status >= 200]
        assert resp.status == status


def test_ha1_helper_matches_rfc_7616() -> None:
    md5, sha = ha1_hashes("alice", DOMAIN, "pw")
    assert md5 == hashlib.md5(b"alice:example.com:pw").hexdigest()
    assert sha == hashlib.sha256(b"alice:example.com:pw").hexdigest()
