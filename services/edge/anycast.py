"""Anycast transactions across an edge cluster, sans-IO (OpenSIPS 2.4 tm replication).

Several edge nodes listen on one anycast address (`[edge] listen = ["udp:IP:PORT;anycast"]`),
so a reply, a CANCEL or an ACK may reach a node that did not create the transaction. This
module decides, for one message on an anycast listener, who handles it; the proxy core
(services/edge/core.py) asks it and emits a `ClusterSend`, which the cluster adapter
(services/edge/anycast_cluster.py, capability `tm-repl` of `shared/cluster`) carries to
the other node, where the message is re-injected as if it had arrived there
(`ProxyCore.receive(..., origin=node)`). No sockets, no clock: `now` is passed in.

Rules (research: shared/research/opensips-features.md §3, wave2-testbed.md §4):

* Ownership marker (OpenSIPS `tm.cluster_param`): every request forwarded out of an
  anycast listener carries `;cid=<node id>` on our top Via (RFC 3261 §18.2.2: the response
  returns to the Via sent-by, the anycast address, i.e. to any node).
* Reply (RFC 3261 §17.1.3 matches it by the branch of our Via): no `cid`, or ours -> here.
  Another node's `cid` -> the whole reply goes to that node (OpenSIPS `TM_CLUSTER_REPLY`).
  A replicated reply is always processed where it arrives (loop guard: it is never sent
  on again).
* Beyond OpenSIPS (which logs and drops it): the owner is Down -> the reply is forwarded
  statelessly by its Via (RFC 3261 §16.11, §16.7 "no matching transaction") and counted,
  so a 2xx still reaches the caller and the call can go on through the survivors.
* CANCEL and the ACK of a non-2xx carry the UAC's branch, no cid (§9.1, §17.1.1.3).
  Matching no local transaction: sent to the owner when the transaction key is known (see
  the next rule), else a CANCEL is broadcast (OpenSIPS `cluster_auto_cancel`, default on;
  `TM_CLUSTER_AUTO_CANCEL`); the routing API's `ctx.anycast_replicate()` broadcasts an ACK
  or CANCEL by hand (`t_anycast_replicate`, `TM_CLUSTER_REQUEST`). A replicated ACK or
  CANCEL that matches nothing at its receiver is dropped there: only the owner acts.
* Beyond OpenSIPS (which assumes a UAC's requests stay on one node): every server
  transaction created on an anycast listener announces its key (§17.2.3) to the cluster.
  A request that matches no local transaction but an announced key of a live node is a
  retransmission (or the CANCEL / non-2xx ACK) of that node's transaction: it goes to the
  owner, which absorbs it (§17.2.1) - no second transaction, no second branch downstream.
  Keys expire after 64*T1 (Timer H/J, §17.2.1-§17.2.2). The cost is one cluster message
  per transaction (announcements are batched by the adapter); the alternative, ownership
  by a hash of the key, would move (N-1)/N of all initial requests across the cluster.
* A CANCEL / non-2xx ACK whose key names a Down owner is neither handed over nor
  broadcast: it is relayed statelessly where it lands (§16.10, §16.11). The owner's
  client branch died with it, so the callee cannot match it (README "Anycast").
* Claim and hold (closes the window the announcement alone leaves: a retransmission that
  overtakes the announcement - its original stuck ~T1 in a loaded node's queue - would
  create a second transaction and a second branch downstream). An INVITE on an anycast
  listener that matches no transaction and no announced key is not processed at once: its
  key is announced first (a *claim*) and the INVITE held `hold` seconds (`[edge.tm]
  anycast_hold`; default 50 ms, more than twice the 10 ms batching of announcements plus
  the cluster hop). Copies arriving meanwhile are absorbed. At the end of the hold the
  node processes it, unless another live node claimed the same key with a lower node id
  (one rule every node applies, so exactly one of the claimants creates the transaction):
  then it goes to that node, which absorbs it as a retransmission (§17.2.1). A node that
  learns the key before its copy arrives sends the copy at once (rule above). The cost is
  `hold` of latency on every INVITE's setup (no CPU to speak of: one dict entry and one
  timer per INVITE; measured in tests/bench/bench_anycast.py) and no extra cluster
  message (the claim is the announcement). Other methods are not held: a second branch of
  a non-INVITE request rings no phone, and a hold would slow REGISTER and MESSAGE. The
  guarantee needs each claim to reach the other nodes within `hold` minus the batching
  window; a cluster link slower than that leaves the old window open.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "ANNOUNCE",
    "REPLY",
    "REQUEST",
    "AnycastCore",
    "AnycastCounters",
    "ClusterSend",
    "Route",
    "TmConfig",
    "decode",
    "encode",
]

# Packet types of capability `tm-repl` (OpenSIPS tm/cluster.h numbers the first three).
REPLY = 1  # TM_CLUSTER_REPLY: a reply for the receiver's transaction
REQUEST = 2  # TM_CLUSTER_REQUEST: an ACK/CANCEL (or retransmission) for the owner
AUTO_CANCEL = 3  # TM_CLUSTER_AUTO_CANCEL: a CANCEL broadcast, only the owner acts
ANNOUNCE = 8  # SipMesh: transaction keys created on the sender (see module docstring)


@dataclass(frozen=True)
class TmConfig:
    """The `[edge.tm]` section: OpenSIPS tm's cluster parameters.

    `replication_cluster`: the edge joins a cluster (`[edge.cluster]`, shared/cluster) and
    anycast listeners replicate; `cluster_param`: the Via parameter naming the owner;
    `cluster_auto_cancel`: broadcast a CANCEL that matches no local INVITE.
    """

    replication_cluster: bool = False
    cluster_param: str = "cid"
    cluster_auto_cancel: bool = True
    anycast_hold: float = 0.05  # s an unknown INVITE is held after its claim (0: off)

    def validate(self) -> None:
        if not 0 <= self.anycast_hold <= 1:
            raise ValueError("[edge.tm] anycast_hold must be between 0 and 1 s")
        if not self.cluster_param.isascii() or not self.cluster_param.isalnum():
            raise ValueError(f"[edge.tm] cluster_param {self.cluster_param!r} must be "
                             f"a letters/digits token")


@dataclass(frozen=True, slots=True)
class ClusterSend:
    """Carry `data` (a whole SIP message) to node `node` (None: every node having tm-repl).

    `source` is where the message came from (host, port) and `listener` the anycast
    listener it arrived on (`udp:host:port`): the receiver re-injects it there. An
    ANNOUNCE from the core carries its transaction keys in `keys` (the adapter batches
    and encodes them); decoded from the wire, `data` is their JSON list."""

    kind: int
    node: int | None
    data: bytes
    source: tuple[str, int] = ("", 0)
    listener: str = ""
    call_id: str = field(default="", compare=False)
    sent_at: float = field(default=0.0, compare=False)  # sender's wall clock (decode)
    keys: tuple[tuple[str, ...], ...] = field(default=(), compare=False)


class Route(Enum):
    """Where a message on an anycast listener is handled."""

    LOCAL = "local"  # process it here as usual
    OWNER = "owner"  # send it to its owner node (ClusterSend REPLY / REQUEST)
    BROADCAST = "broadcast"  # CANCEL auto-cancel: every node looks, only the owner acts
    STATELESS = "stateless"  # the owner is Down: forward the reply by its Via (§16.11)
    DROP = "drop"  # a replicated ACK/CANCEL that is not ours (only the owner acts)


@dataclass
class AnycastCounters:
    """`tm:` statistics of this node (OpenSIPS has none for replication; names ours)."""

    replicated_out: int = 0  # messages handed to an owner (replies and requests)
    replicated_in: int = 0  # messages received from another node and processed here
    replies_out: int = 0
    replies_in: int = 0
    requests_out: int = 0
    requests_in: int = 0
    auto_cancel_out: int = 0  # CANCEL broadcasts
    replicate_calls: int = 0  # ctx.anycast_replicate() broadcasts
    owner_down_stateless: int = 0  # replies forwarded by Via because their owner was Down
    replication_failed: int = 0  # a cluster send refused (no route, no link)
    dropped_not_owner: int = 0  # replicated ACK/CANCEL matching nothing here
    late_provisional: int = 0  # replicated 1xx overtaken by its final response: dropped
    keys_announced: int = 0
    keys_learned: int = 0
    held: int = 0  # INVITEs held after their claim (see the module docstring)
    held_absorbed: int = 0  # copies of a held INVITE that arrived during its hold
    held_to_owner: int = 0  # held INVITEs another claimant won: sent to it

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class AnycastCore:
    """The decisions of one node; `alive(node)` tells whether a node can be reached."""

    def __init__(self, node_id: int, alive: Callable[[int], bool], *,
                 param: str = "cid", auto_cancel: bool = True, key_ttl: float = 32.0,
                 hold: float = 0.0) -> None:
        self.node_id = node_id
        self.hold = hold  # claim and hold of unknown INVITEs (0: off)
        # Held INVITEs: key -> (release time, the caller's payload); insertion order is
        # release order (one hold for all).
        self._held: OrderedDict[tuple[str, ...], tuple[float, Any]] = OrderedDict()
        self.alive = alive
        self.param = param.lower()
        self.auto_cancel = auto_cancel
        self.key_ttl = key_ttl  # 64*T1: Timer H/J of the transactions announced
        self.counters = AnycastCounters()
        self.via_suffix = f";{param}={node_id}"
        # key -> (expiry, owner); insertion order is expiry order (one ttl for all).
        self._foreign: OrderedDict[tuple[str, ...], tuple[float, int]] = OrderedDict()

    # -- replies ---------------------------------------------------------------------------
    def route_reply(self, cid: str | None, replicated: bool) -> tuple[Route, int]:
        """Route of a reply whose top Via (ours) carries `cid`; (route, owner node)."""
        if cid is None or replicated:
            return Route.LOCAL, self.node_id  # replicated: the sender chose us (loop guard)
        try:
            owner = int(cid)
        except ValueError:
            return Route.LOCAL, self.node_id  # not a node id: nobody else can own it
        if owner == self.node_id or owner <= 0:
            return Route.LOCAL, self.node_id
        if not self.alive(owner):
            return Route.STATELESS, owner
        return Route.OWNER, owner

    # -- requests matching no local transaction -------------------------------------------
    def route_request(self, method: str, key: tuple[str, ...], replicated: bool,
                      now: float) -> tuple[Route, int]:
        """Route of a request on an anycast listener that matched no local transaction;
        `key` is its server key (§17.2.3; the INVITE's key for a CANCEL, §9.2)."""
        if replicated:
            if method in ("ACK", "CANCEL"):
                return Route.DROP, self.node_id  # only the owner acts on it
            return Route.LOCAL, self.node_id
        if method == "CANCEL" and key in self._held:
            # A CANCEL of an INVITE held here (claim and hold): nothing to cancel yet and
            # nobody else owns it; its retransmission (§17.1.2.2 Timer E) finds the
            # transaction once the hold ended. Dropped rather than broadcast.
            return Route.DROP, self.node_id
        owner = self.owner_of(key, now)
        if owner is not None and self.alive(owner):
            return Route.OWNER, owner
        if method == "CANCEL" and self.auto_cancel and owner is None:
            return Route.BROADCAST, 0
        return Route.LOCAL, self.node_id  # unknown, or its owner is Down: ours now

    def owner_of(self, key: tuple[str, ...], now: float) -> int | None:
        found = self._foreign.get(key)
        if found is None or found[0] <= now:
            return None
        return found[1]

    # -- announcements ------------------------------------------------------------------
    def learn(self, node: int, keys: Sequence[Sequence[str]], now: float) -> None:
        """Keys of transactions `node` created (an ANNOUNCE it sent)."""
        if node == self.node_id:
            return
        foreign = self._foreign
        self._expire(now)
        expiry = now + self.key_ttl
        for key in keys:
            k = tuple(str(part) for part in key)
            known = foreign.get(k)
            if known is not None and known[1] < node and self.alive(known[1]):
                continue  # two claims of one key: the lower node id wins, everywhere
            foreign.pop(k, None)
            foreign[k] = (expiry, node)
        self.counters.keys_learned += len(keys)

    # -- claim and hold (module docstring) ---------------------------------------------
    def holds(self, method: str, replicated: bool) -> bool:
        """An INVITE that reached us (not handed over) and matched nothing is held."""
        return self.hold > 0 and method == "INVITE" and not replicated

    def hold_request(self, key: tuple[str, ...], payload: Any, now: float) -> bool:
        """Hold `payload` (what the caller re-injects) under `key`: True when it is new
        (the caller announces the claim), False for a copy of one held already (absorbed)."""
        if key in self._held:
            self.counters.held_absorbed += 1
            return False
        self._held[key] = (now + self.hold, payload)
        self.counters.held += 1
        self.counters.keys_announced += 1
        return True

    def next_release(self) -> float | None:
        if not self._held:
            return None
        return next(iter(self._held.values()))[0]

    def release(self, now: float) -> list[tuple[Any, int | None]]:
        """The holds that ended by `now`: (payload, None) to process here, or (payload,
        node) to send to `node`, a live claimant of the same key with a lower node id."""
        out: list[tuple[Any, int | None]] = []
        held = self._held
        while held:
            key = next(iter(held))
            until, payload = held[key]
            if until > now:
                break
            del held[key]
            owner = self.owner_of(key, now)
            if owner is not None and owner < self.node_id and self.alive(owner):
                self.counters.held_to_owner += 1
                out.append((payload, owner))
            else:
                out.append((payload, None))
        return out

    @property
    def held_now(self) -> int:
        return len(self._held)

    def forget_node(self, node: int) -> None:
        """`node` left for good: its keys name no owner any more."""
        for key in [k for k, (_, owner) in self._foreign.items() if owner == node]:
            del self._foreign[key]

    def _expire(self, now: float) -> None:
        foreign = self._foreign
        while foreign:
            oldest = next(iter(foreign))
            if foreign[oldest][0] > now:
                break
            del foreign[oldest]

    @property
    def known_keys(self) -> int:
        return len(self._foreign)


# -- wire format of capability tm-repl ---------------------------------------------------
# One byte of packet type, a JSON header line, then the raw SIP message (or, for ANNOUNCE,
# the JSON list of keys). Small and readable in a packet capture; the cluster link seals it.

def encode(item: ClusterSend, sent_at: float = 0.0) -> bytes:
    """`sent_at`: the sender's wall clock, for the receiver's hand-over latency metric."""
    header = json.dumps({"s": item.source[0], "p": item.source[1], "l": item.listener,
                         "t": sent_at}, separators=(",", ":")).encode()
    return bytes([item.kind]) + header + b"\n" + item.data


def decode(payload: bytes) -> ClusterSend:
    """The inverse of `encode` (ValueError on anything else)."""
    if len(payload) < 2:
        raise ValueError("tm-repl: short packet")
    kind = payload[0]
    header, sep, data = payload[1:].partition(b"\n")
    if not sep:
        raise ValueError("tm-repl: no header")
    meta = json.loads(header)
    if not isinstance(meta, dict):
        raise ValueError("tm-repl: bad header")
    host, port, listener = meta.get("s", ""), meta.get("p", 0), meta.get("l", "")
    sent_at = meta.get("t", 0.0)
    if not isinstance(host, str) or not isinstance(port, int) or not isinstance(listener, str) \
            or not isinstance(sent_at, int | float):
        raise ValueError("tm-repl: bad header fields")
    if kind not in (REPLY, REQUEST, AUTO_CANCEL, ANNOUNCE):
        raise ValueError(f"tm-repl: unknown packet type {kind}")
    return ClusterSend(kind, None, data, (host, port), listener, sent_at=float(sent_at))


def encode_keys(keys: Sequence[tuple[str, ...]]) -> bytes:
    return json.dumps([list(k) for k in keys], separators=(",", ":")).encode()


def decode_keys(data: bytes) -> list[list[str]]:
    keys = json.loads(data)
    if not isinstance(keys, list) or not all(
            isinstance(k, list) and all(isinstance(p, str) for p in k) for k in keys):
        raise ValueError("tm-repl: bad key list")
    return keys
