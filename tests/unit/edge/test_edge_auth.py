"""Proxy authentication for untrusted sources (RFC 3261 §22.3): never an open relay."""

from __future__ import annotations

from typing import Any

from services.edge.auth import ProxyAuthenticator
from shared.sip import Request, Response, answer_challenge, parse_challenge
from tests.unit.edge.proxyharness import Harness, invite, to


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[Harness, Clock]:
    clock = Clock()
    auth = ProxyAuthenticator("sipmesh", {"alice": "s3cret"}, b"k" * 32, clock, nonce_ttl=60)
    return Harness(trusted=(), auth=auth), clock


def challenge_of(sends: list[Any]) -> Response:
    [resp] = [m for m in to(sends, 5091) if isinstance(m, Response) and m.status != 100]
    assert resp.status == 407
    return resp


def with_credentials(text: str, challenge: str, password: str, n: int) -> str:
    creds = answer_challenge(parse_challenge(challenge, "Proxy-Authenticate"),
                             username="alice", password=password, method="INVITE",
                             uri="sip:bob@far.example", cnonce=f"c{n}")
    return text.replace("Content-Length: 0", f"Proxy-Authorization: {creds}\r\n"
                        "Content-Length: 0")


def test_untrusted_source_is_challenged_then_relayed_with_valid_credentials() -> None:
    h, _ = setup()
    first = challenge_of(h.feed(invite("sip:bob@far.example")))
    offered = parse_challenge(first.get("Proxy-Authenticate") or "", "Proxy-Authenticate")
    assert offered.realm == "sipmesh" and "auth" in offered.qop
    retry = with_credentials(invite("sip:bob@far.example", branch="z9hG4bK2"),
                             first.get("Proxy-Authenticate") or "", "s3cret", 1)
    sends = h.feed(retry)
    fwd = [m for m in to(sends, 5060) if isinstance(m, Request)]
    assert fwd and fwd[0].uri == "sip:bob@far.example"
    assert not fwd[0].has("Proxy-Authorization")  # consumed: it was for us (§22.3)


def test_wrong_password_is_challenged_again() -> None:
    h, _ = setup()
    first = challenge_of(h.feed(invite("sip:bob@far.example")))
    retry = with_credentials(invite("sip:bob@far.example", branch="z9hG4bK2"),
                             first.get("Proxy-Authenticate") or "", "guess", 1)
    challenge_of(h.feed(retry))


def test_expired_nonce_gets_a_stale_challenge() -> None:
    h, clock = setup()
    first = challenge_of(h.feed(invite("sip:bob@far.example")))
    clock.now += 120
    retry = with_credentials(invite("sip:bob@far.example", branch="z9hG4bK2"),
                             first.get("Proxy-Authenticate") or "", "s3cret", 1)
    again = challenge_of(h.feed(retry))
    assert parse_challenge(again.get("Proxy-Authenticate") or "", "Proxy-Authenticate").stale


def test_without_users_untrusted_relay_is_forbidden() -> None:
    h = Harness(trusted=())
    sends = h.feed(invite("sip:bob@far.example"))
    assert [m.status for m in to(sends, 5091) if isinstance(m, Response)] == [100, 403]


def _rfc2069(text: str, challenge: str, password: str) -> str:
    from shared.sip import compute_response

    c = parse_challenge(challenge, "Proxy-Authenticate")
    response = compute_response(username="alice", password=password, realm=c.realm,
                                method="INVITE", uri="sip:bob@far.example", nonce=c.nonce)
    value = (f'Digest username="alice", realm="{c.realm}", nonce="{c.nonce}", '
             f'uri="sip:bob@far.example", response="{response}"')
    return text.replace("Content-Length: 0", f"Proxy-Authorization: {value}\r\n"
                        "Content-Length: 0")


def test_an_answer_without_qop_is_refused_when_qop_was_offered() -> None:
    # A downgrade (qop stripped on the path) or a pre-RFC 2617 phone: no nonce-count, so the
    # answer could be replayed until the nonce expires. Challenged again.
    h, _ = setup()
    first = challenge_of(h.feed(invite("sip:bob@far.example")))
    retry = _rfc2069(invite("sip:bob@far.example", branch="z9hG4bK2"),
                     first.get("Proxy-Authenticate") or "", "s3cret")
    challenge_of(h.feed(retry))


def test_old_phones_allowed_explicitly_use_each_nonce_once() -> None:
    clock = Clock()
    auth = ProxyAuthenticator("sipmesh", {"alice": "s3cret"}, b"k" * 32, clock,
                              allow_rfc2069=True)
    h = Harness(trusted=(), auth=auth)
    first = challenge_of(h.feed(invite("sip:bob@far.example")))
    retry = _rfc2069(invite("sip:bob@far.example", branch="z9hG4bK2"),
                     first.get("Proxy-Authenticate") or "", "s3cret")
    assert [m for m in to(h.feed(retry), 5060) if isinstance(m, Request)]
    replay = retry.replace("z9hG4bK2", "z9hG4bK3").replace("Call-ID: c1", "Call-ID: c2")
    challenge_of(h.feed(replay))  # the same nonce again: refused


def test_a_challenge_is_what_digest_challenge_renders_for_its_nonce() -> None:
    # ProxyAuthenticator.challenge writes the usual challenge out without the object.
    from shared.sip import DigestChallenge

    auth = ProxyAuthenticator("sipmesh", {}, b"k" * 32, lambda: 1e9)
    for realm in ("example.com", 'odd "realm"', "back\\slash"):
        for stale in (False, True):
            for algorithm in ("MD5", "SHA-256"):
                text = auth.challenge(stale, realm=realm, algorithm=algorithm)
                nonce = parse_challenge(text).nonce
                assert text == str(DigestChallenge(realm=realm, nonce=nonce, qop=["auth"],
                                                   stale=stale, algorithm=algorithm))
                assert parse_challenge(text).realm == realm
