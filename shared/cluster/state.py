"""Every decision of one cluster node, sans-IO: :class:`ClusterState`.

Theory of operation (aioquic's ``QuicConnection`` in spirit): the state owns everything a
node knows -- its links (:mod:`.link`), the flooded node views and routes
(:mod:`.topology`), each capability's sync (:mod:`.sync`), the embedded sharing tags
(:mod:`.shtags`), the handshake and sealing of every stream (:mod:`.auth`), the tracked
replications and anti-entropy rounds (:mod:`.antientropy`) -- and never touches a socket,
an event loop or a clock. Its inputs are method calls, each carrying ``now``:

* bytes that arrived on a connection (:meth:`receive`), a connection that ended
  (:meth:`connection_lost`), a new inbound one (:meth:`accept`);
* the clock reaching :meth:`next_deadline` (:meth:`handle_timer`);
* the service's calls (:meth:`send`, :meth:`replicate`, :meth:`set_enabled`, ...).

Its outputs are pulled by the adapter after each input: the frames to write on each
connection (:meth:`next_frame`, already sealed), and events (:meth:`next_event`, see
:mod:`.events`: dial, close, apply an update, donate a sync, a node went down...). The
asyncio + gRPC adapter (:mod:`.engine`) only moves those bytes and arms one timer at
:meth:`next_deadline`; tests drive several states against a fake clock and move the frames
between them themselves (tests/unit/cluster/harness.py).

Connections. Every node dials every node it knows (seeds first, then every node learned
from the flooded node states; a dial is retried every ``redial`` seconds, at once when a
ping is due) and keeps one outbound stream per neighbour: it carries this node's packets
to that neighbour, and brings back the pongs of its pings. The neighbour's own packets
come on the stream it dialed: an inbound connection, on which this node only answers
pongs. Each stream starts with the handshake of :mod:`.auth` and is then sealed.

Rules that are not in the sub-modules, with the OpenSIPS behaviour each follows:

* liveness -- a node is *alive* while a path of links not declared Down reaches it (a
  Probe after Up still counts: one late pong must not move a sharing tag); only *alive*
  transitions raise E_CLUSTERER_NODE_STATE_CHANGED and feed the tag decision. Packets only
  follow Up links (*reachable* nodes, shortest path, :func:`.topology.routes`);
* flooding -- this node's own state is flooded to its Up neighbours when it changes (link
  states, capability sync states, tag claims, admin state) and every ``ping_interval``;
  another node's newer state is flooded on to every Up neighbour but the sender and the
  origin; a link coming Up gets the whole topology (OpenSIPS FULL_TOP_UPDATE);
* start-up grace -- a starting node takes no sharing tag before ``ping_interval +
  ping_timeout x (ping_retries + 1)`` (time to hear from the holder), unless an operator
  forces one;
* admin state -- a disabled node closes its streams, refuses new ones and sends nothing,
  so its peers see it Down;
* tracked replication (:meth:`replicate`) -- the update goes to every *alive* node having
  the capability, each acknowledges it end to end once it holds it (``Acks``), and
  :class:`~.events.ReplicationDone` says who confirmed within ``ack_timeout``; a node not
  reachable at send time gets it as soon as a route appears, within that time;
* anti-entropy -- the sender knows what may be missing where: a node *owes* a round to
  every node that was not reachable when it sent an update of a capability (broadcasts
  skip it), to a neighbour whose stream broke while open (and to the nodes reached
  through it: what was queued or in flight is lost), to a node that did not confirm a
  tracked update, and to a node it could not send a digest or a repair to (a round
  answered before this node's route back exists is lost with its repair); it starts the
  round once both are synced and a route exists, at most one per node and
  ``ping_interval``. A node that finished its own sync starts one with
  every synced peer (its donor may not have had everything), and every
  ``anti_entropy_interval`` when set. A link that flapped without losing anything, or a
  cluster forming, costs no round.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping

from google.protobuf.message import DecodeError

from contracts.generated.sipmesh.cluster.v1 import cluster_pb2 as pb
from shared.cluster import events as ev
from shared.cluster.auth import (
    NONCE_SIZE,
    NonceRecord,
    Opener,
    Refusal,
    Refused,
    Sealer,
    check_proof,
    link_keys,
    proof,
)
from shared.cluster.config import ClusterConfig
from shared.cluster.link import Link, LinkState
from shared.cluster.shtags import EmbeddedShtags
from shared.cluster.sync import Candidate, Match, Replay, SendSyncRequest, SyncMachine
from shared.cluster.topology import MAX_HOPS, NodeView, adjacency, routes

# Send results, as OpenSIPS' cluster_send_req: 1 sent, -1 disabled, -2 unreachable, -3 error.
SENT, DISABLED, UNREACHABLE, SEND_ERROR = 1, -1, -2, -3
MAX_FRAME = 1 << 20  # packets per sealed frame, in bytes
HIGH_WATER = 4 * MAX_FRAME  # a neighbour's queue above this: senders should wait


class Phase(enum.Enum):
    HELLO_SENT = "hello sent"  # dialer: Hello queued, waiting for the Welcome
    WAIT_HELLO = "wait hello"  # answerer: nothing received yet
    WAIT_AUTH = "wait auth"    # answerer: Welcome queued, waiting for the Auth
    OPEN = "open"              # sealed frames both ways
    CLOSED = "closed"          # refused or lost: waits for connection_lost


@dataclasses.dataclass(eq=False)
class Conn:
    """One stream, dialed (``outbound``) or answered."""

    id: int
    outbound: bool
    node: int  # the other node; 0 for an inbound stream before its Hello
    phase: Phase
    deadline: float  # the handshake must be over by then
    nonce_d: bytes = b""
    nonce_a: bytes = b""
    sealer: Sealer | None = None
    opener: Opener | None = None
    control: deque[bytes] = dataclasses.field(default_factory=deque)  # handshake frames
    replies: list[bytes] = dataclasses.field(default_factory=list)  # inbound: pongs


@dataclasses.dataclass(eq=False)
class Peer:
    """A neighbour: its link machine, our outbound stream and its send queue."""

    node_id: int
    url: str
    link: Link
    conn: int | None = None  # our outbound stream, dialing or open
    open: bool = False  # ... and its handshake is over
    queue: deque[bytes] = dataclasses.field(default_factory=deque)  # serialized packets
    queued_bytes: int = 0
    redial_at: float = 0.0

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0


@dataclasses.dataclass(eq=False)
class CapState:
    name: str
    machine: SyncMachine
    anti_entropy: bool
    ae_wanted: set[int] = dataclasses.field(default_factory=set)  # owed a round (``_owe``)
    ae_last: dict[int, float] = dataclasses.field(default_factory=dict)  # last round started
    ae_retry_at: float | None = None  # when a round held back by its hold-off may start


@dataclasses.dataclass(eq=False)
class Ticket:
    """A tracked update waiting for the acks of its targets."""

    id: int
    cap: str
    payload: bytes
    deadline: float
    pending: set[int]
    unsent: set[int] = dataclasses.field(default_factory=set)  # no route yet
    acked: set[int] = dataclasses.field(default_factory=set)


_CODES = {
    Refusal.AUTH: ev.CloseCode.UNAUTHENTICATED,
    Refusal.REPLAY: ev.CloseCode.UNAUTHENTICATED,
    Refusal.MAC: ev.CloseCode.UNAUTHENTICATED,
    Refusal.UNSIGNED: ev.CloseCode.UNAUTHENTICATED,
    Refusal.MALFORMED: ev.CloseCode.INVALID_ARGUMENT,
}


class ClusterState:
    """One node of one cluster (see the module docstring)."""

    def __init__(self, config: ClusterConfig, *, now: float, incarnation: int,
                 wall_offset: float = 0.0, url: str = "", external_shtags: bool = False,
                 entropy: Callable[[int], bytes] = os.urandom) -> None:
        """``now``: the clock of every later call; ``wall_offset``: wall time minus that
        clock (sharing-tag epochs are wall milliseconds); ``incarnation``: this life of the
        node (wall ms at start: a restart floods newer views at once); ``entropy``: the
        source of handshake nonces; ``external_shtags``: tags decided by an external
        backend fed :class:`~.events.ShtagView` events instead of the embedded rule."""
        config.validate()
        self.config = config
        self.id = config.node_id
        self.cluster_id = config.cluster_id
        self.secret = config.secret.encode()
        self.members = config.member_ids()
        self.url = url
        self.incarnation = incarnation
        self.wall_offset = wall_offset
        self.entropy = entropy
        self.started_at = now
        self.enabled = True
        self.discovered: set[int] = set()
        self.peers: dict[int, Peer] = {}
        self.views: dict[int, NodeView] = {}
        self.caps: dict[str, CapState] = {}
        self.next_hop: dict[int, int] = {}
        self.reachable: set[int] = set()
        self.alive: set[int] = set()
        self.conns: dict[int, Conn] = {}
        self.stats: Counter[str] = Counter()
        self.nonces = NonceRecord()
        self.seq = 0
        self.grace_over = False
        self._wall = now + wall_offset
        self._events: deque[ev.Event] = deque()
        self._ready_conns: set[int] = set()
        self._conn_ids = itertools.count(1)
        self._sync_ids = itertools.count(1)
        self._ticket_ids = itertools.count(1)
        self.tickets: dict[int, Ticket] = {}
        self._acks: dict[int, list[int]] = {}
        self._views_dirty = True
        self._own_dirty = True
        self._last_flood = -1e18
        self._last_ae = now
        self._shtag_view: tuple[dict[int, dict[str, int]], bool] | None = None
        c = config
        self.grace = c.ping_interval + c.ping_timeout * (c.ping_retries + 1)
        self.handshake_timeout = 2 * c.ping_timeout + 1.0
        self.redial = min(max(c.ping_timeout / 2, 0.05), 1.0)
        self.shtags: EmbeddedShtags | None = None
        if not external_shtags:
            self.shtags = EmbeddedShtags(self.id, config.shtags(), lambda: self._wall)
            self.shtags.listener = self._on_shtag_change
            self.shtags.yield_request = None
        for seed in config.seed_list():
            if seed.node_id != self.id:
                self._peer(seed.node_id, seed.url, now)

    # -- outputs -------------------------------------------------------------------------
    def next_event(self) -> ev.Event | None:
        return self._events.popleft() if self._events else None

    def take_ready_conns(self) -> set[int]:
        """Connections that got frames to write since the last call."""
        ready, self._ready_conns = self._ready_conns, set()
        return ready

    def next_frame(self, conn: int) -> bytes | None:
        """The next frame to write on ``conn`` (handshake messages first, then one sealed
        frame of everything queued, up to :data:`MAX_FRAME`); None when nothing waits."""
        c = self.conns.get(conn)
        if c is None:
            return None
        if c.control:
            return c.control.popleft()
        if c.phase is not Phase.OPEN:
            return None
        assert c.sealer is not None
        if c.outbound:
            peer = self.peers.get(c.node)
            if peer is None or peer.conn != conn or not peer.queue:
                return None
            batch: list[bytes] = []
            size = 0
            queue = peer.queue
            while queue and size < MAX_FRAME:
                data = queue.popleft()
                size += len(data)
                batch.append(data)
            peer.queued_bytes -= size
        else:
            if not c.replies:
                return None
            batch, c.replies = c.replies, []
        body = encode_sealed(batch)
        seq, mac = c.sealer.seal(body)
        self.stats["sent"] += len(batch)
        return encode_frame(seq, body, mac)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` next has something to do."""
        times: list[float] = []
        for peer in self.peers.values():
            times.append(peer.link.next_deadline())
            if peer.conn is None and self.enabled:
                times.append(peer.redial_at)
        for c in self.conns.values():
            if c.phase not in (Phase.OPEN, Phase.CLOSED):
                times.append(c.deadline)
        if self.enabled:
            times.append(self._last_flood + self.config.ping_interval)
            for cap in self.caps.values():
                t = cap.machine.next_deadline()
                if t is not None:
                    times.append(t)
            if self.config.anti_entropy_interval > 0:
                times.append(self._last_ae + self.config.anti_entropy_interval)
            times.extend(cap.ae_retry_at for cap in self.caps.values()  # held-back rounds
                         if cap.ae_retry_at is not None)
        if not self.grace_over:
            times.append(self.started_at + self.grace)
        times.extend(t.deadline for t in self.tickets.values())
        return min(times) if times else None

    # -- inputs: time --------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        self._wall = now + self.wall_offset
        for peer in list(self.peers.values()):
            seq, changed = peer.link.poll(now)
            # Disabled or not connected: the ping is lost and times out like any other
            # (a lost ping also dials at once when no stream is open).
            if seq is not None and self.enabled:
                if peer.open:
                    # Ahead of any backlog: liveness must not depend on how much data
                    # waits for the link (a burst would otherwise time pings out).
                    self._push(peer, pb.Packet(src=self.id, ping=pb.Ping(seq=seq)),
                               first=True)
                elif peer.conn is None:
                    peer.redial_at = now
            if changed:
                self._link_changed(peer)
                if peer.link.state is LinkState.DOWN and peer.conn is not None:
                    # No pong for every retry on a stream that looks fine: it may be
                    # half dead (its other end gone quiet). Start over on a new one.
                    c = self.conns.get(peer.conn)
                    if c is not None:
                        self._close(c, ev.CloseCode.UNAVAILABLE, "link down", now)
        for c in list(self.conns.values()):
            if c.phase not in (Phase.OPEN, Phase.CLOSED) and now >= c.deadline:
                if c.phase is Phase.WAIT_AUTH:
                    # A Hello with no Auth: a replayed Hello or a prober without the secret.
                    self.stats[Refusal.AUTH.value] += 1
                    self._emit(ev.FrameRefused(c.id, c.node, Refusal.AUTH.value,
                                               "no Auth within the handshake time"))
                self._close(c, ev.CloseCode.UNAVAILABLE, "handshake timed out", now)
        for t in list(self.tickets.values()):
            if now >= t.deadline:
                self._finish(t)
        if not self.grace_over and now - self.started_at >= self.grace:
            self._views_dirty = True  # the tag decision may change now
        if self.enabled and self.config.anti_entropy_interval > 0 and \
                now >= self._last_ae + self.config.anti_entropy_interval:
            self._last_ae = now
            for cap in self.caps.values():
                if cap.anti_entropy:
                    cap.ae_wanted |= {n for n in self.alive if self.id < n}
        self._settle(now)

    # -- inputs: connections -------------------------------------------------------------
    def accept(self, now: float) -> int:
        """A new inbound stream; returns its connection id."""
        cid = next(self._conn_ids)
        self.conns[cid] = Conn(cid, False, 0, Phase.WAIT_HELLO, now + self.handshake_timeout)
        return cid

    def receive(self, conn: int, data: bytes, now: float) -> None:
        """A frame read from ``conn``."""
        c = self.conns.get(conn)
        if c is None or c.phase is Phase.CLOSED:
            return
        self._wall = now + self.wall_offset
        try:
            try:
                frame = pb.Frame.FromString(data)
            except DecodeError as exc:
                raise Refused(Refusal.MALFORMED, "not a Frame") from exc
            if c.phase is Phase.OPEN:
                self._on_sealed(c, frame, now)
            elif c.phase is Phase.WAIT_HELLO:
                self._on_hello(c, frame, now)
            elif c.phase is Phase.WAIT_AUTH:
                self._on_auth(c, frame)
            else:
                self._on_welcome(c, frame, now)
        except Refused as r:
            self.stats[r.kind.value] += 1
            self._emit(ev.FrameRefused(c.id, c.node, r.kind.value, r.reason))
            code = _CODES[r.kind]
            if r.kind is Refusal.AUTH and "secret" not in r.reason:
                code = ev.CloseCode.PERMISSION_DENIED
            self._close(c, code, r.reason, now)
        self._settle(now)

    def connection_lost(self, conn: int, now: float) -> None:
        """The stream ended (either side, any reason); the state forgets it."""
        c = self.conns.pop(conn, None)
        if c is not None and c.phase is not Phase.CLOSED:
            self._drop(c, now)
        self._settle(now)

    # -- inputs: the service -------------------------------------------------------------
    def register_capability(self, name: str, now: float, *, needs_sync: bool = True,
                            match: Match = Match.ANY, anti_entropy: bool = False) -> CapState:
        if name in self.caps:
            raise ValueError(f"capability {name!r} registered twice")
        machine = SyncMachine(
            name, needs_sync=needs_sync, seed=self.config.seed, started_at=now,
            seed_fallback=self.config.seed_fallback_interval,
            sync_timeout=self.config.sync_timeout, match=match,
            sip_addr=self.config.sip_addr)
        cap = self.caps[name] = CapState(name, machine, anti_entropy)
        self._own_dirty = True
        return cap

    def add_node(self, node_id: int, url: str, now: float, *, discovered: bool = False) -> None:
        """A node to dial (a seed, or found in discovery: then it is admitted too)."""
        if node_id == self.id or not url:
            return
        if discovered:
            self.discovered.add(node_id)
        self._peer(node_id, url, now)
        self._settle(now)

    def set_enabled(self, enabled: bool, now: float) -> None:
        """``clusterer_set_status``: a disabled node closes its streams and ignores all."""
        if enabled == self.enabled:
            return
        self.enabled = enabled
        for peer in self.peers.values():
            peer.clear()
            if peer.link.reset(now):
                self._link_changed(peer)
            peer.redial_at = now
        if not enabled:
            for c in list(self.conns.values()):
                if c.phase is not Phase.CLOSED:
                    self._close(c, ev.CloseCode.UNAVAILABLE, "node disabled", now)
        self._views_dirty = self._own_dirty = True
        self._settle(now)

    def request_sync(self, cap: str, now: float) -> None:
        self.caps[cap].machine.request(now)
        self._own_dirty = True
        self._settle(now)

    def shtag_set_active(self, tag: str, now: float) -> None:
        """``clusterer_shtag_set_active``: an operator's decision needs no start-up grace;
        the embedded rule takes a claim above every other (KeyError if unknown)."""
        self._wall = now + self.wall_offset
        self.grace_over = True
        if self.shtags is not None:
            self.shtags.force_active(tag)
        self._own_dirty = True
        self._settle(now)

    def send(self, cap: str, dst: int, payload: bytes, *, ack_id: int = 0) -> int:
        """A live update of ``cap`` to node ``dst`` (relayed when needed)."""
        if not self.enabled:
            self._owe(cap, (dst,))
            return DISABLED
        result = self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS, msg=pb.Generic(
            cap=cap, payload=payload, ack_id=ack_id)))
        if result != SENT and not ack_id:  # (a tracked update waits for its route)
            self._owe(cap, (dst,))
        return result

    def send_all(self, cap: str, payload: bytes, *, same_sip_addr: bool | None = None) -> int:
        """To all reachable nodes having ``cap`` (1 when every send was queued)."""
        if not self.enabled:  # written here all the same: the others are owed it
            self._owe(cap, self._having(self.views, cap, same_sip_addr, False))
            return DISABLED
        result = SENT
        msg = pb.Generic(cap=cap, payload=payload)
        for n in self.nodes_having(cap, same_sip_addr=same_sip_addr):
            r = self._route(pb.Packet(src=self.id, dst=n, ttl=MAX_HOPS, msg=msg))
            result = r if r != SENT else result
            if r != SENT:
                self._owe(cap, (n,))
        if len(self.reachable) < len(self.views):  # someone misses this one
            self._owe(cap, set(self._having(self.views, cap, same_sip_addr, False))
                      - self.reachable)
        return result

    def replicate(self, cap: str, payload: bytes, now: float, *,
                  same_sip_addr: bool | None = None) -> int:
        """A tracked update to every alive node having ``cap``; returns the ticket that a
        :class:`~.events.ReplicationDone` settles (at once when there is no target)."""
        tid = next(self._ticket_ids)
        targets = set(self._alive_having(cap, same_sip_addr)) if self.enabled else set()
        if len(targets) < len(self.views):  # nodes declared failed: theirs later
            self._owe(cap, set(self._having(self.views, cap, same_sip_addr, False)) - targets)
        t = Ticket(tid, cap, payload, now + self.config.ack_timeout, targets)
        self.tickets[tid] = t
        for n in sorted(targets):
            if self.send(cap, n, payload, ack_id=tid) != SENT:
                t.unsent.add(n)
        if not t.pending:
            self._finish(t)
        return tid

    def send_mi(self, dst: int, cmd: str, params_json: str) -> int:
        if not self.enabled:
            return DISABLED
        return self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS, mi=pb.MiCommand(
            cmd=cmd, params_json=params_json)))

    def send_sync_chunk(self, cap: str, dst: int, sync_id: int, records: list[bytes]) -> int:
        return self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS, sync=pb.SyncChunk(
            cap=cap, sync_id=sync_id, records=records)))

    def send_sync_end(self, cap: str, dst: int, sync_id: int, total: int) -> int:
        return self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS, sync_end=pb.SyncEnd(
            cap=cap, sync_id=sync_id, records=total)))

    def send_digest(self, cap: str, dst: int, buckets: bytes) -> int:
        self.stats["ae_rounds"] += 1
        result = self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS,
                                       digest=pb.Digest(cap=cap, buckets=buckets)))
        if result != SENT:  # the round did not start: still owed
            self._owe(cap, (dst,))
        return result

    def send_repair(self, cap: str, dst: int, records: list[bytes],
                    want: Iterable[int] = ()) -> int:
        """Records of ``cap`` to ``dst`` in packets of about ``sync_packet_size``; the last
        one carries ``want``.

        A repair that cannot leave (no route to ``dst`` yet) leaves ``dst`` owed a round
        of this node's: a digest can arrive on the sender's stream before this node's own
        stream to it is open (each side's link comes Up on its own pongs), and the round
        it answers is lost with the repair. Receiving the digest cancelled the round this
        node owed ``dst`` ("under way"), so without this nothing would compare the two
        again (tests/unit/cluster/test_state.py, the digest that cannot be answered yet)."""
        limit = self.config.sync_packet_size
        chunks: list[list[bytes]] = [[]]
        size = 0
        for rec in records:
            if size >= limit:
                chunks.append([])
                size = 0
            chunks[-1].append(rec)
            size += len(rec) + 3
        self.stats["ae_records_sent"] += len(records)
        result = SENT
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            r = self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS, repair=pb.Repair(
                cap=cap, records=chunk, want=list(want) if last else [], last=last)))
            result = r if r != SENT else result
        if result != SENT:
            self._owe(cap, (dst,))
        return result

    def send_yield(self, holder: int, tag: str) -> int:
        return self._route(pb.Packet(src=self.id, dst=holder, ttl=MAX_HOPS,
                                     yield_tag=pb.ShtagYield(tag=tag, to_node=self.id)))

    # -- queries -------------------------------------------------------------------------
    def nodes_having(self, cap: str, *, same_sip_addr: bool | None = None,
                     synced_only: bool = False) -> list[int]:
        return self._having(self.reachable, cap, same_sip_addr, synced_only)

    def _alive_having(self, cap: str, same_sip_addr: bool | None) -> list[int]:
        return self._having(self.alive, cap, same_sip_addr, False)

    def _having(self, nodes: Iterable[int], cap: str, same_sip_addr: bool | None,
                synced_only: bool) -> list[int]:
        out = []
        for n in sorted(nodes):
            v = self.views.get(n)
            if v is None or cap not in v.caps or (synced_only and not v.caps[cap]):
                continue
            if same_sip_addr is not None and \
                    (v.sip_addr == self.config.sip_addr) != same_sip_addr:
                continue
            out.append(n)
        return out

    def my_index(self, cap: str) -> tuple[int, int]:
        """(index of this node, count) among the synced reachable nodes having ``cap``,
        sorted by node id -- OpenSIPS' get_my_index. (-1, n) when this node is not synced."""
        ids = self.nodes_having(cap, synced_only=True)
        mine = self.caps.get(cap)
        if mine is None or not mine.machine.synced:
            return -1, len(ids)
        ids = sorted([*ids, self.id])
        return ids.index(self.id), len(ids)

    def synced(self, cap: str) -> bool:
        c = self.caps.get(cap)
        return c is not None and c.machine.synced

    def route_ready(self, dst: int) -> bool:
        """A packet for ``dst`` would be queued now."""
        hop = self.next_hop.get(dst)
        peer = self.peers.get(hop) if hop is not None else None
        return self.enabled and peer is not None and peer.open

    def queued_bytes(self, dst: int) -> int:
        """Bytes waiting for the neighbour on the way to ``dst`` (0: no route)."""
        hop = self.next_hop.get(dst)
        peer = self.peers.get(hop) if hop is not None else None
        return peer.queued_bytes if peer is not None else 0

    def backlogged(self, limit: int = HIGH_WATER) -> bool:
        """Some neighbour's queue is above ``limit`` (senders should wait)."""
        return any(p.open and p.queued_bytes > limit for p in self.peers.values())

    def link_state(self, node_id: int) -> str:
        peer = self.peers.get(node_id)
        if peer is None or not self.enabled:
            return LinkState.DOWN.value
        return peer.link.state.value

    def topology(self) -> dict[int, list[int]]:
        return adjacency(self.id, self._up_links(), self.views)

    # -- handshake and sealed frames -----------------------------------------------------
    def _allowed(self, node_id: int) -> bool:
        return node_id != self.id and (self.members is None or node_id in self.members
                                       or node_id in self.discovered)

    def _dial(self, peer: Peer, now: float) -> None:
        cid = next(self._conn_ids)
        nonce = self.entropy(NONCE_SIZE)
        c = Conn(cid, True, peer.node_id, Phase.HELLO_SENT, now + self.handshake_timeout,
                 nonce_d=nonce)
        c.control.append(pb.Frame(hello=pb.Hello(
            cluster_id=self.cluster_id, node_id=self.id, to_node=peer.node_id,
            nonce=nonce)).SerializeToString())
        self.conns[cid] = c
        peer.conn = cid
        self._ready_conns.add(cid)
        self._emit(ev.Dial(cid, peer.node_id, peer.url))

    def _on_hello(self, c: Conn, frame: pb.Frame, now: float) -> None:
        if not frame.HasField("hello"):
            raise _unexpected(frame, "expected Hello")
        h = frame.hello
        c.node = h.node_id
        if h.cluster_id != self.cluster_id:
            raise Refused(Refusal.AUTH, f"wrong cluster id {h.cluster_id}")
        if h.to_node == 0:  # v1 Hellos carried no to_node (and their own HMAC)
            raise Refused(Refusal.AUTH, "Hello of cluster protocol v1: upgrade every node")
        if h.to_node != self.id:
            raise Refused(Refusal.AUTH, f"Hello for node {h.to_node}")
        if not self._allowed(h.node_id):
            raise Refused(Refusal.AUTH, f"unknown node id {h.node_id}")
        if len(h.nonce) != NONCE_SIZE:
            raise Refused(Refusal.MALFORMED, "Hello nonce of the wrong size")
        if self.nonces.seen(h.nonce, now):
            raise Refused(Refusal.REPLAY, "replayed Hello (nonce seen before)")
        if not self.enabled:
            self._close(c, ev.CloseCode.UNAVAILABLE, "node disabled", now)
            return
        c.nonce_d, c.nonce_a = h.nonce, self.entropy(NONCE_SIZE)
        mac = proof(self.secret, "answer", self.cluster_id, c.node, self.id, c.nonce_d,
                    c.nonce_a)
        c.control.append(pb.Frame(welcome=pb.Welcome(
            node_id=self.id, nonce=c.nonce_a, mac=mac)).SerializeToString())
        c.phase = Phase.WAIT_AUTH
        self._ready_conns.add(c.id)

    def _on_auth(self, c: Conn, frame: pb.Frame) -> None:
        if not frame.HasField("auth"):
            raise _unexpected(frame, "expected Auth")
        expected = proof(self.secret, "dial", self.cluster_id, c.node, self.id, c.nonce_d,
                         c.nonce_a)
        if not check_proof(expected, frame.auth.mac):
            raise Refused(Refusal.AUTH, "wrong cluster secret")
        d2a, a2d = link_keys(self.secret, self.cluster_id, c.node, self.id, c.nonce_d,
                             c.nonce_a)
        c.opener, c.sealer = Opener(d2a), Sealer(a2d)
        c.phase = Phase.OPEN

    def _on_welcome(self, c: Conn, frame: pb.Frame, now: float) -> None:
        if not frame.HasField("welcome"):
            raise _unexpected(frame, "expected Welcome")
        w = frame.welcome
        if w.node_id != c.node:
            raise Refused(Refusal.AUTH, f"answered by node {w.node_id}, not {c.node}")
        if len(w.nonce) != NONCE_SIZE:
            raise Refused(Refusal.MALFORMED, "Welcome nonce of the wrong size")
        # The Auth goes out even when the Welcome does not check: the answerer then logs
        # and counts "wrong cluster secret" too, where the operator will look first.
        c.control.append(pb.Frame(auth=pb.Auth(mac=proof(
            self.secret, "dial", self.cluster_id, self.id, c.node, c.nonce_d, w.nonce))
        ).SerializeToString())
        self._ready_conns.add(c.id)
        expected = proof(self.secret, "answer", self.cluster_id, self.id, c.node, c.nonce_d,
                         w.nonce)
        if not check_proof(expected, w.mac):
            raise Refused(Refusal.AUTH, "peer not authenticated (wrong cluster secret?)")
        c.nonce_a = w.nonce
        d2a, a2d = link_keys(self.secret, self.cluster_id, self.id, c.node, c.nonce_d,
                             c.nonce_a)
        c.sealer, c.opener = Sealer(d2a), Opener(a2d)
        c.phase = Phase.OPEN
        peer = self.peers.get(c.node)
        if peer is not None and peer.conn == c.id:
            peer.open = True
            if peer.link.state is not LinkState.UP:
                peer.link.probe_now(now)
            # First thing the answerer hears: who we are (url, caps...), so it dials back.
            self._push(peer, pb.Packet(src=self.id, state=self._my_info()))

    def _on_sealed(self, c: Conn, frame: pb.Frame, now: float) -> None:
        if not frame.mac or frame.packets or frame.HasField("hello") or \
                frame.HasField("welcome") or frame.HasField("auth"):
            raise _unexpected(frame, "expected a sealed frame")
        assert c.opener is not None
        body = frame.body  # each access of a bytes field copies it: once
        c.opener.open(frame.seq, body, frame.mac)
        try:
            sealed = pb.Sealed.FromString(body)
        except DecodeError as exc:  # authentic but undecodable: a bug on the other side
            raise Refused(Refusal.MALFORMED, "sealed body is not Sealed") from exc
        if not self.enabled:
            return
        peer = self.peers.get(c.node)
        if c.outbound:
            for p in sealed.packets:
                if peer is not None and p.HasField("pong") and peer.link.on_pong(p.pong.seq,
                                                                                  now):
                    self._link_changed(peer)
                    # Routes follow at once: a sender must not see Up and no route.
                    self._recompute(now)
                    self._on_link_up(peer)
            return
        if peer is not None and peer.link.on_packet(now):
            self._link_changed(peer)
            if peer.conn is None:
                peer.redial_at = now  # re-probe now: reconnect without waiting
        for p in sealed.packets:
            self.stats["received"] += 1
            if p.HasField("ping"):
                c.replies.append(pb.Packet(src=self.id, pong=pb.Pong(seq=p.ping.seq)
                                           ).SerializeToString())
                self._ready_conns.add(c.id)
            else:
                self._on_packet(p, c.node, now)

    def _close(self, c: Conn, code: ev.CloseCode, reason: str, now: float) -> None:
        self._drop(c, now)
        c.phase = Phase.CLOSED
        self._emit(ev.CloseConnection(c.id, code, reason))

    def _drop(self, c: Conn, now: float) -> None:
        """``c`` is gone: when it was our stream to a peer, the peer's queue goes with it
        and the link machine learns it at once (a lost ping without the wait)."""
        c.phase = Phase.CLOSED
        if not c.outbound:
            return
        peer = self.peers.get(c.node)
        if peer is None or peer.conn != c.id:
            return
        was_open = peer.open
        peer.conn, peer.open = None, False
        if was_open:
            # Whatever was queued or in flight on it may be lost: owed a comparison, the
            # neighbour and every node reached through it.
            via = {d for d, hop in self.next_hop.items() if hop == peer.node_id}
            for cap in self.caps:
                self._owe(cap, via | {peer.node_id})
        peer.clear()
        peer.redial_at = now + self.redial
        if was_open and peer.link.on_send_failed(now):
            self._link_changed(peer)

    # -- packets -------------------------------------------------------------------------
    def _push(self, peer: Peer, packet: pb.Packet, *, first: bool = False) -> None:
        data = packet.SerializeToString()  # once: the frame is a join of these
        if first:
            peer.queue.appendleft(data)
        else:
            peer.queue.append(data)
        peer.queued_bytes += len(data)
        if peer.conn is not None:
            self._ready_conns.add(peer.conn)

    def _route(self, packet: pb.Packet) -> int:
        hop = self.next_hop.get(packet.dst)
        if hop is None:
            self.stats["unreachable"] += 1
            return UNREACHABLE
        peer = self.peers.get(hop)
        if peer is None or not peer.open:
            return SEND_ERROR
        self._push(peer, packet)
        return SENT

    def _to_neighbour(self, node_id: int, packet: pb.Packet) -> None:
        peer = self.peers.get(node_id)
        if peer is not None and peer.open and self.enabled:
            self._push(peer, packet)

    def _on_packet(self, p: pb.Packet, via: int, now: float) -> None:
        if p.dst not in (0, self.id):
            if p.ttl <= 1:
                self.stats["ttl_exceeded"] += 1
                return
            fwd = pb.Packet()
            fwd.CopyFrom(p)
            fwd.ttl = p.ttl - 1
            if self._route(fwd) == SENT:
                self.stats["relayed"] += 1
            return
        kind = p.WhichOneof("body")
        if kind == "state":
            self._on_state(p.state, via, now)
        elif kind == "msg":
            msg = p.msg
            cap = self.caps.get(msg.cap)
            if cap is None:
                return
            src, payload = p.src, msg.payload
            if cap.machine.on_update(src, payload):
                tail = self._events[-1] if self._events else None
                if isinstance(tail, ev.UpdatesReceived) and tail.cap == cap.name:
                    tail.updates.append((src, payload))
                else:
                    self._emit(ev.UpdatesReceived(cap.name, [(src, payload)]))
            if msg.ack_id:  # held now (applied, or buffered until the sync ends)
                self._acks.setdefault(src, []).append(msg.ack_id)
        elif kind == "acks":
            for tid in p.acks.ids:
                t = self.tickets.get(tid)
                if t is not None and p.src in t.pending:
                    t.pending.discard(p.src)
                    t.unsent.discard(p.src)
                    t.acked.add(p.src)
                    if not t.pending:
                        self._finish(t)
        elif kind == "sync_req":
            cap = self.caps.get(p.sync_req.cap)
            if cap is not None and cap.machine.synced:
                self._emit(ev.SyncRequested(cap.name, p.src, p.sync_req.sync_id))
        elif kind == "sync":
            cap = self.caps.get(p.sync.cap)
            if cap is not None and cap.machine.on_chunk(p.src, p.sync.sync_id,
                                                        len(p.sync.records), now):
                self._emit(ev.SyncChunkReceived(cap.name, p.src, list(p.sync.records)))
        elif kind == "sync_end":
            cap = self.caps.get(p.sync_end.cap)
            if cap is not None:
                self._run_sync_actions(cap, cap.machine.on_end(p.src, p.sync_end.sync_id, now))
        elif kind == "digest":
            cap = self.caps.get(p.digest.cap)
            if cap is not None and cap.anti_entropy and cap.machine.synced:
                cap.ae_wanted.discard(p.src)  # a round with it is under way already
                self._emit(ev.DigestReceived(cap.name, p.src, p.digest.buckets))
        elif kind == "repair":
            cap = self.caps.get(p.repair.cap)
            if cap is not None and cap.anti_entropy:
                self.stats["ae_records_received"] += len(p.repair.records)
                self._emit(ev.RepairReceived(cap.name, p.src, list(p.repair.records),
                                             tuple(p.repair.want), p.repair.last))
        elif kind == "mi":
            self._emit(ev.MiReceived(p.mi.cmd, p.mi.params_json, p.src))
        elif kind == "yield_tag":
            if self.shtags is None:  # embedded: the forced node's higher claim is enough
                self._emit(ev.YieldRequested(p.yield_tag.tag, p.yield_tag.to_node))

    def _on_state(self, info: pb.NodeInfo, via: int, now: float) -> None:
        n = info.node_id
        if n == self.id or not self._allowed(n):
            return
        view = NodeView(n, info.url, info.sip_addr, info.priority, info.seed, info.enabled,
                        frozenset(info.up), dict(info.caps), dict(info.shtag_claims),
                        info.description, info.incarnation, info.seq)
        if not view.newer_than(self.views.get(n)):
            return
        self.views[n] = view
        self._peer(n, info.url, now)
        self._views_dirty = True
        # Flood on: every Up neighbour but the one it came from and its origin.
        for m, peer in self.peers.items():
            if m not in (via, n) and peer.link.state is LinkState.UP:
                self._to_neighbour(m, pb.Packet(src=self.id, dst=0, state=info))

    def _peer(self, node_id: int, url: str, now: float) -> Peer | None:
        peer = self.peers.get(node_id)
        if peer is not None:
            if url and url != peer.url:
                peer.url = url  # the node restarted elsewhere: the next dial uses it
            return peer
        if not self._allowed(node_id) or not url:
            return None
        peer = self.peers[node_id] = Peer(node_id, url, Link(self.config.timers),
                                          redial_at=now)
        self._views_dirty = True
        return peer

    def _link_changed(self, peer: Peer) -> None:
        self._emit(ev.LinkStateChanged(peer.node_id, peer.link.state.value))
        self._views_dirty = self._own_dirty = True

    def _on_link_up(self, peer: Peer) -> None:
        """A link came Up: give the neighbour the whole topology we know (FULL_TOP_UPDATE)."""
        self._to_neighbour(peer.node_id, pb.Packet(src=self.id, state=self._my_info()))
        for v in self.views.values():
            if v.node_id != peer.node_id:
                self._to_neighbour(peer.node_id, pb.Packet(src=self.id, state=_info_of(v)))

    def _my_info(self) -> pb.NodeInfo:
        return pb.NodeInfo(
            node_id=self.id, seq=self.seq, url=self.url, sip_addr=self.config.sip_addr,
            priority=self.config.priority, seed=self.config.seed, enabled=self.enabled,
            up=sorted(self._up_links()),
            caps={c.name: c.machine.synced for c in self.caps.values()},
            shtag_claims=self.shtags.claims() if self.shtags is not None else {},
            description=self.config.description, incarnation=self.incarnation)

    def _up_links(self) -> set[int]:
        if not self.enabled:
            return set()
        return {n for n, p in self.peers.items() if p.link.state is LinkState.UP}

    # -- settling after every input ------------------------------------------------------
    def _settle(self, now: float) -> None:
        """What follows any input: routes and liveness, sync machines, this node's flood,
        pending acks, tracked updates waiting for a route, anti-entropy rounds, dials."""
        self._wall = now + self.wall_offset
        if self._views_dirty:
            self._recompute(now)
        if self.enabled:
            for cap in self.caps.values():
                self._poll_sync(cap, now)
            if self._own_dirty or now - self._last_flood >= self.config.ping_interval:
                self._flood_own_state()
                self._last_flood = now
                self._own_dirty = False
            self._send_acks()
            self._send_unsent()
            self._start_anti_entropy(now)
            for peer in self.peers.values():
                if peer.conn is None and now >= peer.redial_at:
                    self._dial(peer, now)

    def _recompute(self, now: float) -> None:
        """Routes over Up links; *alive* nodes over links not declared Down (module
        docstring); node events; tickets and anti-entropy lose the nodes that left; the
        sharing-tag decision."""
        self._views_dirty = False
        up = self._up_links()
        self.next_hop = routes(self.id, up, self.views) if self.enabled else {}
        self.reachable = set(self.next_hop)
        live_links = up | {n for n, p in self.peers.items()
                           if p.link.state is LinkState.PROBE and p.link.was_up} \
            if self.enabled else set()
        alive = set(routes(self.id, live_links, self.views)) if self.enabled else set()
        for n in sorted(alive ^ self.alive):
            self._emit(ev.NodeStateChanged(n, n in alive))
        self.alive = alive
        for t in list(self.tickets.values()):
            gone = t.pending - alive
            if gone:
                t.pending -= gone
                t.unsent -= gone
                if not t.pending:
                    self._finish(t)
        view = claims_view(self.views, alive)
        if now - self.started_at >= self.grace:
            self.grace_over = True
        eligible = self.enabled and self.grace_over
        if self.shtags is not None:
            self.shtags.on_view(view, eligible)
        elif self._shtag_view != (view, eligible):
            self._shtag_view = (view, eligible)
            self._emit(ev.ShtagView(view, eligible))

    def _poll_sync(self, cap: CapState, now: float) -> None:
        candidates = {}
        for n in self.reachable:
            v = self.views.get(n)
            if v is not None and cap.name in v.caps:
                candidates[n] = Candidate(n, v.caps[cap.name], v.sip_addr)
        before = cap.machine.state
        self._run_sync_actions(cap, cap.machine.poll(now, candidates,
                                                     lambda: next(self._sync_ids)))
        if cap.machine.state is not before:
            self._own_dirty = True

    def _run_sync_actions(self, cap: CapState, actions: list[SendSyncRequest | Replay]) -> None:
        for a in actions:
            if isinstance(a, SendSyncRequest):
                self._emit(ev.SyncStarted(cap.name, a.donor, a.sync_id))
                self._route(pb.Packet(src=self.id, dst=a.donor, ttl=MAX_HOPS,
                                      sync_req=pb.SyncRequest(cap=cap.name,
                                                              sync_id=a.sync_id)))
            else:
                self._emit(ev.SyncDone(cap.name, a.updates, cap.machine.records))
                self._own_dirty = True
                if cap.anti_entropy:  # the donor may not have had everything: ask all
                    cap.ae_wanted |= self.alive

    def _flood_own_state(self) -> None:
        self.seq += 1
        info = self._my_info()
        for n in self._up_links():
            self._to_neighbour(n, pb.Packet(src=self.id, state=info))

    def _send_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, {}
        for src, ids in acks.items():
            self._route(pb.Packet(src=self.id, dst=src, ttl=MAX_HOPS, acks=pb.Acks(ids=ids)))

    def _send_unsent(self) -> None:
        for t in list(self.tickets.values()):
            for n in sorted(t.unsent & self.reachable):
                if self.send(t.cap, n, t.payload, ack_id=t.id) == SENT:
                    t.unsent.discard(n)

    def _start_anti_entropy(self, now: float) -> None:
        """Starts the wanted rounds that can run now: both sides synced, a route, and at
        most one round per node and ``ping_interval`` (a node that keeps missing acks
        must not cost a digest per update)."""
        hold = self.config.ping_interval
        for cap in self.caps.values():
            cap.ae_retry_at = None
            if not cap.ae_wanted or not cap.machine.synced:
                continue
            for n in sorted(cap.ae_wanted):
                v = self.views.get(n)
                if v is None:
                    continue  # not heard from yet
                if cap.name not in v.caps or not cap.machine.match.accepts(
                        self.config.sip_addr, v.sip_addr):
                    cap.ae_wanted.discard(n)
                elif v.caps[cap.name] and self.route_ready(n):
                    ready_at = cap.ae_last.get(n, -1e18) + hold
                    if now < ready_at:
                        cap.ae_retry_at = min(cap.ae_retry_at or ready_at, ready_at)
                        continue
                    cap.ae_wanted.discard(n)
                    cap.ae_last[n] = now
                    self._emit(ev.AntiEntropyDue(cap.name, n))

    def _owe(self, cap: str, nodes: Iterable[int]) -> None:
        """``nodes`` may miss something of ``cap`` this node sent (or should have): it
        starts an anti-entropy round with each once both can (``_start_anti_entropy``)."""
        c = self.caps.get(cap)
        if c is not None and c.anti_entropy:
            c.ae_wanted.update(nodes)

    def _finish(self, t: Ticket) -> None:
        self.tickets.pop(t.id, None)
        self._owe(t.cap, t.pending)  # alive but silent: compare data with it soon
        self._emit(ev.ReplicationDone(t.id, frozenset(t.acked), frozenset(t.pending)))

    def _on_shtag_change(self, tag: str, active: bool, reason: str) -> None:
        self._own_dirty = True
        self._emit(ev.ShtagChanged(tag, active, reason))

    def _emit(self, event: ev.Event) -> None:
        self._events.append(event)


# Sealed frames are encoded by hand from packets serialized when queued: protobuf would
# copy every packet into a Sealed message, serialize it, then copy the body again into a
# Frame and serialize that -- about 0.8 ms per MB more, measured on a 100,000-record sync
# (a fifth of the whole sync time). These are plain protobuf encodings of the two
# messages (tests/unit/cluster/test_wire.py parses them back with protobuf); decoding
# stays protobuf's.
_PACKETS = b"\x0a"  # Sealed.packets = 1, length-delimited
_SEQ, _BODY, _MAC = b"\x28", b"\x32", b"\x3a"  # Frame.seq = 5 varint, body = 6, mac = 7


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_sealed(packets: list[bytes]) -> bytes:
    """``Sealed{packets}`` from serialized packets."""
    parts: list[bytes] = []
    for data in packets:
        parts += (_PACKETS, _varint(len(data)), data)
    return b"".join(parts)


def encode_frame(seq: int, body: bytes, mac: bytes) -> bytes:
    """A sealed ``Frame{seq, body, mac}``."""
    return b"".join((_SEQ, _varint(seq), _BODY, _varint(len(body)), body, _MAC,
                     _varint(len(mac)), mac))


def _unexpected(frame: pb.Frame, what: str) -> Refused:
    if frame.packets or frame.body:
        return Refused(Refusal.UNSIGNED, f"{what}, got packets outside a sealed frame")
    return Refused(Refusal.MALFORMED, what)


def _info_of(v: NodeView) -> pb.NodeInfo:
    return pb.NodeInfo(node_id=v.node_id, seq=v.seq, url=v.url, sip_addr=v.sip_addr,
                       priority=v.priority, seed=v.seed, enabled=v.enabled, up=sorted(v.up),
                       caps=dict(v.caps), shtag_claims=dict(v.claims),
                       description=v.description, incarnation=v.incarnation)


def claims_view(views: Mapping[int, NodeView], alive: Iterable[int]) -> dict[int, dict[str, int]]:
    """The reachable enabled nodes' tag claims (what the tag decision sees)."""
    return {n: dict(views[n].claims) for n in alive if n in views and views[n].enabled}
