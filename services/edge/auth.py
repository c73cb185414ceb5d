"""Proxy authentication (RFC 3261 §22.3) for sources outside the trusted networks.

Stateless nonces: `<issued-at hex>-<random>.<HMAC(secret, issued-at-random)>`, so any
worker holding the same secret can verify a nonce without remembering it, and a nonce older than
`nonce_ttl` earns a fresh challenge with `stale=true` instead of a rejection (RFC 7616
§3.3).  The clock is injected.

Two credential sources: the static `[edge].users` list (`name:password`, realm
`[edge].realm`, checked by the synchronous `authenticate`), and the registrar's subscriber
store, whose HA1 hashes (realm = the user's domain) are checked by the asynchronous
`verify` -- for REGISTER (`Authorization`, 401) and for calls (`Proxy-Authorization`, 407).
HA1-based verification handles MD5, SHA-256 and SHA-512-256 with or without `-sess`
(RFC 7616 §3.4.1, RFC 8760).

Replay protection: with qop, a nonce-count (`nc`) must grow for each use of a nonce
(RFC 7616 §3.4); the highest count seen per nonce is remembered until the nonce expires
(bounded table), so a captured request replayed with the same nc is challenged again.
The table is per edge worker: a replay sent to another worker of the same edge is caught
only by the nonce expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from shared.sip import DigestChallenge, DigestCredentials, SipParseError, parse_credentials

if TYPE_CHECKING:
    from shared.sip import Request


class ProxyAuthenticator:
    def __init__(self, realm: str, users: Mapping[str, str], secret: bytes,
                 clock: Callable[[], float], nonce_ttl: float = 300.0) -> None:
        self.realm = realm
        self.users = dict(users)
        self.secret = secret
        self.clock = clock
        self.nonce_ttl = nonce_ttl
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.max_tracked = 200_000

    def _sign(self, issued: str) -> str:
        return hmac.new(self.secret, issued.encode(), hashlib.sha256).hexdigest()[:32]

    def nonce(self) -> str:
        # A random part makes every challenge's nonce unique (two phones challenged in
        # the same second must not share a nonce: nonce-counts are tracked per nonce).
        issued = f"{int(self.clock()):x}-{os.urandom(6).hex()}"
        return f"{issued}.{self._sign(issued)}"

    def _nonce_state(self, nonce: str) -> str:
        """'ok', 'stale' or 'bad'."""
        issued, _, mac = nonce.partition(".")
        if not hmac.compare_digest(mac, self._sign(issued)):
            return "bad"
        try:
            age = self.clock() - int(issued.partition("-")[0], 16)
        except ValueError:
            return "bad"
        return "ok" if 0 <= age <= self.nonce_ttl else "stale"

    def challenge(self, stale: bool = False, *, realm: str | None = None,
                  algorithm: str = "MD5") -> str:
        """The Proxy-Authenticate (or WWW-Authenticate) value of a 407 (401)."""
        return str(DigestChallenge(realm=realm or self.realm, nonce=self.nonce(),
                                   qop=["auth"], stale=stale, algorithm=algorithm))

    def challenges(self, realm: str, stale: bool, algorithms: Sequence[str]) -> list[str]:
        """One challenge per algorithm, preferred first (RFC 8760 §2.4)."""
        return [self.challenge(stale, realm=realm, algorithm=a) for a in algorithms]

    def _fresh_count(self, nonce: str, nc: str | None) -> bool:
        """True when `nc` is higher than any count seen with `nonce` (and remembers it)."""
        if nc is None:
            return True  # RFC 2069 credentials carry no count: only the nonce expiry holds
        try:
            count = int(nc, 16)
        except ValueError:
            return False
        now = self.clock()
        counts = self._counts
        while counts:
            oldest, (_, seen_at) = next(iter(counts.items()))
            if now - seen_at <= self.nonce_ttl and len(counts) < self.max_tracked:
                break
            counts.pop(oldest)
        previous = counts.get(nonce)
        if previous is not None and count <= previous[0]:
            return False
        counts[nonce] = (count, previous[1] if previous else now)
        return True

    def _offered(self, request: Request, header: str,
                 realm: str) -> Iterator[tuple[DigestCredentials, str]]:
        """(credentials, 'ok' or 'stale') for each parseable `header` value of `realm`
        whose nonce is ours; the others are skipped."""
        for value in request.get_all(header):
            try:
                creds = parse_credentials(value, header)
            except SipParseError:
                continue
            if creds.realm != realm:
                continue  # for another realm (another proxy further on, §22.3)
            state = self._nonce_state(creds.nonce)
            if state != "bad":
                yield creds, state

    async def verify(
        self, request: Request, header: str, realm: str,
        ha1_of: Callable[[str, str, bool], Awaitable[str | None]],
    ) -> tuple[str | None, bool]:
        """(user, stale) for credentials of `realm` in `header`, checked against the HA1
        that `ha1_of(username, algorithm, fresh)` returns (None: unknown user)."""
        stale = False
        for creds, state in self._offered(request, header, realm):
            ha1 = await ha1_of(creds.username, creds.algorithm, False)
            if ha1 is None:
                continue
            if not _check_ha1(creds, ha1, request.method, request.body):
                fresh = await ha1_of(creds.username, creds.algorithm, True)
                if fresh is None or fresh == ha1 or not _check_ha1(
                        creds, fresh, request.method, request.body):
                    continue
            if state == "stale":
                stale = True
                continue
            if not self._fresh_count(creds.nonce, creds.nc):
                continue  # a replayed nonce-count
            return creds.username, False
        return None, stale

    def authenticate(self, request: Request) -> tuple[str | None, bool]:
        """(user, stale): the authenticated user name, or None and whether to say stale."""
        stale = False
        for creds, state in self._offered(request, "Proxy-Authorization", self.realm):
            password = self.users.get(creds.username)
            if password is None:
                continue
            if not creds.verify(password, request.method, request.body):
                continue
            if state == "stale":
                stale = True
                continue
            if not self._fresh_count(creds.nonce, creds.nc):
                continue  # a replayed nonce-count
            return creds.username, False
        return None, stale

    def consume(self, request: Request, realm: str | None = None) -> None:
        """Remove our realm's credentials before forwarding (§22.3: they were for us)."""
        realm = realm or self.realm
        values = request.get_all("Proxy-Authorization")
        kept = []
        for value in values:
            try:
                ours = parse_credentials(value, "Proxy-Authorization").realm == realm
            except SipParseError:
                ours = False
            if not ours:
                kept.append(value)
        if len(kept) != len(values):
            request.remove_header("Proxy-Authorization")
            for value in kept:
                request.add_header("Proxy-Authorization", value, first=False)


_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
    "SHA-512-256": lambda b: hashlib.new("sha512_256", b).hexdigest(),
}


def _check_ha1(creds: DigestCredentials, ha1: str, method: str, body: bytes) -> bool:
    """RFC 7616 §3.4.1 from a stored HA1 instead of a password (constant-time compare)."""
    name = creds.algorithm.strip().upper()
    sess = name.endswith("-SESS")
    h = _HASHES.get(name.removesuffix("-SESS"))
    if h is None:
        return False
    if sess:
        ha1 = h(f"{ha1}:{creds.nonce}:{creds.cnonce or ''}".encode())
    if creds.qop == "auth-int":
        ha2 = h(f"{method}:{creds.uri}:".encode() + h(body).encode())
    else:
        ha2 = h(f"{method}:{creds.uri}".encode())
    if creds.qop:
        expected = h(f"{ha1}:{creds.nonce}:{creds.nc or ''}:{creds.cnonce or ''}:"
                     f"{creds.qop}:{ha2}".encode())
    else:
        expected = h(f"{ha1}:{creds.nonce}:{ha2}".encode())
    return hmac.compare_digest(expected, creds.response.lower())
