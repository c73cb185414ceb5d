"""Sharing tags: ``name/cluster_id``, active on exactly one node, backup elsewhere.

One port, :class:`ShtagBackend`, two backends:

* :class:`EmbeddedShtags` (no coordination service): every node advertises a *claim
  epoch* per tag in its flooded node state, and the holder is the pure function
  :func:`embedded_holder` of the claims of the reachable, enabled candidates: highest
  epoch, then lowest node id. A node that becomes holder raises its epoch above every
  epoch it has seen, so the tag stays where it went (a node coming back does not take it
  back), and ``clusterer_shtag_set_active`` is a claim above all seen. Two partitions may
  each elect a holder; once healed, all nodes see the same claims and the function picks
  the same single winner on every node (ties cannot survive: the node ids differ).
* :class:`ConsulShtags`: a tag is a Consul KV lock (``acquire`` with a session whose TTL
  the holder renews every ``renew_interval``; ``lock_delay`` small). A holder that could
  not renew for a TTL steps down by itself, and Consul releases its lock after the TTL,
  so a partitioned minority loses the tag and two holders cannot exist. A forced move asks
  the holder (over the cluster) to release, then acquires.

The embedded backend lives in this module and is sans-IO: :class:`~shared.cluster.state.
ClusterState` feeds it the claims of the reachable nodes at every change and advertises its
claims in the flooded node state; changes go to ``listener(tag, active, reason)``. The
Consul backend (:mod:`.shtags_consul`) is an asyncio adapter the engine feeds the same
view through :class:`~shared.cluster.events.ShtagView` events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Protocol

ACTIVE, BACKUP = "active", "backup"
Listener = Callable[[str, bool, str], None]
YieldRequest = Callable[[int, str], None]


@dataclasses.dataclass(frozen=True)
class ShtagConfig:
    """``name/cluster_id=active|backup`` (OpenSIPS 3 ``sharing_tag`` modparam)."""

    name: str
    cluster_id: int
    initial: str = BACKUP

    @classmethod
    def parse(cls, text: str) -> ShtagConfig:
        spec, _, state = text.partition("=")
        name, sep, cluster = spec.strip().partition("/")
        state = (state.strip() or BACKUP).lower()
        if not name or not sep or state not in (ACTIVE, BACKUP):
            raise ValueError(f"sharing tag {text!r} is not name/cluster_id=active|backup")
        try:
            cid = int(cluster)
        except ValueError as exc:
            raise ValueError(f"sharing tag {text!r}: cluster id is not a number") from exc
        return cls(name, cid, state)


def embedded_holder(claims: Mapping[int, int]) -> int | None:
    """The holder among candidates ``node_id -> claim epoch``: highest epoch, then lowest id."""
    if not claims:
        return None
    return max(claims, key=lambda n: (claims[n], -n))


class ShtagBackend(Protocol):
    listener: Listener | None
    yield_request: YieldRequest | None

    @property
    def tags(self) -> Mapping[str, ShtagConfig]: ...

    def is_active(self, tag: str) -> bool: ...

    def claims(self) -> dict[str, int]: ...

    def on_view(self, view: Mapping[int, Mapping[str, int]], eligible: bool) -> None:
        """``view``: reachable enabled nodes (not this one) -> their claims."""

    def on_yield(self, tag: str, to_node: int) -> None:
        """The node ``to_node`` was forced active: release ``tag`` if held."""

    async def set_active(self, tag: str) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class EmbeddedShtags:
    """Heartbeat-based deterministic takeover (see module docstring)."""

    def __init__(self, node_id: int, tags: list[ShtagConfig],
                 wall_clock: Callable[[], float]) -> None:
        # wall_clock: seconds of wall time (the state passes its input's ``now`` mapped to
        # wall time): claim epochs from it stay above those of a node's previous life.
        self.node_id = node_id
        self.wall_clock = wall_clock
        self._tags = {t.name: t for t in tags}
        self._claims = {t.name: (1 if t.initial == ACTIVE else 0) for t in tags}
        self._active = dict.fromkeys(self._tags, False)
        self._seen = dict.fromkeys(self._tags, 0)
        self._view: Mapping[int, Mapping[str, int]] = {}
        self._eligible = False
        self.listener: Listener | None = None
        self.yield_request: YieldRequest | None = None

    @property
    def tags(self) -> Mapping[str, ShtagConfig]:
        return self._tags

    def is_active(self, tag: str) -> bool:
        return self._active.get(tag, False)

    def claims(self) -> dict[str, int]:
        return dict(self._claims)

    def _set(self, tag: str, active: bool, reason: str) -> None:
        if self._active[tag] != active:
            self._active[tag] = active
            if self.listener is not None:
                self.listener(tag, active, reason)

    def on_view(self, view: Mapping[int, Mapping[str, int]], eligible: bool) -> None:
        self._view, self._eligible = view, eligible
        for tag in self._tags:
            self._decide(tag, "takeover")

    def _decide(self, tag: str, reason: str) -> None:
        if not self._eligible:
            self._set(tag, False, "node disabled")
            return
        claims = {n: c[tag] for n, c in self._view.items() if tag in c}
        self._seen[tag] = max([self._seen[tag], *claims.values()])
        claims[self.node_id] = self._claims[tag]
        winner = embedded_holder(claims)
        if winner == self.node_id:
            if not self._active[tag]:
                # Sticky: above every epoch seen, so a returning node does not take it back.
                self._claims[tag] = self._new_claim(tag)
            self._set(tag, True, reason)
        else:
            self._set(tag, False, f"node {winner} is active")

    def _new_claim(self, tag: str) -> int:
        return max(self._claims[tag], self._seen[tag] + 1, int(self.wall_clock() * 1000))

    def on_yield(self, tag: str, to_node: int) -> None:
        return None  # embedded: the higher claim of the forced node is enough

    async def set_active(self, tag: str) -> None:
        self.force_active(tag)

    def force_active(self, tag: str) -> None:
        """``clusterer_shtag_set_active``: a claim above every claim seen (KeyError if the
        tag is unknown)."""
        if tag not in self._tags:
            raise KeyError(tag)
        claims = [c[tag] for c in self._view.values() if tag in c]
        self._seen[tag] = max([self._seen[tag], *claims])
        # +1: beats a takeover the holder made within the same millisecond.
        self._claims[tag] = self._new_claim(tag) + 1
        self._eligible = True
        self._set(tag, True, "MI command")

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
