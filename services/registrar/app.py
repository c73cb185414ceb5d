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
from collections.abc import Sequence
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
from services.registrar.subscribers import open_store
from services.registrar.usrloc import CAPABILITY, UserLocation
from shared.sip import Request, SipParseError, parse_message

SERVICE = "sipmesh.registrar.v1.Registrar"


class RegistrarServicer(pb_grpc.RegistrarServicer):
    """The gRPC face of `UserLocation`; bad input gets a status, never a traceback."""

    def __init__(self, ul: UserLocation) -> None:
        self.ul = ul

    async def Save(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        parsed = _parse_save(request)
        result = parsed if isinstance(parsed, SaveResult) else \
            await self.ul.save_async(*parsed)
        reply = pb.SaveReply()
        _fill_save(reply, result)
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
        """The three calls multiplexed on one stream, each reply tagged with its request id.

        A Save that needs no I/O (the table is in memory: every mode but sql-only and
        full-sharing-cachedb) is answered where it is read, straight into the next reply
        message: no task, no queue, no copy of the reply.  Any other call runs in a task of
        its own (a sql-only Save waiting on SQL does not hold up the others) and its reply
        joins the next message when ready.  Whatever is ready when the stream can be written
        goes out as one message."""
        outbox = _Outbox()
        tasks: set[asyncio.Task[None]] = set()
        inline_saves = self.ul.saves_inline

        async def handle(req: Any) -> None:
            try:
                kind = req.WhichOneof("call")
                if kind == "save":
                    reply = pb.SessionReply(id=req.id, save=await self.Save(req.save, context))
                elif kind == "lookup":
                    reply = pb.SessionReply(id=req.id,
                                            lookup=await self.Lookup(req.lookup, context))
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

        def save_now(req: Any) -> None:
            reply = outbox.add()
            reply.id = req.id
            try:
                parsed = _parse_save(req.save)
                _fill_save(reply.save, parsed if isinstance(parsed, SaveResult)
                           else self.ul.save(*parsed))
            except Exception as exc:  # answered, never a traceback to the edge
                self.ul.log.exception("session_call_failed")
                reply.Clear()
                reply.id = req.id
                reply.error = type(exc).__name__

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    for req in batch.calls:
                        if inline_saves and req.HasField("save"):
                            save_now(req)
                        else:
                            task = asyncio.create_task(handle(req))
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
                if outbox.closed and not tasks and not outbox.message.replies:
                    break  # the edge closed its side and everything it asked is answered
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()


class _Outbox:
    """Replies of one Session waiting for the next stream message, and the writer's wake-up."""

    def __init__(self) -> None:
        self.message = pb.SessionReplies()
        self.ready = asyncio.Event()
        self.closed = False  # the edge closed its side: no more requests

    def add(self) -> Any:
        """A new empty reply in the next message (filled in place by the caller)."""
        self.ready.set()
        return self.message.replies.add()

    def put(self, reply: Any) -> None:
        self.message.replies.append(reply)
        self.ready.set()

    def take(self) -> Any | None:
        """The next message (None when no reply is waiting); the wake-up is consumed."""
        self.ready.clear()
        if not self.message.replies:
            return None
        message, self.message = self.message, pb.SessionReplies()
        return message


def _parse_save(request: Any) -> SaveResult | tuple[Request, Origin]:
    """The REGISTER and where it came from, or the 400 answer to bytes that are not one."""
    try:
        msg = parse_message(request.message)
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
        "registrar", config=RuntimeConfig(host=config.http_host, port=config.http_port),
        discovery=discovery, registry=registry, sip_handling=False)
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
        writer = LocationWriter(sql_table, write_through=True)
    elif sql_only or config.write_mode != "none" or \
            config.restart_persistency == "load-from-sql":
        from services.registrar.persistence import open_location_table

        sql_table = open_location_table(config.db_url or config.store_location,
                                        table=config.table)
        if sql_only or config.write_mode != "none":
            writer = LocationWriter(sql_table, write_through=sql_only or (
                config.write_mode == "write-through"), interval=config.write_interval)
    if mode == "federation-cachedb" and cluster is not None:
        from services.registrar.cachedb import DirectoryPublisher, RedisAorDirectory

        home = cluster.config.sip_addr
        if not home:
            raise ValueError("[registrar.cluster] sip_addr is needed in federation-cachedb "
                             "(the home address other points of presence send to)")
        publisher = DirectoryPublisher(
            RedisAorDirectory(config.cachedb_url, prefix=config.cachedb_prefix), home)
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
            # Anti-entropy on every reconnect repairs what a partition or a restart left
            # different (summary/records_for, tombstones included: usrloc.py).
            cluster.register_capability(
                CAPABILITY, produce=ul.produce, apply_sync=ul.apply_sync,
                apply_update=ul.apply_update,
                needs_sync=config.restart_persistency != "load-from-sql",
                match=Match.EQ_SIP_ADDR if mode == "federation-cachedb" else Match.ANY,
                summary=ul.summary, records_for=ul.records_for)
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

    @runtime.on_start
    async def _start() -> None:
        await store.open()
        if publisher is not None:
            await publisher.directory.open()
            publisher.start()
        if sql_table is not None:
            await sql_table.open()
            if config.restart_persistency == "load-from-sql":
                loaded = ul.load(await sql_table.load(ul.clock()))
                runtime.log.info("location_loaded", bindings=loaded)
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

    @runtime.on_stop
    async def _stop() -> None:
        await ul.stop_timer()
        if pinging is not None:
            await pinging.stop()
        if writer is not None:
            await writer.stop()  # write-back: what is pending goes out now
        if sql_table is not None:
            await sql_table.close()
        if publisher is not None:
            await publisher.stop()
            await publisher.directory.close()
        for srv in servers:
            await srv.stop(1.0)
        if cluster is not None:
            await cluster.stop()
        await store.close()

    async def announce() -> None:
        while not runtime.port or not servers:
            await asyncio.sleep(0.01)  # start-up of this very process
        extra = f" cluster {cluster.url} node {cluster.id}" if cluster is not None else ""
        print(f"registrar ready grpc {runtime.meta['grpc']} http {runtime.base_url} "
              f"pid {os.getpid()}{extra}", flush=True)

    announcer = asyncio.create_task(announce())
    try:
        await runtime.serve()
    finally:
        announcer.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    from shared.service import configure_logging, run_service

    args = _parse_args(argv)
    try:
        config = load_config(args)
        if config.cluster_mode in CLUSTERED:  # e.g. no secret: one line, exit 2
            from shared.cluster import ClusterConfig
            from shared.config import load_section

            load_section(ClusterConfig, "registrar.cluster").validate()
    except ValueError as exc:
        print(f"registrar: {exc}", file=sys.stderr)
        return 2
    configure_logging("registrar", level=config.log_level)

    async def run() -> None:
        await serve(config)

    if config.uvloop:
        run_service(run)
    else:
        asyncio.run(run())
    return 0
