"""The clustering engine's asyncio + grpc.aio adapter: :class:`ClusterNode`.

Every decision is :class:`~shared.cluster.state.ClusterState`'s (sans-IO); this module only
moves its bytes and its time, as aioquic's asyncio protocol does for its connection:

* it serves ``sipmesh.cluster.v1.Cluster/Link`` and dials what the state asks
  (:class:`~.events.Dial`), with raw-bytes (de)serializers: the state reads and writes
  whole ``Frame`` messages, already sealed, so nothing is parsed twice;
* after every input it drains the state: frames to write (one writer task per dialed
  stream; an answered stream only answers what it read, inline), events to act on, and
  the ONE timer, armed with ``loop.call_at`` at :meth:`ClusterState.next_deadline`;
* it runs the service's capability callbacks when the state says so (apply an update, a
  sync chunk, produce the data for a donor, digest and repair for anti-entropy), runs MI
  commands received over the cluster, publishes the clusterer events, and feeds an
  external sharing-tag backend (Consul).

Services use :class:`ClusterNode`'s API: :meth:`~ClusterNode.register_capability`,
:meth:`~ClusterNode.broadcast` / :meth:`~ClusterNode.send_all` (fire and forget, as
OpenSIPS), :meth:`~ClusterNode.replicate` (awaits the acks of every alive node having the
capability, within ``ack_timeout``), :meth:`~ClusterNode.my_index`, MI over the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import grpc
import structlog

from shared.cluster import antientropy
from shared.cluster import events as ev
from shared.cluster.config import ClusterConfig
from shared.cluster.shtags import ShtagConfig
from shared.cluster.state import (
    DISABLED,
    MAX_FRAME,
    SEND_ERROR,
    SENT,
    UNREACHABLE,
    ClusterState,
    Peer,
)
from shared.cluster.sync import Match, SyncMachine
from shared.cluster.topology import NodeView

__all__ = ["DISABLED", "SEND_ERROR", "SENT", "UNREACHABLE", "Capability", "ClusterNode"]

METHOD = "/sipmesh.cluster.v1.Cluster/Link"
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 8 * MAX_FRAME),
    ("grpc.max_send_message_length", 8 * MAX_FRAME),
]
_STATUS = {
    ev.CloseCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ev.CloseCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ev.CloseCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ev.CloseCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}

Records = Iterable[bytes] | AsyncIterator[bytes]


@dataclasses.dataclass
class Capability:
    """A registered capability and its callbacks (what a clustered service provides).

    ``produce()`` yields the whole data set as records (bytes; sync or async iterator);
    ``apply_sync(records)`` applies received records (a sync chunk, an anti-entropy
    repair); ``apply_update(src, payload)`` a live update. Records and updates must be
    idempotent upserts: a sync retried on another donor sends records again. With
    ``summary`` and ``records_for`` (see :mod:`.antientropy`) the capability takes part in
    anti-entropy.
    """

    name: str
    produce: Callable[[], Records]
    apply_sync: Callable[[list[bytes]], None]
    apply_update: Callable[[int, bytes], None]
    machine: SyncMachine
    on_sync_done: Callable[[], None] | None = None
    summary: antientropy.Summary | None = None
    records_for: antientropy.RecordsFor | None = None


class ShtagPort(Protocol):
    """What the engine and the MI need of a sharing-tag backend."""

    @property
    def tags(self) -> Mapping[str, ShtagConfig]: ...

    def is_active(self, tag: str) -> bool: ...


class ExternalShtags(ShtagPort, Protocol):
    """An asyncio backend that decides the tags itself (:mod:`.shtags_consul`)."""

    listener: Callable[[str, bool, str], None] | None
    yield_request: Callable[[int, str], None] | None

    def on_view(self, view: Mapping[int, Mapping[str, int]], eligible: bool) -> None: ...

    def on_yield(self, tag: str, to_node: int) -> None: ...

    async def set_active(self, tag: str) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class _Stream:
    """The adapter's side of one connection of the state."""

    def __init__(self, conn: int, task: asyncio.Task[Any] | None = None,
                 inbound: bool = False) -> None:
        self.conn = conn
        self.task = task  # the dial task, or the server handler's task (inbound)
        self.inbound = inbound
        self.wake = asyncio.Event()
        self.close: tuple[ev.CloseCode, str] | None = None
        self.reading: asyncio.Future[Any] | None = None  # inbound: the pending read


class ClusterNode:
    """One node of one cluster, embedded in a service process (see module docstring)."""

    def __init__(
        self, config: ClusterConfig, *, events: Any = None, shtags: ExternalShtags | None = None,
        clock: Callable[[], float] = time.monotonic,
        mi_runner: Callable[[str, Any], Awaitable[Any]] | None = None,
        registry: Any = None,
    ) -> None:
        # A StatefulSet's pods share one configuration: the pod name gives the node id.
        config = config.for_host(socket.gethostname())
        config.validate()
        self.config = config
        self.id = config.node_id
        self.cluster_id = config.cluster_id
        self.clock = clock
        self.events = events
        self.mi_runner = mi_runner
        self.registry = registry  # a ServiceRegistry: seeds and known ids from discovery
        # Told (node id, reachable) when another node becomes reachable or unreachable:
        # quick callbacks, run in the engine's event handling.
        self.node_state_listeners: list[Callable[[int, bool], None]] = []
        # Told (tag, active, reason) when a sharing tag of this node changes state; the
        # reason says why ("takeover": its holder was declared down or none held it,
        # "MI command": moved by hand). Quick callbacks, as above.
        self.shtag_listeners: list[Callable[[str, bool, str], None]] = []
        self.log = structlog.get_logger("cluster").bind(cluster=self.cluster_id, node=self.id)
        if shtags is None and config.shtag_backend == "consul":
            from shared.cluster.shtags_consul import ConsulShtags

            shtags = ConsulShtags(
                config.consul_addr or os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
                self.cluster_id, self.id, config.shtags(), ttl=config.shtag_ttl,
                lock_delay=config.shtag_lock_delay,
                renew_interval=max(config.ping_interval, 0.2))
        self._external = shtags
        now = clock()
        self.state = ClusterState(config, now=now, incarnation=int(time.time() * 1000),
                                  wall_offset=time.time() - now,
                                  external_shtags=shtags is not None)
        if shtags is not None:
            shtags.listener = self._on_external_shtag_change
            shtags.yield_request = self._send_yield
        self.capabilities: dict[str, Capability] = {}
        self.url = ""
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._streams: dict[int, _Stream] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._donors: set[asyncio.Task[None]] = set()
        self._replications: dict[int, asyncio.Future[ev.ReplicationDone]] = {}
        self._refused: dict[int, str] = {}
        self._chunks = 0  # sync chunks given by this node's donors (yield every few)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._started = False
        self._changed = asyncio.Event()  # the state moved: waiting donors look again
        self._drained = asyncio.Event()  # a writer took frames: backpressure may be over

    # -- the state, as the MI and services read it ----------------------------------------
    @property
    def shtags(self) -> ShtagPort:
        backend: ShtagPort | None = self._external or self.state.shtags
        assert backend is not None
        return backend

    @property
    def peers(self) -> dict[int, Peer]:
        return self.state.peers

    @property
    def views(self) -> dict[int, NodeView]:
        return self.state.views

    @property
    def next_hop(self) -> dict[int, int]:
        return self.state.next_hop

    @property
    def reachable(self) -> set[int]:
        return self.state.reachable

    @property
    def alive(self) -> set[int]:
        return self.state.alive

    @property
    def enabled(self) -> bool:
        return self.state.enabled

    @property
    def discovered(self) -> set[int]:
        return self.state.discovered

    @property
    def stats(self) -> Mapping[str, int]:
        return self.state.stats

    # -- services' API -------------------------------------------------------------------
    def register_capability(
        self, name: str, *, produce: Callable[[], Records],
        apply_sync: Callable[[list[bytes]], None], apply_update: Callable[[int, bytes], None],
        needs_sync: bool = True, match: Match = Match.ANY,
        on_sync_done: Callable[[], None] | None = None,
        summary: antientropy.Summary | None = None,
        records_for: antientropy.RecordsFor | None = None,
    ) -> Capability:
        """Declares a capability (before :meth:`start`); see :class:`Capability`."""
        ae = summary is not None and records_for is not None
        cap = self.state.register_capability(name, self.clock(), needs_sync=needs_sync,
                                             match=match, anti_entropy=ae)
        found = Capability(name, produce, apply_sync, apply_update, cap.machine, on_sync_done,
                           summary, records_for)
        self.capabilities[name] = found
        return found

    def send(self, cap: str, dst: int, payload: bytes) -> int:
        """Sends a live update of ``cap`` to node ``dst`` (relayed when needed)."""
        result = self.state.send(cap, dst, payload)
        self._wake_writers()
        return result

    def broadcast(self, cap: str, payload: bytes) -> int:
        """Sends to every reachable node that has ``cap`` (as send_all_having)."""
        return self.send_all(cap, payload)

    def send_all(self, cap: str, payload: bytes, *, same_sip_addr: bool | None = None) -> int:
        """Sends to all reachable nodes having ``cap``; ``same_sip_addr`` True/False keeps
        only nodes with the same/another SIP address. 1 when every send was queued."""
        result = self.state.send_all(cap, payload, same_sip_addr=same_sip_addr)
        self._wake_writers()
        return result

    async def replicate(self, cap: str, payload: bytes, *,
                        same_sip_addr: bool | None = None) -> ev.ReplicationDone:
        """Sends ``payload`` to every alive node having ``cap`` and waits until each holds
        it, or was declared failed, or ``ack_timeout`` passed (those are ``missing``)."""
        tid = self.state.replicate(cap, payload, self.clock(), same_sip_addr=same_sip_addr)
        fut: asyncio.Future[ev.ReplicationDone] = asyncio.get_running_loop().create_future()
        self._replications[tid] = fut
        self._pump()
        return await fut

    def synced(self, cap: str) -> bool:
        """True once ``cap`` holds the cluster's data (its startup sync is over)."""
        return self.state.synced(cap)

    async def wait_writable(self) -> None:
        """Waits while any neighbour's send queue is over its high-water mark, until it is
        down to one frame (a service that sends bursts calls this now and then, as
        backpressure; the gap keeps it from waking for every frame written)."""
        if not self.state.backlogged():
            return
        while self.state.backlogged(MAX_FRAME):
            self._drained.clear()
            await self._drained.wait()

    def nodes_having(self, cap: str, *, same_sip_addr: bool | None = None,
                     synced_only: bool = False) -> list[int]:
        return self.state.nodes_having(cap, same_sip_addr=same_sip_addr,
                                       synced_only=synced_only)

    def my_index(self, cap: str) -> tuple[int, int]:
        """(index of this node, count) among the synced reachable nodes having ``cap``,
        sorted by node id -- OpenSIPS' get_my_index for work partitioning."""
        return self.state.my_index(cap)

    def request_sync(self, cap: str) -> None:
        self.state.request_sync(cap, self.clock())
        self._pump()

    # -- admin ---------------------------------------------------------------------------
    def set_enabled(self, enabled: bool) -> None:
        self.log.info("node_admin_state", enabled=enabled)
        self.state.set_enabled(enabled, self.clock())
        self._pump()

    async def shtag_set_active(self, tag: str) -> None:
        """``clusterer_shtag_set_active``: this node takes ``tag`` (KeyError if unknown)."""
        if tag not in self.shtags.tags:
            raise KeyError(tag)
        self.state.shtag_set_active(tag, self.clock())
        if self._external is not None:
            await self._external.set_active(tag)
        self._pump()

    def send_mi(self, dst: int, cmd: str, params: Any) -> int:
        result = self.state.send_mi(dst, cmd, json.dumps(params))
        self._pump()
        return result

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

    def link_state(self, node_id: int) -> str:
        return self.state.link_state(node_id)

    def topology(self) -> dict[int, list[int]]:
        return self.state.topology()

    def meta(self) -> dict[str, str]:
        """Discovery metadata announcing this node (``runtime.meta.update(node.meta())``):
        nodes configured with ``discovery_service`` find their seeds through it."""
        return {"cluster_id": str(self.cluster_id), "cluster_node_id": str(self.id),
                "cluster_url": self.url}

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        host, _, port = self.config.listen.rpartition(":")
        server = grpc.aio.server(options=GRPC_OPTIONS)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "sipmesh.cluster.v1.Cluster",
            {"Link": grpc.stream_stream_rpc_method_handler(self._serve_link)}),))
        self.port = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        self._server = server
        self.url = self.config.advertise or f"{host.strip('[]')}:{self.port}"
        self.state.url = self.url
        if self._external is not None:
            await self._external.start()
        self._started = True
        if self.registry is not None and self.config.discovery_service:
            self._tasks.append(asyncio.create_task(self._discover()))
        self.state.handle_timer(self.clock())
        self._pump()
        self.log.info("cluster_node_started", url=self.url)

    async def stop(self) -> None:
        """Stops dialing, timers and donors, releases sharing tags, closes the server.
        Every step is bounded: a stuck transport must not hold a service's shutdown."""
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
        tasks = [*self._tasks, *self._donors,
                 *(s.task for s in self._streams.values() if s.task is not None)]
        for t in tasks:
            t.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=3.0)
            if stuck:
                self.log.warning("cluster_stop_tasks_stuck", count=len(stuck))
        steps: list[Awaitable[Any]] = []
        if self._external is not None:
            steps.append(self._external.close())
        if self._server is not None:
            steps.append(self._server.stop(0.2))
        for step in steps:
            try:
                await asyncio.wait_for(step, 3.0)
            except (TimeoutError, Exception) as exc:
                self.log.warning("cluster_stop_step_failed", error=repr(exc))
        for fut in self._replications.values():
            if not fut.done():
                fut.cancel()

    # -- driving the state ----------------------------------------------------------------
    def _wake_writers(self) -> None:
        """After a plain send (no event, no new deadline: the hot path of a burst)."""
        for conn in self.state.take_ready_conns():
            stream = self._streams.get(conn)
            if stream is not None:
                stream.wake.set()

    def _pump(self) -> None:
        """After every input: act on the state's events, wake the writers that have
        frames, re-arm the one timer."""
        if self._pumping:
            return  # the outer call drains what this one would
        self._pumping = True
        try:
            while (event := self.state.next_event()) is not None:
                try:
                    self._handle(event)
                except Exception:
                    self.log.exception("cluster_event_failed", event=type(event).__name__)
            for conn in self.state.take_ready_conns():
                stream = self._streams.get(conn)
                if stream is not None:
                    stream.wake.set()
        finally:
            self._pumping = False
        self._changed.set()
        self._arm()

    def _arm(self) -> None:
        if not self._started:
            return
        deadline = self.state.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(deadline - self.clock(), 0.0)
            self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.state.handle_timer(self.clock())
        except Exception:
            self.log.exception("cluster_timer_failed")
        self._pump()

    def _handle(self, e: ev.Event) -> None:
        if isinstance(e, ev.UpdatesReceived):
            apply = self.capabilities[e.cap].apply_update
            for src, payload in e.updates:
                apply(src, payload)
        elif isinstance(e, ev.ReplicationDone):
            fut = self._replications.pop(e.ticket, None)
            if fut is not None and not fut.done():
                fut.set_result(e)
        elif isinstance(e, ev.Dial):
            dialed = self._streams[e.conn] = _Stream(e.conn)
            dialed.task = asyncio.create_task(self._dial(dialed, e.node, e.url))
        elif isinstance(e, ev.CloseConnection):
            stream = self._streams.get(e.conn)
            if stream is not None:
                stream.close = (e.code, e.reason)
                stream.wake.set()
                # An answered stream closed by the clock (handshake timeout, node
                # disabled) has its handler waiting in read(): wake it to answer with
                # the status. One closed by what it just read ends by itself.
                if stream.reading is not None:
                    stream.reading.cancel()
        elif isinstance(e, ev.FrameRefused):
            self.log.warning("link_refused", peer=e.node or None, kind=e.kind, reason=e.reason)
        elif isinstance(e, ev.LinkStateChanged):
            self.log.info("link_state", peer=e.node, state=e.state)
        elif isinstance(e, ev.NodeStateChanged):
            self.log.info("node_state_changed", peer=e.node, reachable=e.up)
            for listener in self.node_state_listeners:
                listener(e.node, e.up)
            self._publish("E_CLUSTERER_NODE_STATE_CHANGED", {
                "cluster_id": self.cluster_id, "node_id": e.node, "new_state": int(e.up)})
        elif isinstance(e, ev.ShtagChanged):
            self._on_shtag_change(e.tag, e.active, e.reason)
        elif isinstance(e, ev.ShtagView):
            if self._external is not None:
                self._external.on_view(e.view, e.eligible)
        elif isinstance(e, ev.YieldRequested):
            if self._external is not None:
                self._external.on_yield(e.tag, e.to_node)
        elif isinstance(e, ev.SyncChunkReceived):
            self.capabilities[e.cap].apply_sync(e.records)
        elif isinstance(e, ev.SyncStarted):
            self.log.info("sync_request", cap=e.cap, donor=e.donor, sync_id=e.sync_id)
        elif isinstance(e, ev.SyncDone):
            cap = self.capabilities[e.cap]
            for src, payload in e.replay:
                cap.apply_update(src, payload)
            self.log.info("sync_done", cap=e.cap, records=e.records, replayed=len(e.replay))
            if cap.on_sync_done is not None:
                cap.on_sync_done()
        elif isinstance(e, ev.SyncRequested):
            self._spawn(self._donate(self.capabilities[e.cap], e.dst, e.sync_id))
        elif isinstance(e, ev.AntiEntropyDue | ev.DigestReceived | ev.RepairReceived):
            self._anti_entropy(e)
        elif isinstance(e, ev.MiReceived):
            self._run_mi(e.cmd, e.params_json)

    def _anti_entropy(self, e: ev.AntiEntropyDue | ev.DigestReceived | ev.RepairReceived
                      ) -> None:
        cap = self.capabilities[e.cap]
        summary, records_for = cap.summary, cap.records_for
        assert summary is not None and records_for is not None
        if isinstance(e, ev.AntiEntropyDue):
            self.state.send_digest(e.cap, e.node, antientropy.Digest.of(summary()).to_bytes())
            self.log.info("anti_entropy_start", cap=e.cap, peer=e.node)
        elif isinstance(e, ev.DigestReceived):
            records, want = antientropy.answer_digest(summary, records_for, e.buckets)
            if records or want:
                self.state.send_repair(e.cap, e.src, records, want)
            self.log.info("anti_entropy_digest", cap=e.cap, peer=e.src, buckets=len(want),
                          records_sent=len(records))
        else:
            if e.records:
                cap.apply_sync(e.records)
            if e.last and e.want:
                records = antientropy.answer_want(summary, records_for, e.want)
                self.state.send_repair(e.cap, e.src, records)
            if e.last:
                self.log.info("anti_entropy_repair", cap=e.cap, peer=e.src,
                              records_received=len(e.records), buckets=len(e.want))

    # -- streams -------------------------------------------------------------------------
    async def _write_frames(self, stream: _Stream, write: Callable[[bytes], Awaitable[None]]
                            ) -> None:
        """Writes what the state has for ``stream`` until it closes it."""
        state = self.state
        while True:
            data = state.next_frame(stream.conn)
            if data is not None:
                await write(data)
                self._drained.set()
                continue
            if stream.close is not None:
                return
            stream.wake.clear()
            await stream.wake.wait()

    async def _dial(self, stream: _Stream, node: int, url: str) -> None:
        reader: asyncio.Task[None] | None = None
        try:
            async with grpc.aio.insecure_channel(url, options=GRPC_OPTIONS) as ch:
                call = ch.stream_stream(METHOD)()  # raw bytes both ways
                reader = asyncio.create_task(self._read(stream, node, call))
                await self._write_frames(stream, call.write)
                with contextlib.suppress(Exception):
                    await call.done_writing()
                    # Refused by us after a Welcome: our Auth is written; let the other
                    # side read it (it logs the wrong secret too) before the channel goes.
                    await asyncio.wait_for(asyncio.shield(reader), 1.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport is gone; the link machine decides
            self.log.debug("dial_failed", peer=node, error=repr(exc))
        finally:
            if reader is not None:
                reader.cancel()
            self._streams.pop(stream.conn, None)
            if self._started:
                self.state.connection_lost(stream.conn, self.clock())
                self._pump()

    async def _read(self, stream: _Stream, node: int, call: Any) -> None:
        try:
            while True:
                data = await call.read()
                if data is grpc.aio.EOF:
                    break
                self.state.receive(stream.conn, data, self.clock())
                self._pump()
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            reason = exc.details() or exc.code().name
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
                              ) and self._refused.get(node) != reason:
                self._refused[node] = reason  # once per reason, not once per redial
                self.log.warning("refused_by_peer", peer=node, reason=reason)
        except Exception as exc:
            self.log.debug("stream_read_failed", error=repr(exc))
        # The stream is over: the writer ends, and with it the dial task.
        if stream.close is None:
            stream.close = (ev.CloseCode.UNAVAILABLE, "stream closed")
        stream.wake.set()

    async def _serve_link(self, request_iterator: Any,
                          context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        """An answered stream: everything read goes to the state; what it answers (the
        handshake, pongs) is written right away, in this task."""
        state = self.state
        conn = state.accept(self.clock())
        stream = self._streams[conn] = _Stream(conn, inbound=True)
        self._arm()  # the handshake deadline
        try:
            while stream.close is None:
                stream.reading = asyncio.ensure_future(context.read())
                try:
                    data = await stream.reading
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if stream.close is None or (task is not None and task.cancelling()):
                        raise  # the server is stopping, not the state closing this stream
                    break
                finally:
                    stream.reading = None
                if data is grpc.aio.EOF:
                    break
                state.receive(conn, data, self.clock())
                self._pump()
                while (out := state.next_frame(conn)) is not None:
                    await context.write(out)
        finally:
            self._streams.pop(conn, None)
            if self._started:
                state.connection_lost(conn, self.clock())
                self._pump()
        if stream.close is not None:
            code, reason = stream.close
            await context.abort(_STATUS[code], reason)

    # -- discovery -------------------------------------------------------------------------
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
                        self.state.add_node(node_id, url, self.clock(), discovered=True)
                        self._pump()
            except Exception as exc:  # registry away: keep the peers we have
                self.log.warning("cluster_discovery_failed", error=repr(exc))
            await asyncio.sleep(max(self.config.ping_interval, 1.0))

    # -- donor side ----------------------------------------------------------------------
    async def _wait_route(self, dst: int) -> bool:
        """Waits (up to ``sync_timeout``) until a packet for ``dst`` would be queued and
        the way there is not backlogged."""
        deadline = self.clock() + self.config.sync_timeout
        while True:
            if self.state.route_ready(dst):
                await self.wait_writable()
                if self.state.route_ready(dst):
                    return True
            remaining = deadline - self.clock()
            if remaining <= 0 or not self.enabled:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def _donate(self, cap: Capability, dst: int, sync_id: int) -> None:
        limit = self.config.sync_packet_size
        batch: list[bytes] = []
        size = 0
        total = 0
        try:
            # Route first, data second: the snapshot must not be taken while live updates
            # to the requester still have no route (they would be dropped, and the
            # snapshot would not have them either).
            if not await self._wait_route(dst):
                self.log.info("sync_donor_gave_up", cap=cap.name, dst=dst)
                return
            records = cap.produce()

            async def full(chunk: list[bytes]) -> bool:
                """Hands a full batch over; False when the requester's route is gone."""
                nonlocal total
                if not await self._give(cap, dst, sync_id, chunk):
                    return False
                total += len(chunk)
                return True

            # Two copies of the per-record loop rather than a wrapper: an async generator
            # around a plain iterator costs a step per record (~20% of a 100,000-record
            # sync); what a full batch takes is written once, in full(), and the loops keep
            # their state in plain locals (the per-record cost of each is unchanged).
            if isinstance(records, AsyncIterator):
                async for rec in records:
                    batch.append(rec)
                    size += len(rec) + 3
                    if size >= limit:
                        if not await full(batch):
                            return
                        batch, size = [], 0
            else:
                for rec in records:
                    batch.append(rec)
                    size += len(rec) + 3
                    if size >= limit:
                        if not await full(batch):
                            return
                        batch, size = [], 0
            if not await self._wait_route(dst):
                return
            total += len(batch)
            if batch:
                self.state.send_sync_chunk(cap.name, dst, sync_id, batch)
            self.state.send_sync_end(cap.name, dst, sync_id, total)
            self._wake_writers()
            self.log.info("sync_donated", cap=cap.name, dst=dst, records=total)
        except Exception:
            self.log.exception("sync_donor_failed", cap=cap.name, dst=dst)

    async def _give(self, cap: Capability, dst: int, sync_id: int, batch: list[bytes]) -> bool:
        """One chunk to the requester; False (and logged) when its route is gone. Yields
        to the loop now and then, so a large table does not hold it."""
        if not self.state.route_ready(dst) or self.state.backlogged():
            if not await self._wait_route(dst):
                self.log.info("sync_donor_gave_up", cap=cap.name, dst=dst)
                return False
        self.state.send_sync_chunk(cap.name, dst, sync_id, batch)
        self._wake_writers()
        self._chunks += 1
        if self._chunks % 8 == 0:
            await asyncio.sleep(0)  # the writer turns the queued chunks into a frame
        return True

    # -- MI over the cluster -------------------------------------------------------------
    def _run_mi(self, cmd: str, params_json: str) -> None:
        if self.mi_runner is None:
            return
        try:
            params = json.loads(params_json) if params_json else None
        except ValueError:
            return
        self._spawn(self._mi_task(cmd, params))

    async def _mi_task(self, cmd: str, params: Any) -> None:
        assert self.mi_runner is not None
        try:
            await self.mi_runner(cmd, params)
        except Exception:
            self.log.exception("cluster_mi_failed", cmd=cmd)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self._donors.add(task)
        task.add_done_callback(self._donors.discard)

    # -- sharing tags ----------------------------------------------------------------------
    def _send_yield(self, holder: int, tag: str) -> None:
        self.state.send_yield(holder, tag)
        self._pump()

    def _on_external_shtag_change(self, tag: str, active: bool, reason: str) -> None:
        self._on_shtag_change(tag, active, reason)

    def _on_shtag_change(self, tag: str, active: bool, reason: str) -> None:
        self.log.info("sharing_tag_changed", tag=tag, active=active, reason=reason)
        for listener in self.shtag_listeners:
            try:
                listener(tag, active, reason)
            except Exception:  # a service's bug must not stop the engine's events
                self.log.exception("shtag_listener_failed", tag=tag)
        self._publish("E_CLUSTERER_SHARING_TAG_CHANGED", {
            "name": tag, "cluster_id": self.cluster_id, "node_id": self.id,
            "state": 1 if active else 0, "reason": reason})

    def _publish(self, name: str, params: Mapping[str, Any]) -> None:
        if self.events is not None:
            try:
                self.events.publish(name, params)
            except Exception:
                self.log.exception("event_publish_failed", event_name=name)
