"""The embedded sharing-tag rule: one holder per view, sticky takeover, heal convergence."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.cluster.shtags import EmbeddedShtags, ShtagConfig, embedded_holder


def test_parse() -> None:
    assert ShtagConfig.parse("vip/1=active") == ShtagConfig("vip", 1, "active")
    assert ShtagConfig.parse("vip/2") == ShtagConfig("vip", 2, "backup")
    for bad in ("vip", "vip/x=active", "vip/1=maybe", "/1"):
        with pytest.raises(ValueError):
            ShtagConfig.parse(bad)


def test_holder_highest_claim_then_lowest_id() -> None:
    assert embedded_holder({}) is None
    assert embedded_holder({3: 0, 1: 0, 2: 0}) == 1
    assert embedded_holder({3: 2, 1: 1, 2: 2}) == 2


@given(st.dictionaries(st.integers(1, 128), st.integers(0, 5), min_size=1))
def test_same_view_elects_the_same_single_holder(claims: dict[int, int]) -> None:
    nodes = {n: EmbeddedShtags(n, [ShtagConfig("t", 1)], lambda: 0.0) for n in claims}
    for n, node in nodes.items():
        node._claims["t"] = claims[n]
    for n, node in nodes.items():
        node.on_view({m: {"t": c} for m, c in claims.items() if m != n}, True)
    # The winner may bump its claim when it becomes active: re-run with the new claims.
    final = {n: node.claims()["t"] for n, node in nodes.items()}
    for n, node in nodes.items():
        node.on_view({m: {"t": c} for m, c in final.items() if m != n}, True)
    assert sum(node.is_active("t") for node in nodes.values()) == 1


class Wall:
    now = 1.0

    def __call__(self) -> float:
        Wall.now += 1.0  # every decision is later than the one before
        return Wall.now


def _mesh(ids: list[int]) -> dict[int, EmbeddedShtags]:
    return {n: EmbeddedShtags(n, [ShtagConfig("t", 1)], Wall()) for n in ids}


def _settle(nodes: dict[int, EmbeddedShtags], links: dict[int, set[int]]) -> None:
    for _ in range(3):  # claims change once per round at most; 3 rounds settle
        snapshot = {n: node.claims() for n, node in nodes.items()}
        for n, node in nodes.items():
            node.on_view({m: snapshot[m] for m in links[n]}, True)


def test_takeover_is_sticky_and_a_partition_heals_to_one_holder() -> None:
    nodes = _mesh([1, 2, 3])
    everyone = {n: {m for m in nodes if m != n} for n in nodes}
    _settle(nodes, everyone)
    assert [n for n in nodes if nodes[n].is_active("t")] == [1]
    # partition {1} | {2, 3}: each side has a holder
    _settle(nodes, {1: set(), 2: {3}, 3: {2}})
    assert sorted(n for n in nodes if nodes[n].is_active("t")) == [1, 2]
    # heal: exactly one, and the same one on every node's view
    _settle(nodes, everyone)
    assert sum(n.is_active("t") for n in nodes.values()) == 1
    # node 2 took the tag with a higher claim: 1 does not take it back
    assert nodes[2].is_active("t")


def test_forced_and_disabled() -> None:
    nodes = _mesh([1, 2])
    links = {1: {2}, 2: {1}}
    _settle(nodes, links)
    asyncio.run(nodes[2].set_active("t"))
    _settle(nodes, links)
    assert nodes[2].is_active("t") and not nodes[1].is_active("t")
    changes: list[tuple[str, bool, str]] = []
    nodes[2].listener = lambda *a: changes.append(a)
    nodes[2].on_view({1: nodes[1].claims()}, False)
    assert not nodes[2].is_active("t") and changes == [("t", False, "node disabled")]


@given(st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=5), min_size=1, max_size=6),
       st.sets(st.integers(1, 5)))
def test_any_partition_history_heals_to_one_holder(
        history: list[list[int]], dead: set[int]) -> None:
    """Whatever partitions happened (each step: a minority cut off from the rest), once
    every live node sees every other, exactly one holds the tag."""
    nodes = _mesh([1, 2, 3, 4, 5])
    live = [n for n in nodes if n not in dead] or [1]
    for minority in history:
        cut = set(minority)
        links = {n: {m for m in live if m != n and ((m in cut) == (n in cut))} for n in live}
        _settle({n: nodes[n] for n in live}, links)
    everyone = {n: {m for m in live if m != n} for n in live}
    _settle({n: nodes[n] for n in live}, everyone)
    assert sum(nodes[n].is_active("t") for n in live) == 1
