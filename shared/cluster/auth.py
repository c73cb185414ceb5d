"""Link security: the mutual challenge-response and the sealed frames (sans-IO).

A cluster link is a gRPC stream dialed by one node (the *dialer*) to another (the
*answerer*); the wire format is ``Frame`` in contracts/proto/sipmesh/cluster/v1.

Handshake (both proofs cover both fresh nonces, so nothing recorded can be replayed):

=========  ============================================================================
dialer     ``Hello{cluster_id, node_id, to_node, nonce_d}`` (16 random bytes)
answerer   ``Welcome{node_id, nonce_a, mac = proof("answer")}``; the dialer checks it
dialer     ``Auth{mac = proof("dial")}``; the answerer checks it
=========  ============================================================================

``proof(role) = HMAC-SHA256(secret, "sipmesh-cluster-v2|role|cluster|dialer|answerer|"
nonce_d || nonce_a)``: the roles differ so a proof cannot be reflected back to its
sender, the ids are in it so a proof for one pair of nodes means nothing for another,
and each side's own fresh nonce is in the proof it checks, so a recorded Welcome or Auth
fails against a new nonce. Freshness needs no clock (the v1 Hello carried a timestamp
checked to +-60 s: replayable within that window, and fragile across skewed clocks).
The answerer also remembers the dialer nonces it saw (:class:`NonceRecord`) to report a
replayed Hello as such, although the challenge alone already defeats it.

Keys (RFC 5869 HKDF-SHA256): ``PRK = HMAC(salt = nonce_d || nonce_a, secret)``, one
32-byte key per direction, ``info`` naming the cluster, both nodes and the direction. A
stream's keys therefore exist nowhere else: a frame replayed onto another stream fails
its MAC.

Sealed frames: ``Frame{seq, body, mac}`` with ``mac = HMAC-SHA256(key, seq as 8 bytes
big-endian || body)``. The receiver accepts exactly ``seq = last + 1`` (gRPC streams are
ordered, so anything else is a replay, a drop or a reordering by someone in the middle)
and a MAC that matches; anything else is refused and ends the stream (the dialer then
reconnects with a fresh handshake). Why HMAC and not an AEAD: the replication data is
not secret on a private network (README: links are authenticated, not encrypted), and
HMAC-SHA256 from the standard library costs ~1 ms per MB sealed here; ``cryptography``
would be a new dependency for confidentiality nobody asked for yet.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
from collections import OrderedDict

LABEL = b"sipmesh-cluster-v2"
NONCE_SIZE = 16
MAC_SIZE = 32


class Refusal(enum.Enum):
    """Why a frame or a handshake was refused; the value is the ``clusterer:`` statistic."""

    AUTH = "auth_refused"          # wrong proof (wrong secret), wrong cluster, unknown node
    REPLAY = "replay_refused"      # a Hello nonce seen before, or a sealed seq not the next
    MAC = "mac_refused"            # a sealed frame whose MAC does not match (bit flipped)
    UNSIGNED = "unsigned_refused"  # packets outside a sealed frame, or before the handshake
    MALFORMED = "malformed_refused"  # bytes that are not a Frame, or an unexpected message


@dataclasses.dataclass(frozen=True)
class Refused(Exception):
    """A frame refused on a stream: the stream ends."""

    kind: Refusal
    reason: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.reason}"


def proof(secret: bytes, role: str, cluster_id: int, dialer: int, answerer: int,
          nonce_d: bytes, nonce_a: bytes) -> bytes:
    """The handshake proof of ``role`` ("answer" or "dial"); see the module docstring."""
    head = b"|".join((LABEL, role.encode(), str(cluster_id).encode(), str(dialer).encode(),
                      str(answerer).encode(), b""))
    return hmac.new(secret, head + nonce_d + nonce_a, hashlib.sha256).digest()


def check_proof(expected: bytes, got: bytes) -> bool:
    return len(got) == MAC_SIZE and hmac.compare_digest(expected, got)


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256, one block of output (32 bytes: all a key needs)."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def link_keys(secret: bytes, cluster_id: int, dialer: int, answerer: int,
              nonce_d: bytes, nonce_a: bytes) -> tuple[bytes, bytes]:
    """(dialer -> answerer key, answerer -> dialer key) of one stream."""
    base = b"|".join((LABEL, b"link", str(cluster_id).encode(), str(dialer).encode(),
                      str(answerer).encode()))
    salt = nonce_d + nonce_a
    return _hkdf(secret, salt, base + b"|d2a"), _hkdf(secret, salt, base + b"|a2d")


class Sealer:
    """Numbers and MACs the frames of one direction of one stream."""

    __slots__ = ("key", "seq")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.seq = 0

    def seal(self, body: bytes) -> tuple[int, bytes]:
        self.seq += 1
        mac = hmac.new(self.key, self.seq.to_bytes(8, "big"), hashlib.sha256)
        mac.update(body)
        return self.seq, mac.digest()


class Opener:
    """Checks the frames of one direction of one stream: the next seq, the right MAC."""

    __slots__ = ("key", "seq")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.seq = 0

    def open(self, seq: int, body: bytes, mac: bytes) -> None:
        """Raises :class:`Refused` unless the frame is the next one and authentic. The MAC
        is checked first: a forged seq must not tell a prober where the counter is."""
        expected = hmac.new(self.key, seq.to_bytes(8, "big"), hashlib.sha256)
        expected.update(body)
        if len(mac) != MAC_SIZE or not hmac.compare_digest(expected.digest(), mac):
            raise Refused(Refusal.MAC, f"frame {seq}: MAC does not match")
        if seq != self.seq + 1:
            raise Refused(Refusal.REPLAY, f"frame {seq}: expected {self.seq + 1}")
        self.seq = seq


class NonceRecord:
    """Dialer nonces seen in the last ``hold`` seconds (at most ``limit`` of them): a Hello
    carrying one again is a replay. Oldest first, so expiry pops from the front."""

    def __init__(self, hold: float = 600.0, limit: int = 100_000) -> None:
        self.hold = hold
        self.limit = limit
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def seen(self, nonce: bytes, now: float) -> bool:
        """True when ``nonce`` was seen already; otherwise remembers it."""
        seen = self._seen
        while seen:
            _, at = next(iter(seen.items()))
            if at + self.hold > now and len(seen) < self.limit:
                break
            seen.popitem(last=False)
        if nonce in seen:
            return True
        seen[nonce] = now
        return False
