"""Wiring of the registrar process: config -> store -> user location -> gRPC + MI.

`serve(config)` opens the subscriber store, builds the `UserLocation` (with a cluster node
in the clustered modes, capability `usrloc-contact-repl`: full sync on join in
`full-sharing`, only from nodes of the same SIP address in `federation-cachedb`, no data
at all in `full-sharing-cachedb` where the cluster only splits pinging; the cachedb
backends are in cachedb.py), starts the
gRPC server (`sipmesh.registrar.v1.Registrar` + standard health) and the service runtime
(MI, /metrics, /health, discovery as `registrar` with `grpc` = host:port in its metadata,
where the edge finds it), the expiry timer, and runs until SIGTERM.  It prints one line
when ready:

    registrar ready grpc 127.0.0.1:PORT http http://127.0.0.1:PORT pid PID
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc
from services.registrar.config import CLUSTER_MODES, CLUSTERED, RegistrarConfig
from services.registrar.location import (
    Location,
    Origin,
    RegisterError,
    SaveResult,
    parse_aor,
)
from services.registrar.mi import register_mi
from services.registrar.persistence import WriteFailed
from services.registrar.subscribers import open_store
from services.registrar.usrloc import CAPABILITY, UserLocation, unstored
from shared.service.gc_policy import tune_collector
from shared.service.say import say
from shared.sip import Request, SipParseError, parse_message

SERVICE = "sipmesh.registrar.v1.Registrar"


class RegistrarServicer(pb_grpc.RegistrarServicer):
    """The gRPC face of `UserLocation`; bad input gets a status, never a traceback."""

    def __init__(self, ul: UserLocation) -> None:
        self.ul = ul

    async def Save(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        parsed = _parse_save(request)
        result = parsed if isinstance(parsed, SaveResult) else \
            await self.ul.save_async(*parsed, replay=request.retry)
        reply = pb.SaveReply()
        _fill_save(reply, result)
        return reply

    async def SaveWithDigest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Save after checking `request.digest` against the subscriber's HA1 (digest.py)."""
        parsed = _parse_save(request)
        reply = pb.SaveReply()
        if isinstance(parsed, SaveResult):
            _fill_save(reply, parsed)
            return reply
        result, rejected = await self.ul.save_with_digest(*parsed, request.digest,
                                                          replay=request.retry)
        _fill_save(reply, result)
        reply.digest_rejected = rejected
        return reply

    async def Lookup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            aor = parse_aor(request.aor)
        except RegisterError:
            return pb.LookupReply(status=400)
        status, found = await self.ul.lookup(aor, request.method,
                                             max_latency_us=request.max_latency_us,
                                             by_latency=request.by_latency)
        branches = [pb.Branch(uri=b.uri, next_hop=b.next_hop(),
                              q=-1.0 if b.q < 0 else b.q / 1000.0, path=list(b.path),
                              instance=b.instance, latency_us=b.latency) for b in found]
        if request.federated:
            # OpenSIPS lookup flag g: one branch per other point of presence holding the
            # AOR, sent to its home SIP address with the AOR as Request-URI.
            try:
                homes = await self.ul.remote_homes(aor)
            except Exception as exc:  # the cachedb is down: the local bindings still work
                self.ul.log.warning("federation_lookup_failed", aor=aor, error=repr(exc))
                homes = []
            branches += [pb.Branch(uri=f"sip:{aor}", next_hop=_sip_uri(h), q=-1.0,
                                   federated=True) for h in homes]
            if homes:
                status = 200
        return pb.LookupReply(status=status, branches=branches)

    async def GetCredentials(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        sub = await self.ul.credentials(request.username, request.domain.lower())
        if sub is None:
            return pb.CredentialsReply(found=False)
        return pb.CredentialsReply(found=True, ha1=sub.ha1, ha1_sha256=sub.ha1_sha256)


    async def Session(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        """The calls multiplexed on one stream, each reply tagged with its request id.

        A Save that needs no I/O before it is decided (the table is in memory: every mode
        but sql-only and full-sharing-cachedb) is answered where it is read, straight into
        a reply message: no task, no queue, no copy of the reply.  Without a write-through
        SQL copy it joins the next message at once.  With one (the default, mode `none`),
        the Saves of one request message are answered in a message of their own that is
        held until what they changed is stored (`UserLocation.stored`: one transaction and
        one commit for every change made meanwhile), so no 200 leaves before its binding
        would survive a kill -9; a failed write turns their 200s into 503s.  The
        SaveWithDigest calls of a message wait for their subscribers first: one task and
        at most one store lookup for all of them (`saves_with_digest`; subscribers are
        cached 2 s, `UserLocation.subscribers`), then the same.  Any other call
        runs in a task of its own (a sql-only Save waiting on SQL does not hold up the
        others) and its reply joins the next message when ready.  Whatever is ready when the
        stream can be written goes out."""
        outbox = _Outbox()
        tasks: set[asyncio.Task[None]] = set()
        inline_saves = self.ul.saves_inline
        hold_saves = inline_saves and self.ul.durable

        async def handle(req: Any) -> None:
            try:
                kind = req.WhichOneof("call")
                if kind == "save":
                    reply = pb.SessionReply(id=req.id, save=await self.Save(req.save, context))
                elif kind == "lookup":
                    reply = pb.SessionReply(id=req.id,
                                            lookup=await self.Lookup(req.lookup, context))
                elif kind == "save_with_digest":
                    reply = pb.SessionReply(id=req.id, save_with_digest=await self.SaveWithDigest(
                        req.save_with_digest, context))
                elif kind == "credentials":
                    reply = pb.SessionReply(id=req.id, credentials=await self.GetCredentials(
                        req.credentials, context))
                else:
                    reply = pb.SessionReply(id=req.id, error="no call in the request")
            except Exception as exc:  # answered, never a traceback to the edge
                self.ul.log.exception("session_call_failed")
                reply = pb.SessionReply(id=req.id, error=type(exc).__name__)
            finally:
                # Before the reply wakes the writer: it must not wait for this task.
                tasks.discard(asyncio.current_task())
            outbox.put(reply)

        def save_now(req: Any, reply: Any) -> None:
            reply.id = req.id
            try:
                parsed = _parse_save(req.save)
                _fill_save(reply.save, parsed if isinstance(parsed, SaveResult)
                           else self.ul.save(*parsed, replay=req.save.retry))
            except Exception as exc:  # answered, never a traceback to the edge
                self.ul.log.exception("session_call_failed")
                reply.Clear()
                reply.id = req.id
                reply.error = type(exc).__name__

        async def saves_with_digest(reqs: list[Any]) -> None:
            """SaveWithDigest calls of one request message, inline modes: the subscribers
            of all of them in one store lookup (one trip to SQLite's thread), then each
            checked and saved as `save_now` does, answered in one message (held until
            stored, as inline Saves are)."""
            message = pb.SessionReplies()
            try:
                ul = self.ul
                work = []
                for req in reqs:
                    reply = message.replies.add()
                    reply.id = req.id
                    call = req.save_with_digest
                    out = reply.save_with_digest
                    parsed = _parse_save(call)
                    if isinstance(parsed, SaveResult):
                        _fill_save(out, parsed)
                        continue
                    try:
                        creds, key = ul.digest_key(parsed[0], call.digest)
                    except SipParseError:  # an unreadable To: the Save answers 400
                        _fill_save(out, ul.save(*parsed, replay=call.retry))
                        continue
                    work.append((out, parsed, creds, key, call.retry))
                # The subscribers read, the digests checked and the bindings stored in
                # one trip to SQLite's thread (usrloc.save_batch_with_digest), or (None)
                # the usual way.
                answers = await ul.save_batch_with_digest(
                    [(msg, origin, creds, key, retry)
                     for _, (msg, origin), creds, key, retry in work]
                ) if work and ul.one_trip() else None
                if answers is not None:
                    for (out, *_), (result, rejected) in zip(work, answers, strict=True):
                        _fill_save(out, result)
                        if rejected:
                            out.digest_rejected = True
                    work = []
                subs, cached = await ul.subscribers(
                    [key for *_, key, _ in work if key is not None])
                at = 0
                for out, (msg, origin), creds, key, retry in work:
                    if key is None:
                        refused = ul.refused(msg, creds, None)
                    else:
                        refused = ul.refused(msg, creds, subs[at], count=not cached[at])
                        if refused is not None and cached[at]:  # a password changed?
                            fresh, _ = await ul.subscribers([key], fresh=True)
                            refused = ul.refused(msg, creds, fresh[0])
                        at += 1
                    if refused is None:
                        _fill_save(out, ul.save(msg, origin, replay=retry))
                    else:
                        _fill_save(out, refused[0])
                        out.digest_rejected = refused[1]
            except Exception as exc:  # answered, never a traceback to the edge
                self.ul.log.exception("session_call_failed")
                for reply in message.replies:
                    rid = reply.id
                    reply.Clear()
                    reply.id = rid
                    reply.error = type(exc).__name__
            finally:
                tasks.discard(asyncio.current_task())
            outbox.hold(message, self.ul.stored())

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    held = None
                    checked = None
                    for req in batch.calls:
                        if inline_saves and req.HasField("save"):
                            if hold_saves:
                                if held is None:
                                    held = pb.SessionReplies()
                                save_now(req, held.replies.add())
                            else:
                                save_now(req, outbox.add())
                        elif inline_saves and req.HasField("save_with_digest"):
                            if checked is None:
                                checked = []
                            checked.append(req)
                        else:
                            task = asyncio.create_task(handle(req))
                            tasks.add(task)
                    if held is not None:
                        outbox.hold(held, self.ul.stored())
                    if checked is not None:
                        task = asyncio.create_task(saves_with_digest(checked))
                        tasks.add(task)
            finally:
                outbox.closed = True
                outbox.ready.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                await outbox.ready.wait()
                message = outbox.take()
                if message is not None:
                    yield message
                if outbox.closed and not tasks and outbox.idle:
                    break  # the edge closed its side and everything it asked is answered
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()


class _Outbox:
    """Replies of one Session waiting for the stream, and the writer's wake-up: the message
    being filled, and messages of Saves held until their changes are stored."""

    def __init__(self) -> None:
        self.message = pb.SessionReplies()
        self.released: list[Any] = []  # held messages whose changes are stored: send them
        self.held = 0  # held messages still waiting
        self.ready = asyncio.Event()
        self.closed = False  # the edge closed its side: no more requests

    def add(self) -> Any:
        """A new empty reply in the next message (filled in place by the caller)."""
        self.ready.set()
        return self.message.replies.add()

    def put(self, reply: Any) -> None:
        self.message.replies.append(reply)
        self.ready.set()

    def hold(self, message: Any, stored: asyncio.Future[None]) -> None:
        """`message` goes out once `stored` is done; its 200s become 503s if that failed."""
        self.held += 1

        def release(done: asyncio.Future[None]) -> None:
            self.held -= 1
            if done.cancelled() or done.exception() is not None:
                for reply in message.replies:
                    kind = reply.WhichOneof("result")
                    if kind in ("save", "save_with_digest"):
                        save = getattr(reply, kind)
                        if save.status == 200:
                            save.Clear()
                            _fill_save(save, unstored())
            self.released.append(message)
            self.ready.set()

        if stored.done():
            release(stored)
        else:
            stored.add_done_callback(release)

    @property
    def idle(self) -> bool:
        """Nothing waits to be sent, nor to be stored first."""
        return not self.held and not self.released and not self.message.replies

    def take(self) -> Any | None:
        """Everything ready to go as one message (None when nothing is); the wake-up is
        consumed.  Released held messages are merged into one: a stream message costs
        about the same whatever it carries, a copied reply far less."""
        self.ready.clear()
        parts = self.released
        self.released = []
        if self.message.replies:
            parts.append(self.message)
            self.message = pb.SessionReplies()
        if not parts:
            return None
        message = parts[0]
        for part in parts[1:]:
            message.MergeFrom(part)
        return message


def _parse_save(request: Any) -> SaveResult | tuple[Request, Origin]:
    """The REGISTER and where it came from, or the 400 answer to bytes that are not one.

    The header section must be UTF-8 (RFC 3261 §25.1: TEXT-UTF8; the edge's parser keeps
    other bytes as lone surrogates): a binding made of anything else could be neither
    answered (protobuf strings are UTF-8), nor stored, nor looked up again."""
    message = request.message
    end = message.find(b"\r\n\r\n")
    try:
        (message if end < 0 else message[:end]).decode("utf-8")
    except UnicodeDecodeError:
        return SaveResult(400, "Bad Request")
    try:
        msg = parse_message(message)
    except SipParseError as exc:
        return SaveResult(400, exc.reason or "Bad Request")
    if not isinstance(msg, Request):
        return SaveResult(400, "Not a request")
    return msg, Origin(request.source_host, request.source_port,
                       request.transport or "udp", request.socket)


def _fill_save(reply: Any, result: SaveResult) -> None:
    """`result` into the SaveReply `reply`, in place (no intermediate messages to copy)."""
    reply.status = result.status
    reply.reason = result.reason
    add = reply.headers.add
    for name, value in result.headers:
        add(name=name, value=value)


def _write_metrics(runtime: Any) -> Callable[[float, int], None]:
    """Prometheus histograms of the location table's writes: seconds per transaction
    (commit included) and changes per transaction (how many REGISTERs shared one)."""
    from prometheus_client import Histogram

    seconds = Histogram("sipmesh_registrar_location_write_seconds",
                        "Time of one write of the location table (one transaction)",
                        registry=runtime.metrics,
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0))
    rows = Histogram("sipmesh_registrar_location_write_rows",
                     "Changed bindings written by one transaction", registry=runtime.metrics,
                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))

    def observe(took: float, count: int) -> None:
        seconds.observe(took)
        rows.observe(count)

    return observe


def _sip_uri(addr: str) -> str:
    return addr if addr.startswith(("sip:", "sips:")) else f"sip:{addr}"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m services.registrar",
                                description="SipMesh registrar (user location, subscribers)")
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--http-port", type=int)
    p.add_argument("--store", help="SQLite file or postgresql:// DSN of the subscribers")
    p.add_argument("--cluster-mode", choices=CLUSTER_MODES)
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> RegistrarConfig:
    from shared.config import load_section

    config = load_section(RegistrarConfig, "registrar")
    overrides: dict[str, Any] = {}
    for name in ("grpc_port", "http_port", "store", "cluster_mode"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    config = dataclasses.replace(config, **overrides)
    config.validate()
    return config


async def serve(config: RegistrarConfig) -> None:
    from shared.config import load_section
    from shared.discovery import DiscoveryConfig
    from shared.rpc.grpc_helpers import start_grpc_server
    from shared.service import RuntimeConfig, ServiceRuntime

    discovery = load_section(DiscoveryConfig, "discovery")
    registry = None
    if discovery == DiscoveryConfig() and "SIPMESH_DISCOVERY_URL" not in os.environ:
        from shared.discovery.memory import MemoryRegistry

        registry = MemoryRegistry()  # standalone: no `sipmesh up` around
    runtime = ServiceRuntime(
        "registrar", config=RuntimeConfig(host=config.http_host, port=config.http_port,
                                          advertise=config.http_advertise,
                                          token=config.http_token,
                                          drain_timeout=5.0 + config.drain_delay
                                          + config.drain_grace,
                                          token_setting="[registrar] http_token "
                                                        "(SIPMESH_REGISTRAR_HTTP_TOKEN)"),
        discovery=discovery, registry=registry, sip_handling=False)
    runtime.modes["cluster"] = config.cluster_mode
    runtime.modes["store"] = store_modes(config)
    runtime.declare_events("usrloc.#")  # E_UL_*: advertised by the gateway's events_list
    store = open_store(config.store_location)
    cluster = None
    mode = config.cluster_mode
    if mode in CLUSTERED:
        from shared.cluster import ClusterConfig, ClusterNode, run_local_mi
        from shared.cluster import register_mi as register_cluster_mi

        cluster_config = load_section(ClusterConfig, "registrar.cluster")
        cluster = ClusterNode(cluster_config, events=runtime.events, registry=runtime.registry,
                              mi_runner=lambda cmd, params: run_local_mi(runtime, cmd, params))
        register_cluster_mi(runtime, cluster)
    else:  # no cluster, but a configured node id names this node for MI node_id
        from services.registrar.mi import standalone_node_meta

        runtime.meta.update(standalone_node_meta())
    from services.registrar.persistence import LocationTable, LocationWriter

    sql_table: LocationTable | None = None
    writer: LocationWriter | None = None
    sql_only = mode in ("sql-only", "full-sharing-cachedb")
    publisher = None
    home = ""
    if mode == "full-sharing-cachedb":
        from services.registrar.cachedb import RedisLocationTable

        # Every binding lives in Redis: read per request, written before the answer.
        sql_table = RedisLocationTable(config.cachedb_url, prefix=config.cachedb_prefix,
                                       ping_all=not config.ping_nated_only)
        writer = LocationWriter(sql_table, write_through=True, on_write=_write_metrics(runtime))
    elif sql_only or config.write_mode != "none" or config.persistency == "load-from-sql":
        from services.registrar.persistence import open_location_table

        sql_table = open_location_table(config.db_url or config.store_location,
                                        table=config.table,
                                        synchronous=config.sqlite_synchronous)
        if sql_only or config.write_mode != "none":
            writer = LocationWriter(sql_table, write_through=sql_only or (
                config.write_mode == "write-through"), interval=config.write_interval,
                on_write=_write_metrics(runtime))
    if mode == "federation-cachedb" and cluster is not None:
        from services.registrar.cachedb import DirectoryPublisher, RedisAorDirectory

        home = cluster.config.sip_addr
        if not home:
            from shared.config import ConfigError

            raise ConfigError("[registrar.cluster] sip_addr is needed in federation-cachedb "
                              "(the home address other points of presence send to)")
        publisher = DirectoryPublisher(
            RedisAorDirectory(config.cachedb_url, prefix=config.cachedb_prefix), home,
            ttl=config.cachedb_home_ttl)
    replication = {"federation-cachedb": "same-sip", "full-sharing-cachedb": "none"
                   }.get(mode, "all")
    ul = UserLocation(Location(config.location, config.table), store, events=runtime.events,
                      cluster=cluster, writer=writer, sql_only=sql_table if sql_only else None,
                      replication=replication, directory=publisher, home=home)
    if cluster is not None:
        from shared.cluster.sync import Match

        if mode == "full-sharing-cachedb":
            # No data to share (Redis holds it): the capability only ranks the nodes for
            # the pinging split (my_index).
            cluster.register_capability(
                CAPABILITY, produce=lambda: iter(()), apply_sync=lambda records: None,
                apply_update=lambda src, payload: None, needs_sync=False)
        else:
            # Full sync on join, unless the table comes back from SQL (load-from-sql);
            # federation: only from (and to) the nodes of this point of presence.
            # federation: once synced, this node holds its PoP's data: the directory
            # entries of this home are made to match it (a node that restarted empty
            # withdraws those of its previous life). Anti-entropy after a reconnect repairs
            # what a partition or a restart left different (summary/records_for,
            # tombstones included: usrloc.py).
            reconcile = None if publisher is None else (
                lambda: publisher.reconcile(ul.held_aors))
            cluster.register_capability(
                CAPABILITY, produce=ul.produce, apply_sync=ul.apply_sync,
                apply_update=ul.apply_update,
                needs_sync=config.persistency != "load-from-sql",
                match=Match.EQ_SIP_ADDR if mode == "federation-cachedb" else Match.ANY,
                on_sync_done=reconcile, summary=ul.summary, records_for=ul.records_for)
    register_mi(runtime, ul, sql_table)
    pinging = None
    if config.natping_interval > 0:
        from services.registrar.natping import NatPinger, PingConfig
        from services.registrar.pinging import PingRunner

        pinging = PingRunner(ul, NatPinger(PingConfig(
            config.natping_interval, config.ping_threshold, config.max_pings_lost,
            config.ping_nated_only, config.latency_event_min_us,
            config.latency_event_min_us_delta)), host=config.natping_host)
        runtime.stats.group("nathelper", lambda: dict(pinging.pinger.stats))
    servers: list[Any] = []
    # /ready: serving gRPC and, clustered, holding the cluster's bindings (synced).
    runtime.ready_check("grpc", lambda: bool(servers))
    if cluster is not None and mode != "full-sharing-cachedb":
        runtime.ready_check("cluster_sync", lambda: cluster.synced(CAPABILITY))

    @runtime.on_start
    async def _start() -> None:
        await store.open()
        if publisher is not None:
            await publisher.directory.open()
            publisher.start()
        if sql_table is not None:
            await sql_table.open()
            if config.persistency == "load-from-sql":
                loaded = ul.load(await sql_table.load(ul.clock()))
                runtime.log.info("location_loaded", bindings=loaded)
        if publisher is not None and config.persistency != "sync-from-cluster":
            publisher.reconcile(ul.held_aors)  # the table is complete now (loaded or empty)
        if writer is not None:
            writer.start()
        srv = await start_grpc_server(
            [lambda s: pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
                RegistrarServicer(ul), s)],
            services=[SERVICE], host=config.grpc_host, port=config.grpc_port)
        servers.append(srv)
        host = config.grpc_advertise or (
            runtime.address if config.grpc_host in ("0.0.0.0", "::") else config.grpc_host)
        runtime.meta["grpc"] = f"{host}:{srv.port}"
        if cluster is not None:
            await cluster.start()
            runtime.meta.update(cluster.meta())
        ul.start_timer(config.timer_interval)
        if pinging is not None:
            await pinging.start()
        # The table (loaded or empty) and start-up objects frozen, rare full collections:
        # shared/service/gc_policy.py.
        tune_collector()

    @runtime.on_stop
    async def _stop() -> None:
        # Drain (the runtime has already deregistered): serve while the edges see it and
        # move away, stop taking RPCs and finish those in flight, only then flush writes
        # and close the stores those RPCs use.
        if servers and config.drain_delay > 0:
            await asyncio.sleep(config.drain_delay)
        for srv in servers:
            await srv.stop(config.drain_grace)
        await ul.stop_timer()
        if pinging is not None:
            await pinging.stop()
        if writer is not None:
            try:
                await writer.stop()  # write-back: what is pending goes out now
            except WriteFailed:
                runtime.log.error("location_not_written_at_stop", rows=len(writer.pending))
        if sql_table is not None:
            await sql_table.close()
        if publisher is not None:
            await publisher.stop()
            await publisher.directory.close()
        if cluster is not None:
            await cluster.stop()
        await store.close()

    async def watch_peers() -> None:
        """Keeps ``ul.nodes_in_discovery``: this cluster's nodes registered and ready."""
        from shared.discovery.port import watch

        assert cluster is not None
        while True:
            try:
                async for instances in watch(runtime.registry, "registrar", wait=10.0):
                    # A node registered but not ready yet (syncing after a restart) is
                    # not waited for either: the sync and anti-entropy bring it the data.
                    ul.nodes_in_discovery = {
                        int(i.meta["cluster_node_id"]) for i in instances
                        if i.meta.get("cluster_id") == str(cluster.cluster_id)
                        and i.meta.get("cluster_node_id", "").isdigit()
                        and i.meta.get("ready") != "0"}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # registry away: forget, refuse as before
                ul.nodes_in_discovery = None
                runtime.log.warning("peer_watch_failed", error=repr(exc))
                await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch_peers()) if cluster is not None and \
        config.cluster_mode != "federation-cachedb" else None

    async def announce() -> None:
        while not runtime.port or not servers:
            await asyncio.sleep(0.01)  # start-up of this very process
        extra = f" cluster {cluster.url} node {cluster.id}" if cluster is not None else ""
        say(f"registrar ready grpc {runtime.meta['grpc']} http {runtime.base_url} "
            f"pid {os.getpid()}{extra}")

    announcer = asyncio.create_task(announce())
    try:
        await runtime.serve()
    finally:
        announcer.cancel()
        if watcher is not None:
            watcher.cancel()


def store_modes(config: RegistrarConfig) -> str:
    """The stores of the start-up line: subscribers, and where bindings are kept."""
    from shared.store import describe_location

    subscribers = f"subscribers {describe_location(config.store_location)}"
    if config.cluster_mode == "full-sharing-cachedb":
        return f"{subscribers}, location redis"
    if config.cluster_mode == "sql-only" or config.write_mode != "none" or \
            config.persistency == "load-from-sql":
        table = describe_location(config.db_url or config.store_location)
        return (f"{subscribers}, location {table} {config.write_mode}, "
                f"restart {config.persistency}")
    return f"{subscribers}, location memory, restart {config.persistency}"


def main(argv: Sequence[str] | None = None) -> int:
    from shared.config import EXIT_CONFIG
    from shared.service import configure_logging, run_service
    from shared.service.parent import die_with_parent_from_env

    die_with_parent_from_env()  # started by `sipmesh up`: end with it, even on its SIGKILL
    args = _parse_args(argv)
    try:
        config = load_config(args)
        if config.cluster_mode in CLUSTERED:  # e.g. no secret: one line, EXIT_CONFIG
            from shared.cluster.config import host_cluster_config

            # The node this host would be (node_id_from_hostname): a pod name without an
            # ordinal stops it here, as a configuration error.
            host_cluster_config("registrar")
    except ValueError as exc:
        print(f"registrar: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging("registrar", level=config.log_level)

    async def run() -> None:
        await serve(config)

    run_service(run, name="registrar", uvloop=config.uvloop)
    return 0
