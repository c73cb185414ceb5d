"""Digest checks against stored HA1 hashes (the registrar's subscribers): MD5 and SHA-256
(RFC 8760), stale nonces, wrong passwords, and nonce-count replay protection (RFC 7616 §3.4)."""

from __future__ import annotations

import hashlib

from services.edge.auth import ProxyAuthenticator
from shared.sip import Request, answer_challenge, parse_challenge
from tests.support.sipmsg import parse_request

HA1 = {
    "MD5": hashlib.md5(b"alice:example.com:pw").hexdigest(),
    "SHA-256": hashlib.sha256(b"alice:example.com:pw").hexdigest(),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def ha1_of(username: str, algorithm: str, fresh: bool) -> str | None:
    return HA1.get(algorithm.upper()) if username == "alice" else None


def register(challenge: str, password: str = "pw", nc: int = 1, cnonce: str = "c") -> Request:
    creds = answer_challenge(parse_challenge(challenge), username="alice", password=password,
                             method="REGISTER", uri="sip:example.com", cnonce=cnonce, nc=nc)
    return parse_request((
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n"
        "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
        "Call-ID: c1\r\nCSeq: 2 REGISTER\r\nMax-Forwards: 70\r\n"
        f"Authorization: {creds}\r\nContent-Length: 0\r\n\r\n").encode())


async def test_md5_and_sha256_credentials_verify_against_ha1() -> None:
    auth = ProxyAuthenticator("x", {}, b"k" * 32, Clock())
    for algorithm in ("MD5", "SHA-256"):
        [challenge] = auth.challenges("example.com", False, [algorithm])
        assert f"algorithm={algorithm}" in challenge
        user, stale = await auth.verify(register(challenge), "Authorization", "example.com",
                                        ha1_of)
        assert (user, stale) == ("alice", False)


async def test_wrong_password_other_realm_and_unknown_user_fail() -> None:
    auth = ProxyAuthenticator("x", {}, b"k" * 32, Clock())
    [challenge] = auth.challenges("example.com", False, ["MD5"])
    assert (await auth.verify(register(challenge, "nope"), "Authorization", "example.com",
                              ha1_of))[0] is None
    assert (await auth.verify(register(challenge), "Authorization", "other.org",
                              ha1_of))[0] is None


async def test_replayed_nonce_count_is_refused_a_higher_one_accepted() -> None:
    auth = ProxyAuthenticator("x", {}, b"k" * 32, Clock())
    [challenge] = auth.challenges("example.com", False, ["MD5"])
    first = register(challenge, nc=1)
    assert (await auth.verify(first, "Authorization", "example.com", ha1_of))[0] == "alice"
    assert (await auth.verify(first, "Authorization", "example.com", ha1_of))[0] is None
    again = register(challenge, nc=2, cnonce="d")
    assert (await auth.verify(again, "Authorization", "example.com", ha1_of))[0] == "alice"


async def test_every_challenge_has_its_own_nonce_and_old_ones_are_stale() -> None:
    clock = Clock()
    auth = ProxyAuthenticator("x", {}, b"k" * 32, clock, nonce_ttl=30)
    a, b = auth.challenges("example.com", False, ["MD5", "MD5"])
    assert parse_challenge(a).nonce != parse_challenge(b).nonce
    clock.now += 60
    assert await auth.verify(register(a), "Authorization", "example.com", ha1_of) == (None, True)
    forged = a.replace(parse_challenge(a).nonce, "0-0.deadbeef")
    assert await auth.verify(register(forged), "Authorization", "example.com",
                             ha1_of) == (None, False)
