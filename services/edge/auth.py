"""Proxy authentication (RFC 3261 §22.3) for sources outside the trusted networks.

Stateless nonces: `<issued-at hex>.<HMAC(secret, issued-at)>`, so any worker holding the
same secret can verify a nonce without remembering it, and a nonce older than
`nonce_ttl` earns a fresh challenge with `stale=true` instead of a rejection (RFC 7616
§3.3).  Users and passwords come from `[edge].users` (`name:password`); the registrar's
subscriber store replaces that list once it exists.  The clock is injected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from shared.sip import DigestChallenge, SipParseError, parse_credentials

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

    def _sign(self, issued: str) -> str:
        return hmac.new(self.secret, issued.encode(), hashlib.sha256).hexdigest()[:32]

    def nonce(self) -> str:
        issued = f"{int(self.clock()):x}"
        return f"{issued}.{self._sign(issued)}"

    def _nonce_state(self, nonce: str) -> str:
        """'ok', 'stale' or 'bad'."""
        issued, _, mac = nonce.partition(".")
        if not hmac.compare_digest(mac, self._sign(issued)):
            return "bad"
        try:
            age = self.clock() - int(issued, 16)
        except ValueError:
            return "bad"
        return "ok" if 0 <= age <= self.nonce_ttl else "stale"

    def challenge(self, stale: bool = False) -> str:
        """The Proxy-Authenticate value of a 407."""
        return str(DigestChallenge(realm=self.realm, nonce=self.nonce(), qop=["auth"],
                                   stale=stale))

    def authenticate(self, request: Request) -> tuple[str | None, bool]:
        """(user, stale): the authenticated user name, or None and whether to say stale."""
        stale = False
        for value in request.get_all("Proxy-Authorization"):
            try:
                creds = parse_credentials(value, "Proxy-Authorization")
            except SipParseError:
                continue
            if creds.realm != self.realm:
                continue  # credentials for another proxy further on (§22.3)
            state = self._nonce_state(creds.nonce)
            password = self.users.get(creds.username)
            if password is None or state == "bad":
                continue
            if not creds.verify(password, request.method, request.body):
                continue
            if state == "stale":
                stale = True
                continue
            return creds.username, False
        return None, stale

    def consume(self, request: Request) -> None:
        """Remove our realm's credentials before forwarding (§22.3: they were for us)."""
        values = request.get_all("Proxy-Authorization")
        kept = []
        for value in values:
            try:
                ours = parse_credentials(value, "Proxy-Authorization").realm == self.realm
            except SipParseError:
                ours = False
            if not ours:
                kept.append(value)
        if len(kept) != len(values):
            request.remove_header("Proxy-Authorization")
            for value in kept:
                request.add_header("Proxy-Authorization", value, first=False)
