"""Proxy authentication (RFC 3261 §22.3) for sources outside the trusted networks.

Stateless nonces: `<issued-at>-<slot>-<generation>-<instance>.<MAC>` (hex numbers; MAC =
keyed BLAKE2b of the part before the dot with the edge's secret), so any worker holding the
same secret can verify a nonce without remembering it, and a nonce older than `nonce_ttl`
earns a fresh challenge with `stale=true` instead of a rejection (RFC 7616 §3.3).  `slot`
and `generation` come from the nonce-count table (below); `instance` is random per
authenticator, so edges sharing a secret never hand out the same nonce.  The clock is
injected.  The MAC is a copy of a keyed BLAKE2b state (one C call, ~0.4 us) rather than
`hmac.new` per nonce (~1.7 us): nonce() runs once per challenge, at REGISTER rate.

Two credential sources: the static `[edge].users` list (`name:password`, realm
`[edge].realm`, checked by the synchronous `authenticate`), and the registrar's subscriber
store, whose HA1 hashes (realm = the user's domain) are checked by the asynchronous
`verify` -- for REGISTER (`Authorization`, 401) and for calls (`Proxy-Authorization`, 407).
HA1-based verification handles MD5, SHA-256 and SHA-512-256 with or without `-sess`
(RFC 7616 §3.4.1, RFC 8760).

Replay protection: with qop, a nonce-count (`nc`) must grow for each use of a nonce
(RFC 7616 §3.4).  The highest count per nonce lives in the nonce's slot of a
`services.edge.nonce_counts` table: in-process for a one-worker edge, in shared memory
for all the workers of an edge, so a captured request replayed with the same nc is
challenged again whichever worker receives it.  A nonce whose slot was taken over by a
newer one gets a `stale=true` challenge.  Credentials without qop (RFC 2069) carry no
count, so a captured one could be replayed (with other Contacts) until its nonce expires:
they are refused (challenged again), since every challenge here offers qop, unless
`[edge] auth_allow_rfc2069` lets old phones in, and then each nonce serves once.

REGISTER's digest is checked by the registrar on Save (issue 22: one gRPC round trip, no
HA1 at the edge): the edge checks the nonce (MAC, age) and claims the nonce-count first
(`claim`, which says why the count stays here), the registrar verifies the response
against the stored HA1 (`shared.sip.verify_ha1`, the same check as `verify`'s).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from services.edge.nonce_counts import LocalNonceCounts, NonceCounts, Verdict
from shared.sip import (
    DigestChallenge,
    DigestCredentials,
    SipParseError,
    parse_credentials,
    verify_ha1,
)

if TYPE_CHECKING:
    from shared.sip import Request

# (credentials, 'ok' or 'stale', slot, generation) of one offered Authorization value
_Offer = tuple[DigestCredentials, str, int, int]


class Claim:
    """A nonce-count claimed for credentials checked elsewhere (`ProxyAuthenticator.claim`):
    the verdict, and what `release` needs to undo it."""

    def __init__(self, creds: DigestCredentials, verdict: Verdict, slot: int,
                 generation: int, count: int, owner: int, highest: int) -> None:
        self.creds = creds
        self.verdict = verdict
        self.slot = slot
        self.generation = generation
        self.count = count
        self.owner = owner  # the slot before the claim
        self.highest = highest


class ProxyAuthenticator:
    def __init__(self, realm: str, users: Mapping[str, str], secret: bytes,
                 clock: Callable[[], float], nonce_ttl: float = 300.0,
                 counts: NonceCounts | None = None, *, allow_rfc2069: bool = False) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        self.realm = realm
        self.allow_rfc2069 = allow_rfc2069
        self.users = dict(users)
        self.clock = clock
        self.nonce_ttl = nonce_ttl
        self.counts: NonceCounts = (
            counts if counts is not None else LocalNonceCounts(int(clock())))
        # BLAKE2b takes keys up to 64 bytes; a longer secret is hashed down to one.
        key = secret if len(secret) <= 64 else hashlib.blake2b(secret).digest()
        self._mac = hashlib.blake2b(key=key, digest_size=16)
        self._instance = os.urandom(4).hex()

    def _sign(self, body: str) -> str:
        mac = self._mac.copy()
        mac.update(_raw(body))
        return mac.hexdigest()

    def nonce(self) -> str:
        # Every challenge gets its own slot/generation: nonce-counts are tracked per nonce,
        # so two phones challenged in the same second must not share one.
        slot, generation = self.counts.issue()
        body = f"{int(self.clock()):x}-{slot:x}-{generation:x}-{self._instance}"
        return f"{body}.{self._sign(body)}"

    def _nonce_state(self, nonce: str) -> tuple[str, int, int]:
        """('ok', 'stale' or 'bad', slot, generation)."""
        body, _, mac = nonce.partition(".")
        # compare_digest refuses non-ASCII str: such a MAC is simply not ours.
        if not mac.isascii() or not hmac.compare_digest(mac, self._sign(body)):
            return "bad", 0, 0
        try:
            issued_at, slot_at, generation_at, _ = body.split("-")
            issued, slot = int(issued_at, 16), int(slot_at, 16)
            generation = int(generation_at, 16)
        except ValueError:  # signed by us, so only a nonce of another format gets here
            return "bad", 0, 0
        age = self.clock() - issued
        if not 0 <= age <= self.nonce_ttl or issued < self.counts.epoch:
            return "stale", slot, generation
        return "ok", slot, generation

    def challenge(self, stale: bool = False, *, realm: str | None = None,
                  algorithm: str = "MD5") -> str:
        """The Proxy-Authenticate (or WWW-Authenticate) value of a 407 (401)."""
        realm = realm or self.realm
        if '"' in realm or "\\" in realm:
            return str(DigestChallenge(realm=realm, nonce=self.nonce(), qop=["auth"],
                                       stale=stale, algorithm=algorithm))
        # What str(DigestChallenge) renders for these values (our nonces need no quoting),
        # without the object: one per REGISTER (tests/unit/edge/test_edge_auth.py).
        return (f'Digest realm="{realm}", nonce="{self.nonce()}"'
                f'{", stale=true" if stale else ""}, algorithm={algorithm}, qop="auth"')

    def challenges(self, realm: str, stale: bool, algorithms: Sequence[str]) -> list[str]:
        """One challenge per algorithm, preferred first (RFC 8760 §2.4)."""
        return [self.challenge(stale, realm=realm, algorithm=a) for a in algorithms]

    def _nc(self, creds: DigestCredentials) -> int | None:
        """The nonce-count an answer uses (1 for an admitted RFC 2069 answer), or None
        when it may not be used at all."""
        nc = creds.nc
        if creds.qop is None:
            # Every challenge of ours offers qop: an answer without it is a downgrade (or
            # a phone from before RFC 2617) and, carrying no count, could be replayed until
            # the nonce expires.  Refused, unless `[edge] auth_allow_rfc2069`; then its
            # nonce serves once, as if its count were 1.
            return 1 if self.allow_rfc2069 else None
        if nc is None or len(nc) > 16:
            return None
        try:
            return int(nc, 16)
        except ValueError:
            return None

    def _count(self, slot: int, generation: int, creds: DigestCredentials) -> Verdict:
        """Whether the answer may be used: its `nc` is higher than any count seen with the
        nonce (and is remembered), or, for an RFC 2069 answer, whether those are allowed."""
        count = self._nc(creds)
        if count is None:
            return "bad"
        return self.counts.advance(slot, generation, count)

    def claim(self, request: Request, header: str, realm: str) -> Claim | None:
        """For a digest check made elsewhere (the registrar's SaveWithDigest, issue 22):
        the one answer of `realm` in `header` with a live nonce of ours, its nonce-count
        claimed now (`Claim.verdict` "ok"), before the registrar checks the response.

        None when this path does not decide: no such answer (the caller's `verify` finds
        none and challenges), several (`verify` tries each), or a stale nonce (`verify`
        checks the response before it says stale=true, RFC 7616 §3.3).

        Why the count is claimed here, before the check, and not at the registrar: the
        counts are shared by every worker of this edge, while the registrars are several
        nodes that the Saves are spread over (round robin, retries); a count checked there
        would let a replay through to another node.  Claimed first, a count is used at most
        once whatever the registrar answers, as before; a claim whose response the
        registrar finds wrong is undone (`release`), so a forged answer cannot burn the
        counts (or displace the nonce) of a phone whose nonce it has seen."""
        offers = list(self._offered(request, header, realm))
        if len(offers) != 1 or offers[0][1] != "ok":
            return None
        creds, _, slot, generation = offers[0]
        count = self._nc(creds)
        if count is None:
            return Claim(creds, "bad", slot, generation, 0, 0, 0)
        verdict, owner, highest = self.counts.claim(slot, generation, count)
        return Claim(creds, verdict, slot, generation, count, owner, highest)

    def release(self, claim: Claim) -> None:
        """Undo an "ok" claim whose credentials were found wrong (see `claim`)."""
        if claim.verdict == "ok":
            self.counts.release(claim.slot, claim.generation, claim.count, claim.owner,
                                claim.highest)

    def _offered(self, request: Request, header: str, realm: str) -> Iterator[_Offer]:
        """(credentials, 'ok' or 'stale', slot, generation) for each parseable `header`
        value of `realm` whose nonce is ours; the others are skipped."""
        for value in request.get_all(header):
            try:
                creds = parse_credentials(value, header)
            except SipParseError:
                continue
            if creds.realm != realm:
                continue  # for another realm (another proxy further on, §22.3)
            state, slot, generation = self._nonce_state(creds.nonce)
            if state != "bad":
                yield creds, state, slot, generation

    def _use(self, offer: _Offer) -> Verdict:
        """The verdict on verified credentials: expiry first, then the nonce-count."""
        creds, state, slot, generation = offer
        if state == "stale":
            return "stale"
        return self._count(slot, generation, creds)

    async def verify(
        self, request: Request, header: str, realm: str,
        ha1_of: Callable[[str, str, bool], Awaitable[str | None]],
    ) -> tuple[str | None, bool]:
        """(user, stale) for credentials of `realm` in `header`, checked against the HA1
        that `ha1_of(username, algorithm, fresh)` returns (None: unknown user)."""
        stale = False
        for offer in self._offered(request, header, realm):
            creds = offer[0]
            ha1 = await ha1_of(creds.username, creds.algorithm, False)
            if ha1 is None:
                continue
            if not verify_ha1(creds, ha1, request.method, request.body):
                fresh = await ha1_of(creds.username, creds.algorithm, True)
                if fresh is None or fresh == ha1 or not verify_ha1(
                        creds, fresh, request.method, request.body):
                    continue
            verdict = self._use(offer)
            if verdict == "ok":
                return creds.username, False
            stale = stale or verdict == "stale"  # else a replayed nonce-count
        return None, stale

    def authenticate(self, request: Request) -> tuple[str | None, bool]:
        """(user, stale): the authenticated user name, or None and whether to say stale."""
        stale = False
        for offer in self._offered(request, "Proxy-Authorization", self.realm):
            creds = offer[0]
            password = self.users.get(creds.username)
            if password is None:
                continue
            if not creds.verify(password, request.method, request.body):
                continue
            verdict = self._use(offer)
            if verdict == "ok":
                return creds.username, False
            stale = stale or verdict == "stale"  # else a replayed nonce-count
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


def _raw(text: str) -> bytes:
    """Header text back to the bytes received (values are decoded with surrogateescape):
    what a digest or a hash covers, and never an error on bytes that are not UTF-8."""
    return text.encode("utf-8", "surrogateescape")
