"""Anti-entropy digests (shared/cluster/antientropy.py): order-free, exact per bucket."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.cluster.antientropy import (
    BUCKETS,
    Digest,
    answer_digest,
    answer_want,
    bucket_of,
)

items = st.dictionaries(st.binary(min_size=1, max_size=12), st.binary(max_size=8), max_size=60)


@given(items)
def test_the_digest_does_not_depend_on_order(data: dict[bytes, bytes]) -> None:
    forward = Digest.of(data.items())
    backward = Digest.of(reversed(list(data.items())))
    assert forward.to_bytes() == backward.to_bytes()
    assert len(forward.to_bytes()) == BUCKETS * 8
    assert forward.differing(backward.to_bytes()) == []


@given(items, st.binary(min_size=1, max_size=12), st.binary(max_size=8))
def test_one_changed_item_shows_in_its_bucket_only(data: dict[bytes, bytes], key: bytes,
                                                   value: bytes) -> None:
    changed = dict(data)
    changed[key] = value + b"!"  # a version no one had
    diff = Digest.of(data.items()).differing(Digest.of(changed.items()).to_bytes())
    assert diff == [bucket_of(key)]


def test_a_malformed_digest_differs_everywhere() -> None:
    assert Digest.of([]).differing(b"short") == list(range(BUCKETS))


@given(items, items)
def test_one_round_makes_both_sides_equal(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> None:
    """The protocol of the module docstring, with "the newer wins" = the larger value."""
    def records_for(side: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
        return lambda keys: [(k, side[k]) for k in keys if k in side]

    def apply(side: dict[bytes, bytes], records: Iterable[Any]) -> None:
        for k, v in records:
            side[k] = max(side.get(k, v), v)

    a, b = dict(a), dict(b)
    records, want = answer_digest(lambda: b.items(), records_for(b),
                                  Digest.of(a.items()).to_bytes())
    apply(a, records)
    apply(b, answer_want(lambda: a.items(), records_for(a), want))
    assert a == b
