"""Cluster topology: who is reachable, and through which next hop (sans-IO).

Every node floods a description of itself (OpenSIPS' LS_UPDATE/NODE_DESCRIPTION/CAP_UPDATE
in one :class:`NodeView`): the neighbours it has an Up link to, its capabilities' sync
states, its sharing-tag claims. Updates carry ``(incarnation, seq)``; an update is taken
only when newer than the one held, so floods stop and a restarted node (new incarnation)
is believed at once.

Routing is OpenSIPS': shortest path by hop count (BFS over the directed edges "u reports v
Up", starting from this node's own Up links), ties between equal-length first hops broken
by the lower ``priority`` value, then the lower node id. A node is *reachable* when a path
exists; packets for a node without a direct Up link go to the next hop of that path.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping

MAX_HOPS = 25  # OpenSIPS caps the path at 25 hops


@dataclasses.dataclass
class NodeView:
    """The latest flooded description of one node."""

    node_id: int
    url: str = ""
    sip_addr: str = ""
    priority: int = 50
    seed: bool = False
    enabled: bool = True
    up: frozenset[int] = frozenset()
    caps: Mapping[str, bool] = dataclasses.field(default_factory=dict)
    claims: Mapping[str, int] = dataclasses.field(default_factory=dict)
    description: str = ""
    incarnation: int = 0
    seq: int = 0

    def newer_than(self, other: NodeView | None) -> bool:
        if other is None:
            return True
        return (self.incarnation, self.seq) > (other.incarnation, other.seq)


def routes(me: int, my_up: Iterable[int], views: Mapping[int, NodeView]) -> dict[int, int]:
    """Next hop for every reachable node (``dst -> neighbour``); see module docstring."""
    prio = {n: v.priority for n, v in views.items()}
    first = sorted(set(my_up) - {me}, key=lambda n: (prio.get(n, 50), n))
    hop: dict[int, int] = {}
    depth: dict[int, int] = {}
    queue: deque[int] = deque()
    for n in first:  # sorted: the preferred first hop claims a destination first
        hop[n], depth[n] = n, 1
        queue.append(n)
    while queue:
        u = queue.popleft()
        if depth[u] >= MAX_HOPS:
            continue
        view = views.get(u)
        if view is None or not view.enabled:
            continue
        for v in sorted(view.up, key=lambda n: (prio.get(n, 50), n)):
            if v == me or v in hop:
                continue
            hop[v], depth[v] = hop[u], depth[u] + 1
            queue.append(v)
    return hop


def adjacency(me: int, my_up: Iterable[int], views: Mapping[int, NodeView]) -> dict[int, list[int]]:
    """The adjacency list clusterer_list_topology shows (this node's own links are live)."""
    out = {n: sorted(v.up) for n, v in views.items() if n != me}
    out[me] = sorted(set(my_up))
    return dict(sorted(out.items()))
