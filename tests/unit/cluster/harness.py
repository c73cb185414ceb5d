"""Several :class:`ClusterState` on one fake clock, frames moved by the test (aioquic's
``transfer()`` in spirit): no sockets, no event loop, no real time.

A :class:`Net` plays the adapter for every node: when a state asks to dial, it opens a
:class:`Wire` to the other state (``accept``) unless that node is dead or the pair is cut;
:meth:`Net.transfer` moves every frame waiting on every wire until nothing moves, and acts
on the events as :mod:`shared.cluster.engine` does (apply data to the node's dict, donate a
sync, answer anti-entropy). :meth:`Net.advance` jumps the clock from deadline to deadline,
calling ``handle_timer`` exactly when a state asked for it. Partitions cut wires (``refused``
refuses the dials of one direction only: one side's stream is open, the other's not yet),
kills drop a node's state, restarts build a new one with the same id.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Collection, Iterator
from typing import Any

from shared.cluster import antientropy
from shared.cluster import events as ev
from shared.cluster.config import ClusterConfig
from shared.cluster.state import SENT, ClusterState

CAP = "kv"
BASE = ClusterConfig(secret="s3cret", members="1-9", ping_interval=1.0, ping_timeout=0.5,
                     ping_retries=2, node_timeout=3.0, seed_fallback_interval=1.0,
                     sync_timeout=2.0, ack_timeout=0.5)


@dataclasses.dataclass
class Node:
    """One node: its state and what the service around it would hold."""

    id: int
    state: ClusterState
    data: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    events: list[Any] = dataclasses.field(default_factory=list)
    done: dict[int, ev.ReplicationDone] = dataclasses.field(default_factory=dict)
    mi: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    donations: list[ev.SyncRequested] = dataclasses.field(default_factory=list)
    waiting: list[ev.SyncRequested] = dataclasses.field(default_factory=list)
    donate: bool = True  # False: a donor that goes silent
    donate_limit: int | None = None  # records sent before the donor goes silent

    def summary(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.data.items()))

    def records_for(self, keys: Collection[bytes]) -> Iterator[bytes]:
        return iter([k + b"\0" + self.data[k] for k in keys if k in self.data])

    def apply(self, records: Collection[bytes]) -> None:
        for r in records:
            k, _, v = r.partition(b"\0")
            self.data[k] = v

    def put(self, key: str, value: str) -> int:
        """Stores and broadcasts (fire and forget)."""
        rec = key.encode() + b"\0" + value.encode()
        self.apply([rec])
        return self.state.send_all(CAP, rec)

    def put_tracked(self, key: str, value: str, now: float) -> int:
        rec = key.encode() + b"\0" + value.encode()
        self.apply([rec])
        return self.state.replicate(CAP, rec, now)

    def get(self, key: str) -> str | None:
        v = self.data.get(key.encode())
        return None if v is None else v.decode()

    def named(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def active(self, tag: str = "vip") -> bool:
        return self.state.shtags is not None and self.state.shtags.is_active(tag)


@dataclasses.dataclass(eq=False)
class Wire:
    """One stream: the dialer's connection id on one side, the answerer's on the other."""

    dialer: int
    dconn: int
    answerer: int
    aconn: int
    closed: bool = False
    tap: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)  # (dir, frame)
    hold: set[str] = dataclasses.field(default_factory=set)  # directions not delivered


class Net:
    def __init__(self, now: float = 1000.0, seed: int = 7) -> None:
        self.now = now
        self.nodes: dict[int, Node] = {}
        self.wires: list[Wire] = []
        self.cuts: set[frozenset[int]] = set()
        self.refused: set[tuple[int, int]] = set()  # (dialer, answerer): dials refused
        self.rng = random.Random(seed)
        self.incarnation = 1
        self.configs: dict[int, ClusterConfig] = {}

    # -- nodes -----------------------------------------------------------------------
    def add(self, node_id: int, *, seeds: Collection[int] = (), seed: bool = False,
            anti_entropy: bool = True, needs_sync: bool = True, **cfg: Any) -> Node:
        config = dataclasses.replace(
            BASE, node_id=node_id, seed=seed,
            seeds=tuple(f"{s}@node{s}:1" for s in seeds), **cfg)
        self.configs[node_id] = config
        self.incarnation += 1
        state = ClusterState(config, now=self.now, incarnation=self.incarnation,
                             url=f"node{node_id}:1",
                             entropy=lambda n: self.rng.randbytes(n))
        state.register_capability(CAP, self.now, needs_sync=needs_sync,
                                  anti_entropy=anti_entropy)
        node = self.nodes[node_id] = Node(node_id, state)
        state.handle_timer(self.now)
        self.transfer()
        return node

    def kill(self, node_id: int) -> None:
        """kill -9: the state is gone; its streams break (the others see them end)."""
        self.nodes.pop(node_id)
        for w in self.wires:
            if node_id in (w.dialer, w.answerer) and not w.closed:
                self._break(w)
        self.transfer()

    def restart(self, node_id: int, **kw: Any) -> Node:
        config = self.configs[node_id]
        seeds = kw.pop("seeds", [int(s.split("@")[0]) for s in config.seeds])
        return self.add(node_id, seeds=seeds, seed=config.seed, **kw)

    # -- the network -----------------------------------------------------------------
    def cut(self, a: int, b: int) -> None:
        """Cuts every stream between a and b, and the dials to come."""
        self.cuts.add(frozenset((a, b)))
        for w in self.wires:
            if {w.dialer, w.answerer} == {a, b} and not w.closed:
                self._break(w)
        self.transfer()

    def heal(self, a: int | None = None, b: int | None = None) -> None:
        if a is None:
            self.cuts.clear()
        else:
            self.cuts.discard(frozenset((a, b)))
        self.transfer()

    def partition(self, *groups: Collection[int]) -> None:
        for i, g in enumerate(groups):
            for h in groups[i + 1:]:
                for a in g:
                    for b in h:
                        self.cut(a, b)

    def open_wires(self, a: int, b: int) -> list[Wire]:
        return [w for w in self.wires if not w.closed and (w.dialer, w.answerer) == (a, b)]

    def _break(self, w: Wire) -> None:
        w.closed = True
        for node_id, conn in ((w.dialer, w.dconn), (w.answerer, w.aconn)):
            node = self.nodes.get(node_id)
            if node is not None:
                node.state.connection_lost(conn, self.now)

    def _connect(self, src: Node, d: ev.Dial) -> None:
        dst = self.nodes.get(d.node)
        url_ok = d.url == f"node{d.node}:1"
        if dst is None or not url_ok or frozenset((src.id, d.node)) in self.cuts or \
                (src.id, d.node) in self.refused:
            src.state.connection_lost(d.conn, self.now)  # connection refused
            return
        self.wires.append(Wire(src.id, d.conn, dst.id, dst.state.accept(self.now)))

    # -- moving frames and time --------------------------------------------------------
    def deliver(self, w: Wire, direction: str, data: bytes) -> None:
        """Hands ``data`` to the receiving end of ``w`` (``direction`` "d2a"/"a2d")."""
        node_id, conn = (w.answerer, w.aconn) if direction == "d2a" else (w.dialer, w.dconn)
        node = self.nodes.get(node_id)
        if node is not None and not w.closed:
            node.state.receive(conn, data, self.now)

    def transfer(self, rounds: int = 10_000) -> int:
        """Moves frames and handles events until nothing moves; returns frames moved."""
        moved = 0
        for _ in range(rounds):
            progress = False
            for node in list(self.nodes.values()):
                progress |= self._handle_events(node)
            for w in list(self.wires):
                if w.closed:
                    continue
                for direction, (sid, sconn) in (("d2a", (w.dialer, w.dconn)),
                                                 ("a2d", (w.answerer, w.aconn))):
                    sender = self.nodes.get(sid)
                    if sender is None or direction in w.hold:
                        continue
                    while not w.closed and (data := sender.state.next_frame(sconn)) is not None:
                        w.tap.append((direction, data))
                        self.deliver(w, direction, data)
                        moved += 1
                        progress = True
            if not progress:
                self.wires = [w for w in self.wires if not w.closed]
                return moved
        raise AssertionError("transfer did not settle")

    def advance(self, seconds: float) -> None:
        """Lets ``seconds`` of fake time pass, firing every deadline on time."""
        end = self.now + seconds
        while True:
            deadlines = [(d, n) for n in self.nodes.values()
                         if (d := n.state.next_deadline()) is not None]
            due = min((d for d, _ in deadlines), default=None)
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            for d, n in deadlines:
                if d <= self.now and n.id in self.nodes:
                    n.state.handle_timer(self.now)
                    # The timer contract: once handled, a deadline moves into the future
                    # (an adapter would otherwise spin on call_at).
                    after = n.state.next_deadline()
                    assert after is None or after > self.now, (n.id, after, self.now)
            self.transfer()
        self.now = end
        self.transfer()

    def until(self, cond: Callable[[], bool], limit: float = 30.0, step: float = 0.05) -> float:
        """Advances in small steps until ``cond()``; returns the fake time it took."""
        start = self.now
        while not cond():
            if self.now - start > limit:
                raise AssertionError(f"not within {limit} s of fake time")
            self.advance(step)
        return self.now - start

    # -- the adapter's part ----------------------------------------------------------------
    def _handle_events(self, node: Node) -> bool:
        state = node.state
        progress = False
        while (e := state.next_event()) is not None:
            progress = True
            node.events.append(e)
            if isinstance(e, ev.Dial):
                self._connect(node, e)
            elif isinstance(e, ev.CloseConnection):
                for w in self.wires:
                    if not w.closed and (node.id, e.conn) in ((w.dialer, w.dconn),
                                                              (w.answerer, w.aconn)):
                        # What the closing side still had to say goes out first.
                        direction = "d2a" if node.id == w.dialer else "a2d"
                        while (data := state.next_frame(e.conn)) is not None:
                            self.deliver(w, direction, data)
                        self._break(w)
            elif isinstance(e, ev.UpdatesReceived):
                node.apply([payload for _, payload in e.updates])
            elif isinstance(e, ev.SyncChunkReceived):
                node.apply(e.records)
            elif isinstance(e, ev.SyncDone):
                node.apply([p for _, p in e.replay])
            elif isinstance(e, ev.SyncRequested):
                node.donations.append(e)
                if node.donate:
                    self._donate(node, e)
            elif isinstance(e, ev.ReplicationDone):
                node.done[e.ticket] = e
            elif isinstance(e, ev.MiReceived):
                node.mi.append((e.src, e.cmd, e.params_json))
            elif isinstance(e, ev.AntiEntropyDue):
                state.send_digest(e.cap, e.node,
                                  antientropy.Digest.of(node.summary()).to_bytes())
            elif isinstance(e, ev.DigestReceived):
                records, want = antientropy.answer_digest(node.summary, node.records_for,
                                                          e.buckets)
                if records or want:
                    state.send_repair(e.cap, e.src, records, want)
            elif isinstance(e, ev.RepairReceived):
                node.apply(e.records)
                if e.last and e.want:
                    state.send_repair(e.cap, e.src, antientropy.answer_want(
                        node.summary, node.records_for, e.want))
        state.take_ready_conns()  # transfer() polls every wire anyway
        waiting, node.waiting = node.waiting, []
        for req in waiting:
            self._donate(node, req)
        return progress or len(node.waiting) < len(waiting)

    def _donate(self, node: Node, req: ev.SyncRequested) -> None:
        """A donor: its records in chunks of 100 (up to ``donate_limit``), then the end;
        as the engine, it waits until the requester has a route."""
        if not node.state.route_ready(req.dst):
            node.waiting.append(req)
            return
        records = [k + b"\0" + v for k, v in sorted(node.data.items())]
        limit = node.donate_limit
        sent = records if limit is None else records[:limit]
        for i in range(0, len(sent), 100):
            assert node.state.send_sync_chunk(req.cap, req.dst, req.sync_id,
                                              sent[i:i + 100]) == SENT
        if limit is None:
            node.state.send_sync_end(req.cap, req.dst, req.sync_id, len(records))


def mesh(net: Net, count: int, **kw: Any) -> list[Node]:
    """Node 1 is the seed; the others know only node 1; returns once all are Up/synced."""
    nodes = [net.add(1, seed=True, **kw)]
    for i in range(2, count + 1):
        nodes.append(net.add(i, seeds=[1], **kw))
    net.until(lambda: all(
        n.state.link_state(o.id) == "Up" for n in nodes for o in nodes if o is not n)
        and all(n.state.synced(CAP) for n in nodes), 20)
    return nodes
