"""Anti-entropy: two nodes compare digests of a capability's data and repair what differs
(sans-IO, pure functions over the capability's callbacks).

Why: live updates are sent once. One lost on a link that broke, or accepted by a node
whose links were not Up yet, or written on both sides of a partition, would otherwise stay
missing until a full resync. Anti-entropy runs when a link comes Up (the lower node id
starts) and when a node finishes its own sync (it starts with every synced peer), so a
cluster converges after any partition or restart.

A capability that supports it gives two callbacks beside its sync callbacks:

* ``summary()`` -> ``(key, version)`` pairs for every item it holds, deletions it still
  remembers (tombstones) included; ``version`` must change whenever the item does;
* ``records_for(keys)`` -> the records (the same idempotent upserts as sync records,
  tombstones as delete records) of those keys.

Round (``I`` initiates with ``P``)::

    I -> P  Digest{buckets}        BUCKETS x 8 bytes: XOR of blake2b(key|version) per bucket
    P -> I  Repair{records, want}  P's records of the buckets that differ; want = them
    I -> P  Repair{records}        I's records of those buckets (after applying P's)

Each side applies the other's records with its usual rule (the newer wins), so both end
with the newer version of every item of a differing bucket. XOR digests are order-free,
so each node computes its own without sorting; a bucket costs 8 bytes on the wire, 8 KB
per digest, whatever the table size.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Collection, Iterable

BUCKETS = 1024
_WIDTH = 8

Summary = Callable[[], Iterable[tuple[bytes, bytes]]]
RecordsFor = Callable[[Collection[bytes]], Iterable[bytes]]


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=_WIDTH).digest(), "big")


def bucket_of(key: bytes) -> int:
    return _hash(key) % BUCKETS


@dataclasses.dataclass
class Digest:
    """Per bucket: the XOR of the item hashes and the keys that fell into it."""

    sums: list[int]
    keys: list[list[bytes]]

    @classmethod
    def of(cls, items: Iterable[tuple[bytes, bytes]]) -> Digest:
        sums = [0] * BUCKETS
        keys: list[list[bytes]] = [[] for _ in range(BUCKETS)]
        for key, version in items:
            b = bucket_of(key)
            sums[b] ^= _hash(key + b"\0" + version)
            keys[b].append(key)
        return cls(sums, keys)

    def to_bytes(self) -> bytes:
        return b"".join(s.to_bytes(_WIDTH, "big") for s in self.sums)

    def differing(self, theirs: bytes) -> list[int]:
        """Buckets whose digest differs from ``theirs`` (all of them when malformed)."""
        if len(theirs) != BUCKETS * _WIDTH:
            return list(range(BUCKETS))
        return [b for b in range(BUCKETS)
                if int.from_bytes(theirs[b * _WIDTH:(b + 1) * _WIDTH], "big") != self.sums[b]]

    def keys_in(self, buckets: Iterable[int]) -> list[bytes]:
        return [k for b in buckets if 0 <= b < BUCKETS for k in self.keys[b]]


def answer_digest(summary: Summary, records_for: RecordsFor,
                  theirs: bytes) -> tuple[list[bytes], list[int]]:
    """What the receiver of a Digest sends back: (its records of the differing buckets,
    the buckets it wants the initiator's records of). ([], []) when nothing differs."""
    mine = Digest.of(summary())
    diff = mine.differing(theirs)
    if not diff:
        return [], []
    return list(records_for(mine.keys_in(diff))), diff


def answer_want(summary: Summary, records_for: RecordsFor, want: Iterable[int]) -> list[bytes]:
    """The initiator's records of the buckets the other side asked for."""
    mine = Digest.of(summary())
    return list(records_for(mine.keys_in(want)))
