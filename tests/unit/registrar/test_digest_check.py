"""The registrar's half of REGISTER's digest check (services/registrar/digest.py, issue 22):
the response against the stored HA1 (MD5, SHA-256, -sess, auth-int), the realm and the To
user, as the edge checked them before SaveWithDigest."""

from __future__ import annotations

import pytest

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from services.registrar import digest
from services.registrar.subscribers import Subscriber, ha1_hashes
from shared.sip import DigestChallenge, Request, answer_challenge
from tests.support.sipmsg import parse_request

DOMAIN = "example.com"
ALICE = Subscriber("alice", DOMAIN, *ha1_hashes("alice", DOMAIN, "pw"))


def request(to_user: str = "alice", body: str = "") -> Request:
    return parse_request((
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=1\r\nTo: <sip:{to_user}@Example.COM>\r\n"
        "Call-ID: c1\r\nCSeq: 2 REGISTER\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}").encode())


def sent(password: str = "pw", *, algorithm: str = "MD5", qop: str = "auth",
         realm: str = DOMAIN, body: bytes = b"") -> pb.Digest:
    """What the edge sends: the phone's answer, as parsed fields."""
    challenge = DigestChallenge(realm=realm, nonce="n0nce.mac", qop=[qop] if qop else [],
                                algorithm=algorithm)
    creds = answer_challenge(challenge, username="alice", password=password,
                             method="REGISTER", uri=f"sip:{DOMAIN}", cnonce="c", nc=1,
                             body=body)
    return pb.Digest(username=creds.username, realm=creds.realm, nonce=creds.nonce,
                     uri=creds.uri, response=creds.response, algorithm=creds.algorithm,
                     qop=creds.qop or "", nc=creds.nc or "", cnonce=creds.cnonce or "")


def verdict(msg: Request, d: pb.Digest, sub: Subscriber | None = ALICE) -> str:
    creds = digest.credentials_of(d)
    key = digest.lookup_key(msg, creds)
    return digest.check(msg, creds, sub if key == ("alice", DOMAIN) else None)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_right_answers_pass_for_each_stored_algorithm(algorithm: str) -> None:
    assert verdict(request(), sent(algorithm=algorithm)) == "ok"


def test_auth_int_covers_the_body_and_rfc_2069_answers_check_too() -> None:
    body = "hello"
    assert verdict(request(body=body), sent(qop="auth-int", body=body.encode())) == "ok"
    assert verdict(request(body=body), sent(qop="auth-int", body=b"other")) == "rejected"
    assert verdict(request(), sent(qop="")) == "ok"  # the edge decided it may be used


def test_wrong_password_unknown_user_other_realm_and_unstored_algorithm_are_rejected(
        ) -> None:
    assert verdict(request(), sent("guess")) == "rejected"
    assert verdict(request(), sent(), None) == "rejected"
    assert verdict(request(), sent(realm="other.example")) == "rejected"
    assert verdict(request(), sent(algorithm="SHA-512-256")) == "rejected"
    no_sha = Subscriber("alice", DOMAIN, ALICE.ha1, "")
    assert verdict(request(), sent(algorithm="SHA-256"), no_sha) == "rejected"


def test_right_credentials_for_another_to_user_are_the_403_case() -> None:
    assert verdict(request(to_user="bob"), sent()) == "other-user"


def test_the_lookup_is_by_the_lower_case_to_domain() -> None:
    creds = digest.credentials_of(sent())
    assert digest.lookup_key(request(), creds) == ("alice", DOMAIN)
    assert digest.lookup_key(request(), digest.credentials_of(pb.Digest(
        realm=DOMAIN))) is None  # no user name
