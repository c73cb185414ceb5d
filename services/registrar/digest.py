"""The registrar's half of REGISTER's digest check (SaveWithDigest, issue 22), sans-IO.

The edge signed the nonce, checked its MAC and age and claimed its nonce-count (those need
the edge's secret and its workers' shared table: services/edge/auth.py `claim` says why
the count stays there); it sends the credentials it chose as parsed fields.  Here the
response is checked against the HA1 the registrar holds (`shared.sip.verify_ha1`, RFC 7616
§3.4.1, the same function the edge's own check uses), which saves the edge a
GetCredentials round trip per REGISTER and any cache of hashes.

Rules, in the order the edge applied them before (RFC 3261 §22.4, §10.3 step 3): the
credentials must be for the realm challenged (the To domain) and right for a subscriber
(else `REJECTED`: the edge challenges again); then they must be the To user's (else
`OTHER_USER`: 403, as the edge answered).
"""

from __future__ import annotations

from typing import Any, Literal

from services.registrar.subscribers import Subscriber
from shared.sip import DigestCredentials, Request, verify_ha1

Verdict = Literal["ok", "rejected", "other-user"]
OTHER_USER_REASON = "Forbidden: credentials are not for the To user"


def credentials_of(digest: Any) -> DigestCredentials:
    """A `registrar.v1.Digest` message as the parsed credentials (empty = absent)."""
    return DigestCredentials(
        username=digest.username, realm=digest.realm, nonce=digest.nonce, uri=digest.uri,
        response=digest.response, algorithm=digest.algorithm or "MD5",
        qop=digest.qop or None, nc=digest.nc or None, cnonce=digest.cnonce or None)


def lookup_key(request: Request, creds: DigestCredentials) -> tuple[str, str] | None:
    """(username, domain) of the subscriber whose HA1 checks `creds`; None when the
    credentials are not for the realm challenged (the To domain): rejected unlooked."""
    realm = request.to_addr.uri.host.lower()
    if creds.realm != realm or not creds.username:
        return None
    return creds.username, realm


def ha1_for(sub: Subscriber, algorithm: str) -> str | None:
    """The stored hash for `algorithm` (RFC 8760: MD5 and SHA-256, -sess or not)."""
    name = algorithm.strip().upper().removesuffix("-SESS")
    if name == "MD5":
        return sub.ha1
    if name == "SHA-256":
        return sub.ha1_sha256 or None
    return None


def check(request: Request, creds: DigestCredentials, sub: Subscriber | None) -> Verdict:
    """The verdict on `creds` given the subscriber they name (None: no such one)."""
    return verdict(creds, sub, request.method, request.body, request.to_addr.uri.user)


def verdict(creds: DigestCredentials, sub: Subscriber | None, method: str, body: bytes,
            to_user: str | None) -> Verdict:
    """`check` on what it reads of the request (plain values: usable off the event loop,
    where the one-trip Save checks them)."""
    if sub is None:
        return "rejected"
    ha1 = ha1_for(sub, creds.algorithm)
    if ha1 is None or not verify_ha1(creds, ha1, method, body):
        return "rejected"
    if creds.username != to_user:
        return "other-user"
    return "ok"
