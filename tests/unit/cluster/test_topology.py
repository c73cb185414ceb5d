"""Routes by hop count with priority tie-break; flooded views ordered by (incarnation, seq)."""

from __future__ import annotations

from shared.cluster.topology import NodeView, adjacency, routes


def views(edges: dict[int, set[int]], prio: dict[int, int] | None = None) -> dict[int, NodeView]:
    prio = prio or {}
    return {n: NodeView(n, up=frozenset(up), priority=prio.get(n, 50)) for n, up in edges.items()}


def test_direct_links_are_their_own_next_hop() -> None:
    v = views({2: {1, 3}, 3: {1, 2}})
    assert routes(1, {2, 3}, v) == {2: 2, 3: 3}


def test_a_cut_link_is_relayed_through_a_neighbour() -> None:
    v = views({2: {1, 3}, 3: {2}})
    assert routes(1, {2}, v) == {2: 2, 3: 2}


def test_shortest_path_wins_and_priority_breaks_ties() -> None:
    # 1 - 2 - 4 and 1 - 3 - 4: both two hops; the lower priority value is preferred.
    edges = {2: {1, 4}, 3: {1, 4}, 4: {2, 3}}
    assert routes(1, {2, 3}, views(edges))[4] == 2
    assert routes(1, {2, 3}, views(edges, {3: 10}))[4] == 3
    # a longer path is never chosen over a shorter one
    edges = {2: {1, 5}, 5: {2, 4}, 3: {1, 4}, 4: {3, 5}}
    assert routes(1, {2, 3}, views(edges, {2: 1}))[4] == 3


def test_unreachable_and_disabled_nodes_have_no_route() -> None:
    v = views({2: {1, 3}, 3: {2}})
    v[2].enabled = False
    assert routes(1, {2}, v) == {2: 2}
    assert routes(1, set(), v) == {}


def test_newer_than_orders_by_incarnation_then_seq() -> None:
    old = NodeView(2, incarnation=5, seq=100)
    assert NodeView(2, incarnation=5, seq=101).newer_than(old)
    assert not NodeView(2, incarnation=5, seq=100).newer_than(old)
    assert NodeView(2, incarnation=6, seq=1).newer_than(old)  # restarted node
    assert NodeView(2).newer_than(None)


def test_adjacency_lists_this_nodes_live_links() -> None:
    assert adjacency(1, {3}, views({3: {1}})) == {1: [3], 3: [1]}
