"""The clustering engine's asyncio + grpc.aio adapter: :class:`ClusterNode`.

The decisions live in sans-IO modules (:mod:`.link` link states, :mod:`.topology` routes,
:mod:`.sync` full sync, :mod:`.shtags` sharing tags); this module moves packets and time.

Transport: the node serves ``sipmesh.cluster.v1.Cluster/Link`` and dials every node it
knows (seeds first, then every node learned from flooded node states). On each dialed
stream it sends a ``Hello`` -- HMAC of the shared secret over cluster id, node id, time
and a nonce -- and waits for a ``Welcome`` proving the answerer has the secret too; a
wrong secret, another cluster id or a node id outside ``members`` is refused (logged,
counted, PERMISSION_DENIED/UNAUTHENTICATED). After that the dialer writes ``Frame``s of
packets (a writer task batches whatever is queued into one frame) and the answerer writes
back only the ``Pong``s of the pings it got on that stream.

One timer task ticks every few tens of milliseconds: it polls each link (pings due,
timeouts), floods this node's state every ``ping_interval`` (and at once on any change),
recomputes routes, raises node up/down events, feeds the sharing-tag backend and polls
the sync machines.

Admin state: a disabled node (``set_enabled(False)``) sends nothing, answers no ping and
drops everything it receives, so peers see its links go Down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc
import structlog

from contracts.generated.sipmesh.cluster.v1 import cluster_pb2 as pb
from contracts.generated.sipmesh.cluster.v1 import cluster_pb2_grpc as pb_grpc
from shared.cluster.config import ClusterConfig
from shared.cluster.link import Link, LinkState
from shared.cluster.shtags import ConsulShtags, EmbeddedShtags, ShtagBackend
from shared.cluster.sync import Candidate, Match, Replay, SendSyncRequest, SyncMachine
from shared.cluster.topology import MAX_HOPS, NodeView, adjacency, routes

# Send results, as OpenSIPS' cluster_send_req: 1 sent, -1 disabled, -2 unreachable, -3 error.
SENT, DISABLED, UNREACHABLE, SEND_ERROR = 1, -1, -2, -3
MAX_FRAME = 1 << 20
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 8 * MAX_FRAME),
    ("grpc.max_send_message_length", 8 * MAX_FRAME),
]
CLOCK_SKEW = 60.0

Records = Iterable[bytes] | AsyncIterator[bytes]


@dataclasses.dataclass
class Capability:
    """A registered capability and its callbacks (what a clustered service provides).

    ``produce()`` yields the whole data set as records (bytes; sync or async iterator);
    ``apply_sync(records)`` applies a received chunk; ``apply_update(src, payload)`` a live
    update. Records and updates must be idempotent upserts: a sync retried on another donor
    sends records again.
    """

    name: str
    produce: Callable[[], Records]
    apply_sync: Callable[[list[bytes]], None]
    apply_update: Callable[[int, bytes], None]
    machine: SyncMachine
    on_sync_done: Callable[[], None] | None = None


class Peer:
    """Our dialed stream to one node, its link state and its send queue."""

    def __init__(self, node: ClusterNode, node_id: int, url: str) -> None:
        self.node = node
        self.node_id = node_id
        self.url = url
        self.link = Link(node.config.timers)
        self.queue: collections.deque[pb.Packet] = collections.deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.connected = False
        self.task: asyncio.Task[None] | None = None
        self.refused = ""

    def push(self, packet: pb.Packet) -> None:
        self.queue.append(packet)
        self.queued_bytes += packet.ByteSize()
        if self.queued_bytes > 4 * MAX_FRAME:
            self.writable.clear()
        self.wake.set()

    def take(self) -> list[pb.Packet]:
        out: list[pb.Packet] = []
        size = 0
        while self.queue and size < MAX_FRAME:
            p = self.queue.popleft()
            n = p.ByteSize()
            size += n
            self.queued_bytes -= n
            out.append(p)
        if self.queued_bytes <= MAX_FRAME:
            self.writable.set()
        return out

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0
        self.writable.set()


def _mac(secret: str, *parts: object) -> bytes:
    msg = "|".join(p.hex() if isinstance(p, bytes) else str(p) for p in parts).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).digest()


class _Servicer(pb_grpc.ClusterServicer):  # type: ignore[misc,unused-ignore]
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    async def Link(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await self.node._serve_link(context)


class ClusterNode:
    """One node of one cluster, embedded in a service process (see module docstring)."""

    def __init__(
        self, config: ClusterConfig, *, events: Any = None, shtags: ShtagBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
        mi_runner: Callable[[str, Any], Awaitable[Any]] | None = None,
        registry: Any = None,
    ) -> None:
        config.validate()
        self.config = config
        self.id = config.node_id
        self.cluster_id = config.cluster_id
        self.clock = clock
        self.events = events
        self.mi_runner = mi_runner
        self.log = structlog.get_logger("cluster").bind(cluster=self.cluster_id, node=self.id)
        self.members = config.member_ids()
        self.registry = registry  # a ServiceRegistry: seeds and known ids from discovery
        self.discovered: set[int] = set()
        self.enabled = True
        self.blocked: set[int] = set()
        self.incarnation = int(time.time() * 1000)
        self.seq = 0
        self.started_at = clock()
        self.url = ""
        self.peers: dict[int, Peer] = {}
        self.views: dict[int, NodeView] = {}
        self.capabilities: dict[str, Capability] = {}
        self.next_hop: dict[int, int] = {}
        self.reachable: set[int] = set()  # nodes with a route (over Up links)
        self.alive: set[int] = set()  # nodes not declared Down (see _recompute)
        self.stats: collections.Counter[str] = collections.Counter()
        if shtags is None:
            if config.shtag_backend == "consul":
                shtags = ConsulShtags(
                    config.consul_addr or os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
                    self.cluster_id, self.id, config.shtags(), ttl=config.shtag_ttl,
                    lock_delay=config.shtag_lock_delay,
                    renew_interval=max(config.ping_interval, 0.2))
            else:
                shtags = EmbeddedShtags(self.id, config.shtags())
        self.shtags = shtags
        self.shtags.listener = self._on_shtag_change
        self.shtags.yield_request = self._send_yield
        self._sync_ids = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._donors: set[asyncio.Task[None]] = set()
        self._dirty = True
        self._last_flood = -1e18
        self._grace_over = False
        self.port = 0

    # -- services' API -------------------------------------------------------------------
    def register_capability(
        self, name: str, *, produce: Callable[[], Records],
        apply_sync: Callable[[list[bytes]], None], apply_update: Callable[[int, bytes], None],
        needs_sync: bool = True, match: Match = Match.ANY,
        on_sync_done: Callable[[], None] | None = None,
    ) -> Capability:
        """Declares a capability (before :meth:`start`); see :class:`Capability`."""
        if name in self.capabilities:
            raise ValueError(f"capability {name!r} registered twice")
        machine = SyncMachine(
            name, needs_sync=needs_sync, seed=self.config.seed, started_at=self.clock(),
            seed_fallback=self.config.seed_fallback_interval,
            sync_timeout=self.config.sync_timeout, match=match,
            sip_addr=self.config.sip_addr)
        cap = Capability(name, produce, apply_sync, apply_update, machine, on_sync_done)
        self.capabilities[name] = cap
        self._dirty = True
        return cap

    def send(self, cap: str, dst: int, payload: bytes) -> int:
        """Sends a live update of ``cap`` to node ``dst`` (relayed when needed)."""
        if not self.enabled:
            return DISABLED
        return self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS,
                                     msg=pb.Generic(cap=cap, payload=payload)))

    def broadcast(self, cap: str, payload: bytes) -> int:
        """Sends to every reachable node that has ``cap`` (as send_all_having)."""
        return self.send_all(cap, payload)

    def send_all(self, cap: str, payload: bytes, *, same_sip_addr: bool | None = None) -> int:
        """Sends to all reachable nodes having ``cap``; ``same_sip_addr`` True/False keeps
        only nodes with the same/another SIP address. 1 when every send was queued."""
        if not self.enabled:
            return DISABLED
        result = SENT
        for n in self.nodes_having(cap, same_sip_addr=same_sip_addr):
            r = self.send(cap, n, payload)
            result = r if r != SENT else result
        return result

    async def wait_writable(self) -> None:
        """Waits while any neighbour's send queue is over its high-water mark (a service
        that sends bursts calls this now and then, as backpressure)."""
        for peer in list(self.peers.values()):
            if peer.connected:
                await peer.writable.wait()

    def nodes_having(self, cap: str, *, same_sip_addr: bool | None = None,
                     synced_only: bool = False) -> list[int]:
        out = []
        for n in sorted(self.reachable):
            v = self.views.get(n)
            if v is None or cap not in v.caps or (synced_only and not v.caps[cap]):
                continue
            if same_sip_addr is not None and (v.sip_addr == self.config.sip_addr) != same_sip_addr:
                continue
            out.append(n)
        return out

    def my_index(self, cap: str) -> tuple[int, int]:
        """(index of this node, count) among the synced reachable nodes having ``cap``,
        sorted by node id -- OpenSIPS' get_my_index for work partitioning. (-1, n) when
        this node itself is not synced."""
        ids = self.nodes_having(cap, synced_only=True)
        mine = self.capabilities.get(cap)
        if mine is None or not mine.machine.synced:
            return -1, len(ids)
        ids = sorted([*ids, self.id])
        return ids.index(self.id), len(ids)

    def request_sync(self, cap: str) -> None:
        self.capabilities[cap].machine.request(self.clock())
        self._dirty = True

    # -- admin ---------------------------------------------------------------------------
    def set_enabled(self, enabled: bool) -> None:
        if enabled == self.enabled:
            return
        self.enabled = enabled
        now = self.clock()
        self.log.info("node_admin_state", enabled=enabled)
        for peer in self.peers.values():
            peer.clear()
            peer.link.reset(now)
        self._dirty = True
        self._recompute(now)

    def block(self, node_ids: Iterable[int]) -> None:
        """Test hook: behave as if the links to ``node_ids`` were cut (both directions)."""
        self.blocked = set(node_ids)
        for n in self.blocked:
            if n in self.peers:
                self.peers[n].clear()
        self._dirty = True

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        host, _, port = self.config.listen.rpartition(":")
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_ClusterServicer_to_server(  # type: ignore[no-untyped-call,unused-ignore]
            _Servicer(self), server)
        self.port = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        self._server = server
        self.url = self.config.advertise or f"{host.strip('[]')}:{self.port}"
        if not self.config.secret:
            self.log.warning("cluster_secret_empty")
        for seed in self.config.seed_list():
            if seed.node_id != self.id:
                self._peer(seed.node_id, seed.url)
        await self.shtags.start()
        self._recompute(self.clock())
        self._tasks.append(asyncio.create_task(self._timer()))
        if self.registry is not None and self.config.discovery_service:
            self._tasks.append(asyncio.create_task(self._discover()))
        self.log.info("cluster_node_started", url=self.url)

    async def stop(self) -> None:
        """Stops dialing, timers and donors, releases sharing tags, closes the server.
        Every step is bounded: a stuck transport must not hold a service's shutdown."""
        tasks = [*self._tasks, *self._donors,
                 *(p.task for p in self.peers.values() if p.task is not None)]
        for t in tasks:
            t.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=3.0)
            if stuck:
                self.log.warning("cluster_stop_tasks_stuck", count=len(stuck))
        for step in (self.shtags.close(), *(
                [self._server.stop(0.2)] if self._server is not None else [])):
            try:
                await asyncio.wait_for(step, 3.0)
            except (TimeoutError, Exception) as exc:
                self.log.warning("cluster_stop_step_failed", error=repr(exc))

    # -- peers and the dialing side ------------------------------------------------------
    def _allowed(self, node_id: int) -> bool:
        return node_id != self.id and (self.members is None or node_id in self.members
                                       or node_id in self.discovered)

    def meta(self) -> dict[str, str]:
        """Discovery metadata announcing this node (``runtime.meta.update(node.meta())``):
        nodes configured with ``discovery_service`` find their seeds through it."""
        return {"cluster_id": str(self.cluster_id), "cluster_node_id": str(self.id),
                "cluster_url": self.url}

    async def _discover(self) -> None:
        """Seeds from discovery: every passing instance of ``discovery_service`` that
        announces a node of this cluster is known (admitted) and dialed."""
        service = self.config.discovery_service
        while True:
            try:
                for inst in await self.registry.healthy(service):
                    meta = inst.meta
                    if meta.get("cluster_id") != str(self.cluster_id):
                        continue
                    try:
                        node_id = int(meta.get("cluster_node_id", ""))
                    except ValueError:
                        continue
                    url = meta.get("cluster_url", "")
                    if node_id != self.id and url:
                        self.discovered.add(node_id)
                        self._peer(node_id, url)
            except Exception as exc:  # registry away: keep the peers we have
                self.log.warning("cluster_discovery_failed", error=repr(exc))
            await asyncio.sleep(max(self.config.ping_interval, 1.0))

    def _peer(self, node_id: int, url: str) -> Peer | None:
        peer = self.peers.get(node_id)
        if peer is not None:
            if url and url != peer.url:
                peer.url = url  # the node restarted elsewhere: next reconnect uses it
            return peer
        if not self._allowed(node_id) or not url:
            return None
        peer = self.peers[node_id] = Peer(self, node_id, url)
        peer.task = asyncio.create_task(self._dial(peer))
        self._dirty = True
        return peer

    def _hello(self) -> tuple[pb.Frame, bytes]:
        nonce = os.urandom(16)
        ts = int(time.time() * 1000)
        mac = _mac(self.config.secret, self.cluster_id, self.id, ts, nonce)
        return pb.Frame(hello=pb.Hello(cluster_id=self.cluster_id, node_id=self.id,
                                       timestamp_ms=ts, nonce=nonce, mac=mac,
                                       info=self._my_info())), nonce

    async def _dial(self, peer: Peer) -> None:
        backoff = min(max(self.config.ping_timeout / 2, 0.05), 1.0)
        while True:
            if not self.enabled or peer.node_id in self.blocked:
                peer.clear()
                await asyncio.sleep(backoff)
                continue
            reader: asyncio.Task[None] | None = None
            try:
                async with grpc.aio.insecure_channel(peer.url, options=GRPC_OPTIONS) as ch:
                    stub = pb_grpc.ClusterStub(ch)  # type: ignore[no-untyped-call,unused-ignore]
                    call = stub.Link()
                    hello, nonce = self._hello()
                    await call.write(hello)
                    answer = await asyncio.wait_for(call.read(), 2 * self.config.ping_timeout + 1)
                    if answer is grpc.aio.EOF or not answer.HasField("welcome") or (
                            answer.welcome.node_id != peer.node_id) or not hmac.compare_digest(
                            answer.welcome.mac, _mac(self.config.secret, self.cluster_id,
                                                     peer.node_id, "welcome", nonce)):
                        self.stats["auth_refused"] += 1
                        self.log.warning("peer_not_authenticated", peer=peer.node_id)
                        raise ConnectionError("welcome not authenticated")
                    peer.connected, peer.refused = True, ""
                    reader = asyncio.create_task(self._read_pongs(peer, call))
                    while True:
                        if not self.enabled or peer.node_id in self.blocked:
                            peer.clear()
                        batch = peer.take()
                        if batch:
                            await call.write(pb.Frame(packets=batch))
                            self.stats["sent"] += len(batch)
                            continue
                        if reader.done():
                            raise ConnectionError("stream closed")
                        peer.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(peer.wake.wait(), 1.0)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.PERMISSION_DENIED):
                    if peer.refused != exc.details():
                        self.log.warning("refused_by_peer", peer=peer.node_id,
                                         reason=exc.details())
                    peer.refused = exc.details() or "refused"
            except Exception as exc:  # the transport is gone; the link machine decides
                self.log.debug("dial_failed", peer=peer.node_id, error=repr(exc))
            finally:
                if reader is not None:
                    if reader.done() and not reader.cancelled():
                        reader.exception()  # retrieved: the broken stream is handled here
                    reader.cancel()
                if peer.connected:
                    peer.connected = False
                    peer.clear()
                    if peer.link.on_send_failed(self.clock()):
                        self._dirty = True
            # Reconnect soon (a restarted node is found at once, whatever its link state:
            # node_timeout pauses pings, not the transport), sooner when a ping waits.
            peer.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.wake.wait(), backoff)

    async def _read_pongs(self, peer: Peer, call: Any) -> None:
        while True:
            frame = await call.read()
            if frame is grpc.aio.EOF:
                return
            if not self.enabled or peer.node_id in self.blocked:
                continue
            now = self.clock()
            for p in frame.packets:
                if p.HasField("pong") and peer.link.on_pong(p.pong.seq, now):
                    self._dirty = True
                    self.log.info("link_state", peer=peer.node_id, state=peer.link.state.value)
                    # Routes follow at once: a sender must not see Up and no route.
                    self._recompute(now)
                    self._on_link_up(peer)

    # -- the answering side --------------------------------------------------------------
    async def _serve_link(self, context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        if first is grpc.aio.EOF or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected Hello")
        h = first.hello
        reason = self._check_hello(h)
        if reason:
            self.stats["auth_refused"] += 1
            self.log.warning("link_refused", peer=h.node_id, peer_addr=context.peer(),
                             reason=reason)
            code = (grpc.StatusCode.UNAUTHENTICATED if "secret" in reason
                    else grpc.StatusCode.PERMISSION_DENIED)
            await context.abort(code, reason)
        if not self.enabled:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "node disabled")
        src = h.node_id
        if h.HasField("info") and h.info.url:
            self._peer(src, h.info.url)
        await context.write(pb.Frame(welcome=pb.Welcome(
            node_id=self.id, mac=_mac(self.config.secret, self.cluster_id, self.id,
                                      "welcome", h.nonce))))
        if h.HasField("info"):
            self._on_state(h.info, via=src)
        while True:
            frame = await context.read()
            if frame is grpc.aio.EOF:
                return
            if not self.enabled or src in self.blocked:
                continue
            pongs = []
            now = self.clock()
            peer = self.peers.get(src)
            if peer is not None and peer.link.on_packet(now):
                self._dirty = True
                peer.wake.set()  # re-probe now: reconnect without waiting
            for p in frame.packets:
                self.stats["received"] += 1
                if p.HasField("ping"):
                    pongs.append(pb.Packet(src=self.id, pong=pb.Pong(seq=p.ping.seq)))
                else:
                    try:
                        self._on_packet(p, via=src)
                    except Exception:
                        self.log.exception("packet_failed", src=p.src)
            if pongs:
                await context.write(pb.Frame(packets=pongs))

    def _check_hello(self, h: pb.Hello) -> str:
        if h.cluster_id != self.cluster_id:
            return f"wrong cluster id {h.cluster_id}"
        expected = _mac(self.config.secret, h.cluster_id, h.node_id, h.timestamp_ms, h.nonce)
        if not hmac.compare_digest(expected, h.mac):
            return "wrong cluster secret"
        if abs(time.time() * 1000 - h.timestamp_ms) > CLOCK_SKEW * 1000:
            return "stale hello (check the clocks)"
        if not self._allowed(h.node_id):
            return f"unknown node id {h.node_id}"
        return ""

    # -- packets -------------------------------------------------------------------------
    def _route(self, packet: pb.Packet) -> int:
        dst = packet.dst
        hop = self.next_hop.get(dst)
        if hop is None or hop in self.blocked:
            self.stats["unreachable"] += 1
            return UNREACHABLE
        peer = self.peers.get(hop)
        if peer is None or not peer.connected:
            return SEND_ERROR
        peer.push(packet)
        return SENT

    def _to_neighbour(self, node_id: int, packet: pb.Packet) -> None:
        peer = self.peers.get(node_id)
        if peer is not None and peer.connected and self.enabled and node_id not in self.blocked:
            peer.push(packet)

    def _on_packet(self, p: pb.Packet, via: int) -> None:
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
            self._on_state(p.state, via)
        elif kind == "msg":
            cap = self.capabilities.get(p.msg.cap)
            if cap is not None and cap.machine.on_update(p.src, p.msg.payload):
                cap.apply_update(p.src, p.msg.payload)
        elif kind == "sync_req":
            self._start_donor(p.src, p.sync_req)
        elif kind == "sync":
            cap = self.capabilities.get(p.sync.cap)
            records = list(p.sync.records)
            if cap is not None and cap.machine.on_chunk(p.src, p.sync.sync_id, len(records),
                                                        self.clock()):
                cap.apply_sync(records)
        elif kind == "sync_end":
            cap = self.capabilities.get(p.sync_end.cap)
            if cap is not None:
                self._run_actions(cap, cap.machine.on_end(p.src, p.sync_end.sync_id,
                                                          self.clock()))
        elif kind == "mi":
            self._run_mi(p.mi.cmd, p.mi.params_json)
        elif kind == "yield_tag":
            self.shtags.on_yield(p.yield_tag.tag, p.yield_tag.to_node)

    def _on_state(self, info: pb.NodeInfo, via: int) -> None:
        n = info.node_id
        if n == self.id or not self._allowed(n):
            return
        view = NodeView(n, info.url, info.sip_addr, info.priority, info.seed, info.enabled,
                        frozenset(info.up), dict(info.caps), dict(info.shtag_claims),
                        info.description, info.incarnation, info.seq)
        if not view.newer_than(self.views.get(n)):
            return
        self.views[n] = view
        self._peer(n, info.url)
        self._dirty = True
        # Flood on: every Up neighbour but the one it came from and its origin.
        for m, peer in self.peers.items():
            if m not in (via, n) and peer.link.state is LinkState.UP:
                self._to_neighbour(m, pb.Packet(src=self.id, dst=0, state=info))

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
            caps={c.name: c.machine.synced for c in self.capabilities.values()},
            shtag_claims=self.shtags.claims(), description=self.config.description,
            incarnation=self.incarnation)

    def _up_links(self) -> set[int]:
        if not self.enabled:
            return set()
        return {n for n, p in self.peers.items()
                if p.link.state is LinkState.UP and n not in self.blocked}

    def _flood_own_state(self) -> None:
        self.seq += 1
        info = self._my_info()
        for n in self._up_links():
            self._to_neighbour(n, pb.Packet(src=self.id, state=info))

    # -- timer ---------------------------------------------------------------------------
    async def _timer(self) -> None:
        tick = min(max(min(self.config.ping_interval, self.config.ping_timeout) / 4, 0.01),
                   0.25)
        while True:
            try:
                self._tick(self.clock())
            except Exception:
                self.log.exception("cluster_tick_failed")
            await asyncio.sleep(tick)

    def _tick(self, now: float) -> None:
        for peer in list(self.peers.values()):
            seq, changed = peer.link.poll(now)
            # Disabled, blocked or not connected: the ping is lost and times out like any
            # other (a lost ping also wakes the dialer, which reconnects at once).
            if seq is not None and self.enabled and peer.node_id not in self.blocked:
                if peer.connected:
                    peer.push(pb.Packet(src=self.id, ping=pb.Ping(seq=seq)))
                else:
                    peer.wake.set()
            if changed:
                self.log.info("link_state", peer=peer.node_id, state=peer.link.state.value)
                self._dirty = True
        if self._dirty or now - self._last_flood >= self.config.ping_interval:
            self._recompute(now)
            if self.enabled:
                self._flood_own_state()
            self._last_flood = now
            self._dirty = False
        for cap in self.capabilities.values():
            self._poll_sync(cap, now)

    def _recompute(self, now: float) -> None:
        """Routes over Up links; *alive* nodes over links not declared Down.

        A link in Probe after having been Up still counts for liveness: the node is not
        declared failed (no NODE_STATE_CHANGED, no sharing-tag takeover) before its link
        is Down, so one late pong does not move a tag. Packets only follow Up links.
        """
        up = self._up_links()
        self.next_hop = routes(self.id, up, self.views) if self.enabled else {}
        self.reachable = set(self.next_hop)
        live_links = up | {n for n, p in self.peers.items()
                           if p.link.state is LinkState.PROBE and p.link.was_up
                           and n not in self.blocked} if self.enabled else set()
        alive = set(routes(self.id, live_links, self.views)) if self.enabled else set()
        for n in sorted(alive ^ self.alive):
            state = 1 if n in alive else 0
            self.log.info("node_state_changed", peer=n, reachable=bool(state))
            self._publish("E_CLUSTERER_NODE_STATE_CHANGED", {
                "cluster_id": self.cluster_id, "node_id": n, "new_state": state})
        self.alive = alive
        view = {n: dict(self.views[n].claims) for n in alive
                if n in self.views and self.views[n].enabled}
        # A starting node knows nobody yet: it takes no tag before it had the time to find
        # the holder (one ping round plus every retry), else it would be active alone.
        c = self.config
        if now - self.started_at >= c.ping_interval + c.ping_timeout * (c.ping_retries + 1):
            self._grace_over = True
        self.shtags.on_view(view, self.enabled and self._grace_over)

    def _poll_sync(self, cap: Capability, now: float) -> None:
        if not self.enabled:
            return
        candidates = {}
        for n in self.reachable:
            v = self.views.get(n)
            if v is not None and cap.name in v.caps:
                candidates[n] = Candidate(n, v.caps[cap.name], v.sip_addr)
        before = cap.machine.state
        self._run_actions(cap, cap.machine.poll(now, candidates, lambda: next(self._sync_ids)))
        if cap.machine.state is not before:
            self._dirty = True

    def _run_actions(self, cap: Capability, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, SendSyncRequest):
                self.log.info("sync_request", cap=cap.name, donor=a.donor, sync_id=a.sync_id)
                self._route(pb.Packet(src=self.id, dst=a.donor, ttl=MAX_HOPS, sync_req=(
                    pb.SyncRequest(cap=cap.name, sync_id=a.sync_id))))
            elif isinstance(a, Replay):
                for src, payload in a.updates:
                    cap.apply_update(src, payload)
                self.log.info("sync_done", cap=cap.name, records=cap.machine.records,
                              replayed=len(a.updates))
                self._dirty = True
                if cap.on_sync_done is not None:
                    cap.on_sync_done()

    # -- donor side ----------------------------------------------------------------------
    def _start_donor(self, dst: int, req: pb.SyncRequest) -> None:
        cap = self.capabilities.get(req.cap)
        if cap is None or not cap.machine.synced:
            return
        task = asyncio.create_task(self._donate(cap, dst, req.sync_id))
        self._donors.add(task)
        task.add_done_callback(self._donors.discard)

    async def _donate(self, cap: Capability, dst: int, sync_id: int) -> None:
        limit = self.config.sync_packet_size
        batch: list[bytes] = []
        size = 0
        total = 0

        async def route_ready() -> bool:
            # The requester may be reachable before our own link to it is Up (it dialed
            # us first): wait for a route, up to sync_timeout.
            deadline = self.clock() + self.config.sync_timeout
            while True:
                hop = self.next_hop.get(dst)
                peer = self.peers.get(hop) if hop is not None else None
                if peer is not None and peer.connected:
                    await peer.writable.wait()
                    return True
                if self.clock() >= deadline or not self.enabled:
                    return False
                await asyncio.sleep(0.02)

        async def flush() -> bool:
            nonlocal batch, size
            if not await route_ready():
                return False
            self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS, sync=pb.SyncChunk(
                cap=cap.name, sync_id=sync_id, records=batch)))
            batch, size = [], 0
            await asyncio.sleep(0)
            return True

        try:
            # Route first, data second: the snapshot must not be taken while live updates
            # to the requester still have no route (they would be dropped, and the
            # snapshot would not have them either).
            if not await route_ready():
                self.log.info("sync_donor_gave_up", cap=cap.name, dst=dst)
                return
            async for rec in _aiter(cap.produce()):
                batch.append(rec)
                size += len(rec) + 3
                total += 1
                if size >= limit and not await flush():
                    self.log.info("sync_donor_gave_up", cap=cap.name, dst=dst)
                    return
            if batch and not await flush():
                return
            if not await route_ready():
                return
            self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS, sync_end=pb.SyncEnd(
                cap=cap.name, sync_id=sync_id, records=total)))
            self.log.info("sync_donated", cap=cap.name, dst=dst, records=total)
        except Exception:
            self.log.exception("sync_donor_failed", cap=cap.name, dst=dst)

    # -- MI over the cluster -------------------------------------------------------------
    def send_mi(self, dst: int, cmd: str, params: Any) -> int:
        if not self.enabled:
            return DISABLED
        return self._route(pb.Packet(src=self.id, dst=dst, ttl=MAX_HOPS, mi=pb.MiCommand(
            cmd=cmd, params_json=json.dumps(params))))

    def broadcast_mi(self, cmd: str, params: Any, *, local: bool = True) -> int:
        """Sends ``cmd`` to every reachable node, and runs it here when ``local``."""
        result = DISABLED
        if self.enabled:
            result = SENT if self.reachable else UNREACHABLE
            for n in sorted(self.reachable):
                r = self.send_mi(n, cmd, params)
                result = r if r != SENT else result
        if local:
            self._run_mi(cmd, json.dumps(params))
        return result

    def _run_mi(self, cmd: str, params_json: str) -> None:
        if self.mi_runner is None:
            return
        try:
            params = json.loads(params_json) if params_json else None
        except ValueError:
            return
        task = asyncio.create_task(self._mi_task(cmd, params))
        self._donors.add(task)
        task.add_done_callback(self._donors.discard)

    async def _mi_task(self, cmd: str, params: Any) -> None:
        assert self.mi_runner is not None
        try:
            await self.mi_runner(cmd, params)
        except Exception:
            self.log.exception("cluster_mi_failed", cmd=cmd)

    # -- sharing tags ----------------------------------------------------------------------
    async def shtag_set_active(self, tag: str) -> None:
        """``clusterer_shtag_set_active``: this node takes ``tag`` (KeyError if unknown)."""
        self._grace_over = True  # an operator's decision needs no start-up grace
        await self.shtags.set_active(tag)
        self._dirty = True

    def _send_yield(self, holder: int, tag: str) -> None:
        self._route(pb.Packet(src=self.id, dst=holder, ttl=MAX_HOPS,
                              yield_tag=pb.ShtagYield(tag=tag, to_node=self.id)))

    def _on_shtag_change(self, tag: str, active: bool, reason: str) -> None:
        self.log.info("sharing_tag_changed", tag=tag, active=active, reason=reason)
        self._dirty = True
        self._publish("E_CLUSTERER_SHARING_TAG_CHANGED", {
            "name": tag, "cluster_id": self.cluster_id, "node_id": self.id,
            "state": 1 if active else 0, "reason": reason})

    def _publish(self, name: str, params: Mapping[str, Any]) -> None:
        if self.events is not None:
            try:
                self.events.publish(name, params)
            except Exception:
                self.log.exception("event_publish_failed", event_name=name)

    # -- views for MI ----------------------------------------------------------------------
    def link_state(self, node_id: int) -> str:
        peer = self.peers.get(node_id)
        if peer is None or not self.enabled:
            return LinkState.DOWN.value
        return peer.link.state.value

    def topology(self) -> dict[int, list[int]]:
        return adjacency(self.id, self._up_links(), self.views)


def _info_of(v: NodeView) -> pb.NodeInfo:
    return pb.NodeInfo(node_id=v.node_id, seq=v.seq, url=v.url, sip_addr=v.sip_addr,
                       priority=v.priority, seed=v.seed, enabled=v.enabled, up=sorted(v.up),
                       caps=dict(v.caps), shtag_claims=dict(v.claims),
                       description=v.description, incarnation=v.incarnation)


async def _aiter(records: Records) -> AsyncIterator[bytes]:
    if isinstance(records, AsyncIterator):
        async for r in records:
            yield r
    else:
        it: Iterator[bytes] = iter(records)
        for i, r in enumerate(it):
            yield r
            if i % 2048 == 2047:
                await asyncio.sleep(0)
