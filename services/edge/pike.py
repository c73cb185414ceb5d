"""Flood protection (OpenSIPS ``pike``): per-source request rates in an IP tree, sans-IO.

The tree is OpenSIPS's (``modules/pike/ip_tree.c``, ``pike_funcs.c``): one branch per first
byte of the address, and a node for the next byte is grown only under a prefix that is
itself busy, so a scan from many addresses costs a few nodes while one flooding address
gets its own leaf quickly. Each node counts hits in two slots, the previous and the current
sampling unit (``pike_unit`` s, OpenSIPS ``sampling_time_unit``); every unit the current
slot becomes the previous one (``swap_routine``).

* A prefix node is *hot* when either slot, or their mean, reaches a quarter of the density
  (``is_hot_non_leaf``): the next request from under it grows the node of its next byte.
* A full address is *hot* (red: blocked) when either slot, or their mean, reaches
  ``density`` (``reqs_density_per_unit``, ``is_hot_leaf``). The request that turns it red
  is the one that raises ``E_PIKE_BLOCKED {ip}``; while red every request from it is
  refused; at a swap that leaves it no longer hot it is unblocked.
* A node not hit for ``remove_latency`` s (OpenSIPS ``remove_latency``, in ticks) is
  removed, children first; a prefix seldom hit is left to expire (``NO_UPDATE``).

Time is passed in (``now``, seconds of a monotonic clock): the swaps and removals due are
done by the next `check` (or `tick`), so no timer is needed. `blocked()` is MI
``pike_list`` (OpenSIPS 3's shape: ``{"IPs": ["192.0.2.7", ...]}``), `unblock` is
``pike_rm``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PREV, CURR = 0, 1


@dataclass(slots=True, eq=False)
class _Node:
    byte: int
    parent: _Node | None
    hits: list[int] = field(default_factory=lambda: [0, 0])
    leaf_hits: list[int] = field(default_factory=lambda: [0, 0])
    kids: dict[int, _Node] = field(default_factory=dict)
    leaf: bool = False  # the node is a whole address (OpenSIPS NODE_IPLEAF_FLAG)
    red: bool = False  # blocked (NODE_ISRED_FLAG)
    expires: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    blocked: bool  # drop the request
    newly: bool = False  # this request turned the address red: raise E_PIKE_BLOCKED


PASS = Verdict(False)


class PikeTree:
    """See the module docstring."""

    def __init__(self, *, density: int = 30, unit: float = 2.0,
                 remove_latency: float = 120.0, now: float = 0.0) -> None:
        if density < 1 or unit <= 0 or remove_latency <= 0:
            raise ValueError("density >= 1, unit and remove_latency > 0")
        self.density = density
        self.unit = unit
        self.remove_latency = remove_latency
        self.roots: dict[tuple[int, int], _Node] = {}  # (address length, first byte)
        self._next_swap = now + unit
        self.nodes = 0
        self._packed: dict[str, bytes] = {}  # address text -> octets (parsing is the cost)
        self.blocked_requests = 0
        self.blocks = 0

    # -- the rules (ip_tree.h) -----------------------------------------------------------
    def _hot_prefix(self, node: _Node) -> bool:
        quarter = self.density >> 2
        h = node.hits
        return h[PREV] >= quarter or h[CURR] >= quarter or (h[PREV] + h[CURR]) >> 1 >= quarter

    def _hot_leaf(self, node: _Node) -> bool:
        h = node.leaf_hits
        return h[PREV] >= self.density or h[CURR] >= self.density or \
            (h[PREV] + h[CURR]) >> 1 >= self.density

    def _warm_prefix(self, node: _Node) -> bool:
        # OpenSIPS is_warm_leaf: a prefix hit at least half as much as a hot one is kept.
        return node.hits[CURR] >= self.density >> 3

    # -- requests --------------------------------------------------------------------------
    def check(self, ip: str, now: float) -> Verdict:
        """One request from ``ip`` (OpenSIPS ``pike_check_req``)."""
        self.tick(now)
        packed = self._packed.get(ip)
        if packed is None:
            try:
                packed = ipaddress.ip_address(ip.strip("[]")).packed
            except ValueError:
                return PASS
            if len(self._packed) > 65536:
                self._packed.clear()  # bounded: a scan from many addresses cannot grow it
            self._packed[ip] = packed
        length = len(packed)
        root_key = (length, packed[0])
        node = self.roots.get(root_key)
        if node is None:
            node = self._new(packed[0], None, now)
            node.hits[CURR] = 1
            self.roots[root_key] = node
            return PASS
        depth = 1
        while depth < length:
            kid = node.kids.get(packed[depth])
            if kid is None:
                break
            node = kid
            depth += 1
        if depth == length:
            node.leaf = True
            node.leaf_hits[CURR] += 1
            node.expires = now + self.remove_latency
            if node.red:
                self.blocked_requests += 1
                return Verdict(True)
            if self._hot_leaf(node):
                node.red = True
                self.blocks += 1
                self.blocked_requests += 1
                return Verdict(True, True)
            return PASS
        # Only a prefix of the address is in the tree.
        node.hits[CURR] += 1
        if self._hot_prefix(node):
            kid = self._new(packed[depth], node, now)
            kid.hits[CURR] = 1
            node.kids[packed[depth]] = kid
        elif self._warm_prefix(node):
            node.expires = now + self.remove_latency
        return PASS

    def _new(self, byte: int, parent: _Node | None, now: float) -> _Node:
        self.nodes += 1
        return _Node(byte, parent, expires=now + self.remove_latency)

    # -- time --------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """The swaps (every ``unit``) and removals (after ``remove_latency``) due by now."""
        if now < self._next_swap:
            return
        swaps = 0
        while now >= self._next_swap and swaps < 2:  # two swaps empty both slots
            self._swap()
            self._next_swap += self.unit
            swaps += 1
        if now >= self._next_swap:  # idle for long: realign on the clock
            self._next_swap = now + self.unit
        self._expire(now)

    def _swap(self) -> None:
        for node in self._walk():
            node.hits[PREV], node.hits[CURR] = node.hits[CURR], 0
            node.leaf_hits[PREV], node.leaf_hits[CURR] = node.leaf_hits[CURR], 0
            if node.red and not self._hot_leaf(node):
                node.red = False  # "PIKE - UNBLOCKing"

    def _expire(self, now: float) -> None:
        for key, root in list(self.roots.items()):
            if self._prune(root, now):
                del self.roots[key]

    def _prune(self, node: _Node, now: float) -> bool:
        """Removes the expired nodes under ``node``; True when ``node`` itself goes."""
        for byte, kid in list(node.kids.items()):
            if self._prune(kid, now):
                del node.kids[byte]
                if not node.kids:
                    node.expires = max(node.expires, now + self.remove_latency)
        if node.kids or node.red or node.expires > now:
            return False
        self.nodes -= 1
        return True

    def _walk(self) -> list[_Node]:
        out: list[_Node] = []
        stack = list(self.roots.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.kids.values())
        return out

    # -- MI ----------------------------------------------------------------------------------
    def blocked(self, now: float) -> list[str]:
        """The addresses blocked now (``pike_list``)."""
        self.tick(now)
        return sorted((self._address(n) for n in self._walk() if n.red),
                      key=lambda a: (":" in a, ipaddress.ip_address(a)))

    def unblock(self, ip: str) -> bool | None:
        """``pike_rm``: None when the address is not in the tree, False when it is not
        blocked, True once unblocked (its counters reset)."""
        packed = ipaddress.ip_address(ip.strip("[]")).packed
        node = self.roots.get((len(packed), packed[0]))
        for byte in packed[1:]:
            if node is None:
                return None
            node = node.kids.get(byte)
        if node is None or not node.leaf:
            return None
        if not node.red:
            return False
        node.red = False
        node.hits = [0, 0]
        node.leaf_hits = [0, 0]
        return True

    @staticmethod
    def _address(node: _Node) -> str:
        parts: list[int] = []
        walk: _Node | None = node
        while walk is not None:
            parts.append(walk.byte)
            walk = walk.parent
        return str(ipaddress.ip_address(bytes(reversed(parts))))
