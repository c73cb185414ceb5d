"""Wiring of the edge process: config -> sockets -> proxy core -> service runtime.

`EdgeApp` owns the asyncio side of one worker: it binds the UDP/TCP sockets of
`[edge].listen`, feeds every message to the sans-IO `ProxyCore`, executes what the core
returns (sends, awaits of async routing hooks), and keeps one loop timer armed at the
core's next deadline.  `main()` builds the runtime (`shared.service.ServiceRuntime`:
/health, /metrics, MI, discovery registration as service `edge`, graceful SIGTERM), or,
with `workers > 1`, hands over to the multi-process supervisor (`services.edge.workers`).

With several workers each one also binds a private UDP port and writes it in its Via: the
kernel spreads datagrams arriving on the shared port by source address, so responses from
downstream must come back to the private port of the worker that holds the transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from contracts.generated.sipmesh.edge.v1 import uac_pb2_grpc
from services.edge.addresses import Destination, Interface, Source
from services.edge.anycast import AnycastCore, ClusterSend
from services.edge.auth import ProxyAuthenticator
from services.edge.config import EdgeConfig, load_config
from services.edge.core import Await, Output, ProxyCore, Send
from services.edge.counters import EdgeCounters
from services.edge.datagrams import DatagramPath
from services.edge.gc_policy import THRESHOLDS, tune_collector
from services.edge.keyfile import state_secret
from services.edge.local_addresses import local_addresses, route_address
from services.edge.nonce_counts import (
    NonceCounts,
)
from services.edge.permissions import SourceTrust
from services.edge.ratelog import RateLimitedLog
from services.edge.routing import RouterSetup, load_router
from services.edge.rr_signing import RecordRouteSigner
from services.edge.transports import TcpPool, UdpEndpoint, bind_socket
from services.edge.workers import WORKER_INDEX_ENV, supervise, worker_nonce_counts
from shared import compiled
from shared.service.say import say
from shared.transaction import TimerSettings


def rr_secret(config: EdgeConfig) -> bytes:
    """The Record-Route signing key: `rr_secret`, else `auth_secret`, else the key kept in
    the state directory (so a restarted edge still verifies the dialogs it set up), else -
    no writable state directory - one drawn for this run."""
    configured = (config.rr_secret or config.auth_secret).encode()
    if configured:
        return configured
    try:
        return state_secret()
    except OSError as exc:
        structlog.get_logger("edge").warning(
            "edge.rr_secret_not_kept", error=str(exc),
            consequence="dialogs record-routed before a restart will be challenged after it")
        return os.urandom(32).hex().encode()


def _factory(endpoint: UdpEndpoint) -> Callable[[], UdpEndpoint]:
    return lambda: endpoint


class EdgeApp:
    """One edge worker: sockets, proxy core, timer."""

    def __init__(self, config: EdgeConfig, *, counters: EdgeCounters | None = None,
                 services: dict[str, Any] | None = None, private_port: bool = False,
                 exec_threshold: int = 0,
                 on_slow: Callable[[str, int, str], object] | None = None,
                 nonce_counts: NonceCounts | None = None, tracker: Any = None,
                 rr_key: bytes | None = None) -> None:
        self.config = config
        # The Record-Route key (`rr_secret` below, resolved by `serve`); an app built
        # in-process without one uses the configured secrets or a key of its own.
        self.rr_key = rr_key or (config.rr_secret or config.auth_secret).encode() \
            or os.urandom(32)
        self.nonce_counts = nonce_counts  # None: this worker's own table (one-worker edge)
        self.log = structlog.get_logger("edge")
        self.counters = counters or EdgeCounters()
        self.services = services or {}
        self.tracker = tracker  # services/edge/dialog_tracking.DialogTracker or None
        # OpenSIPS exec_msg_threshold (us, 0 = off): slower messages are reported to
        # `on_slow(source, us, start line)`, which raises E_CORE_THRESHOLD.
        self.exec_threshold = exec_threshold if on_slow is not None else 0
        self.on_slow = on_slow
        self.private_port = private_port or config.workers > 1
        self.udp: dict[Interface, UdpEndpoint] = {}
        self.private: dict[Interface, UdpEndpoint] = {}
        # Warnings about input are rate-limited per event: a fuzzer or a connection flood
        # adds a few lines per second to the log, not one per packet (services/edge/ratelog).
        self._limited = RateLimitedLog(self.log.warning, time.monotonic)
        # The per-message path (services/edge/datagrams.py, compiled with the core): a
        # message in, the outputs carried out, the loop timer re-armed.  Attributes, so
        # that a datagram runs no interpreted frame of ours; a test may replace them.
        self.path = DatagramPath(self)
        self._on_message: Callable[[bytes, Source], None] = self.path.on_message
        self._execute: Callable[[Sequence[Output]], None] = self.path.execute
        self._rearm: Callable[[], None] = self.path.rearm
        self.tcp = TcpPool(self._on_message, self._on_failure, self._warn,
                           limits=config.tcp_limits())
        self.core: ProxyCore | None = None
        # ctx.trusted: [edge] trusted and the address table (services/edge/permissions.py)
        self.trust = SourceTrust(config.trusted_networks(), group=config.trusted_group)
        self.pike: Any = None  # services/edge/pike_mi.PikeGuard: flood protection, or None
        # (method, status, arrival) of each stateful request's final response (operator_mi)
        self.on_transaction: Callable[[str, int, float], None] | None = None
        self.capture: Any = None  # services/edge/tracer.CaptureHub while anything is traced
        self.interfaces: list[Interface] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Anycast listeners of a clustered edge (services/edge/anycast_cluster.py sets both).
        self.anycast_core: AnycastCore | None = None
        self.anycast: Any = None  # AnycastCluster: carries the core's ClusterSend outputs

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        # What the loop reports about its own sockets (accept failures, fatal socket errors)
        # goes through the same rate limit as our warnings.
        loop.set_exception_handler(self._loop_exception)
        config = self.config
        secret = config.auth_secret.encode() or os.urandom(32)
        auth = ProxyAuthenticator(config.realm, config.user_table(), secret, time.time,
                                  counts=self.nonce_counts,
                                  allow_rfc2069=config.auth_allow_rfc2069)
        self.services.setdefault("auth", auth)  # the default routing's digest checks
        self.services.setdefault("tcp", self.tcp)  # CRLF keep-alives asked by the registrar
        setup = RouterSetup(frozenset(d.lower() for d in config.local_domains),
                            config.routes(), self.services, auth)
        router = load_router(config.routing_module, setup)
        bound: list[Interface] = []
        reuse = True
        for itf in config.interfaces():
            sock = bind_socket(itf, reuse_port=reuse)
            port = sock.getsockname()[1]
            actual = dataclasses.replace(itf, port=port)  # keeps the anycast mark
            if itf.wildcard:  # never 0.0.0.0 in Via/Record-Route; every address is ours
                actual = dataclasses.replace(
                    actual, advertise=config.advertise or route_address(itf.host == "::"),
                    aliases=local_addresses())
            if itf.transport == "udp":
                via_port = 0
                private_ep = None
                if self.private_port:
                    psock = bind_socket(Interface("udp", itf.host, 0), reuse_port=False)
                    via_port = psock.getsockname()[1]
                    actual = dataclasses.replace(actual, via_port=via_port)
                    private_ep = UdpEndpoint(actual, self._on_message, self._warn)
                    await loop.create_datagram_endpoint(_factory(private_ep), sock=psock)
                endpoint = UdpEndpoint(actual, self._on_message, self._warn)
                await loop.create_datagram_endpoint(_factory(endpoint), sock=sock)
                self.udp[actual] = endpoint
                if private_ep is not None:
                    self.private[actual] = private_ep
            else:
                await self.tcp.listen(actual, sock)
            bound.append(actual)
        self.interfaces = bound
        settings = TimerSettings(t1=config.t1, t2=config.t2, t4=config.t4,
                                 timer_c=config.timer_c)
        debug = config.log_level.lower() == "debug"
        self.core = ProxyCore(
            bound, router, settings=settings, local_domains=config.local_domains,
            static_routes=config.routes(), trusted=config.trusted_networks(),
            default_transport=config.default_transport, services=self.services,
            counters=self.counters, log=self._warn, trace=self._debug if debug else None,
            auth=auth,
            worker=os.getpid() % 4096,
            tracker=self.tracker,
            rr_signer=RecordRouteSigner(self.rr_key),
            anycast=self.anycast_core,
        )
        self.core.trusted = self.trust
        self.core.on_transaction = self.on_transaction
        if self.tracker is not None:
            self.tracker.set_interfaces(bound)

    async def stop(self, drain: float = 2.0) -> None:
        """Stop taking new traffic, let transactions finish (up to `drain` s), close."""
        core = self.core
        if core is not None:
            core.draining = True  # new UDP requests are left to their retransmissions
        if core is not None and core.pending and drain > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain):
                    while core.pending:
                        await asyncio.sleep(0.05)  # polling a drain, not synchronising a test
        self.path.cancel()
        for ep in [*self.udp.values(), *self.private.values()]:
            ep.close()
        await self.tcp.close()
        for task in list(self._tasks):
            task.cancel()

    def run_core(self, fn: Callable[[ProxyCore, float], Any]) -> Any:
        """Calls `fn(core, now)` from outside the SIP path (the Uac API) and carries out the
        outputs it returns (a list, or the second item of a tuple); returns its result."""
        core, loop = self.core, self._loop
        if core is None or loop is None:
            raise RuntimeError("the edge is not started")
        result = fn(core, loop.time())
        self._execute(result[1] if isinstance(result, tuple) else result)
        self._rearm()
        return result

    def feed(self, fn: Callable[[ProxyCore, float], Sequence[Output]]) -> None:
        """Runs `fn(core, now)` for input that is no datagram (a message another anycast
        node handed over) and carries out what it returns, as the hot path does."""
        core, loop = self.core, self._loop
        if core is None or loop is None:
            return
        try:
            outputs = fn(core, loop.time())
        except Exception:  # never let one message take the worker down
            self.log.exception("edge.internal_error", where="anycast")
            return
        if outputs:
            self._execute(outputs)
        self._rearm()

    def listen_lines(self) -> list[str]:
        return [f"{i.transport}:{i.host_in_uri}:{i.port}{';anycast' if i.anycast else ''}"
                for i in self.interfaces]

    # -- what the message path (services/edge/datagrams.py) hands back ------------------
    def _spawn_await(self, item: Await) -> None:
        """An async routing hook: awaited in a task, its outputs carried out after."""
        task = asyncio.get_running_loop().create_task(self._await(item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _other_output(self, item: Output) -> None:
        """An output neither a send nor an await: a message for another anycast node."""
        if isinstance(item, ClusterSend) and self.anycast is not None:
            self.anycast.send(item)

    def _resolve_later(self, endpoint: UdpEndpoint, item: Send) -> None:
        """A send to a name: resolved in a task, then sent."""
        task = asyncio.get_running_loop().create_task(self._resolve_and_send(endpoint, item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_and_send(self, endpoint: UdpEndpoint, item: Send) -> None:
        loop = asyncio.get_running_loop()
        dest = item.dest
        # Only addresses of the socket's own family can be sent to from it.
        family = socket.AF_INET6 if ":" in endpoint.interface.host else socket.AF_INET
        try:
            infos = await loop.getaddrinfo(dest.host, dest.port, family=family,
                                           type=socket.SOCK_DGRAM)
            endpoint.send(item.data, str(infos[0][4][0]), dest.port)
        except (OSError, UnicodeError, ValueError, IndexError) as exc:
            # Unknown name, a name not valid for DNS (IDNA), no address of our family, or a
            # send the socket refuses: this transaction fails, nothing else.
            self._warn("send.failed", host=dest.host, error=str(exc))
            if self.core is not None:
                self._execute(self.core.send_failed(item, loop.time()))
                self._rearm()

    async def _await(self, item: Await) -> None:
        try:
            await item.awaitable
        except Exception as exc:
            self.counters.err_requests.value += 1  # the routing script failed (OpenSIPS)
            self._warn("route.error", error=repr(exc), call_id=item.call_id)
        loop = asyncio.get_running_loop()
        try:
            self._execute(item.resume(loop.time()))
        except Exception:
            self.log.exception("edge.internal_error", call_id=item.call_id)
        self._rearm()

    def _on_failure(self, dest: Destination) -> None:
        if self.core is None or self._loop is None:
            return
        self._execute(self.core.transport_failed(dest, self._loop.time()))
        self._rearm()

    # -- logging ---------------------------------------------------------------------------------
    def _warn(self, event: str, **kw: Any) -> None:
        self._limited(event, **kw)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # The traceback is kept (a bug in a callback must be found), but rate-limited: a
        # socket error repeated per loop iteration must not fill the disk.
        exc = context.get("exception")
        self._limited("loop.error", message=str(context.get("message", "")),
                      exc_info=exc if isinstance(exc, BaseException) else None)

    def _debug(self, event: str, **kw: Any) -> None:
        self.log.debug(event, **kw)


class EdgeCollector:
    """Prometheus view of the edge counters (read at scrape time, nothing on the hot path)."""

    def __init__(self, app: EdgeApp) -> None:
        self.app = app

    def collect(self) -> Any:
        c = self.app.counters
        requests = CounterMetricFamily("sipmesh_edge_requests", "SIP requests received",
                                       labels=["method"])
        for method, n in sorted(c.requests_in.items()):
            requests.add_metric([method], n)
        yield requests
        replies = CounterMetricFamily("sipmesh_edge_replies", "SIP replies by direction/code",
                                      labels=["direction", "code"])
        for code, n in sorted(c.replies_in.items()):
            replies.add_metric(["in", str(code)], n)
        for code, n in sorted(c.replies_out.items()):
            replies.add_metric(["out", str(code)], n)
        yield replies
        yield CounterMetricFamily("sipmesh_edge_retransmissions", "SIP retransmissions sent",
                                  value=c.retransmissions.value)
        drops = CounterMetricFamily("sipmesh_edge_drops", "SIP messages dropped",
                                    labels=["kind"])
        drops.add_metric(["request"], c.drop_requests.value)
        drops.add_metric(["reply"], c.drop_replies.value)
        drops.add_metric(["malformed"], c.bad_msg_hdr.value)
        yield drops
        core = self.app.core
        yield GaugeMetricFamily("sipmesh_edge_transactions", "transactions in flight",
                                value=core.transactions if core else 0)


# =============================================================================================
# process entry points

def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.edge",
                                     description="SipMesh edge proxy (RFC 3261 stateful proxy)")
    parser.add_argument("--config", help="TOML file (default: $SIPMESH_CONFIG)")
    parser.add_argument("--listen", action="append",
                        help="udp:HOST:PORT or tcp:HOST:PORT (repeatable; overrides config)")
    parser.add_argument("--workers", type=int, help="worker processes sharing the SIP port")
    parser.add_argument("--http-port", type=int, help="/metrics, /health and MI port")
    parser.add_argument("--private-port", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _config_from_args(args: argparse.Namespace) -> EdgeConfig:
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen"] = tuple(args.listen)
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.http_port is not None:
        overrides["http_port"] = args.http_port
    return load_config(args.config, **overrides)


async def serve(config: EdgeConfig, *, private_port: bool = False) -> None:
    """Run one worker inside the service runtime until SIGTERM."""
    from shared.config import load_section
    from shared.discovery import DiscoveryConfig
    from shared.service import RuntimeConfig, ServiceRuntime

    discovery = load_section(DiscoveryConfig, "discovery")
    registry = None
    if discovery == DiscoveryConfig() and "SIPMESH_DISCOVERY_URL" not in os.environ:
        # Standalone (no `sipmesh up` around): keep the registration in-process.
        from shared.discovery.memory import MemoryRegistry

        registry = MemoryRegistry()
    worker = int(os.environ.get(WORKER_INDEX_ENV, "0"))  # workers share no HTTP port
    runtime = ServiceRuntime(
        "edge", config=RuntimeConfig(
            host=config.http_host, port=config.http_port + worker if config.http_port else 0,
            advertise=config.http_advertise, token=config.http_token,
            token_setting="[edge] http_token (SIPMESH_EDGE_HTTP_TOKEN)"),
        discovery=discovery, registry=registry)
    counters = EdgeCounters(runtime.stats.counter)
    from services.edge.registrar_client import RegistrarClient

    registrar = RegistrarClient(
        addresses=config.registrar, registry=runtime.registry, service=config.registrar_service,
        timeout=config.registrar_timeout, register_auth=config.register_auth,
        digest_on_save=config.register_digest_on_save,
        algorithms=config.auth_algorithms, max_latency_us=config.lookup_max_latency_us,
        by_latency=config.lookup_by_latency, batch_window=config.registrar_batch_ms / 1000,
        save_window=config.register_batch_ms / 1000,
        # Standalone (the in-process registry) no registrar can ever appear: local users
        # without a static route are unknown (404). In a mesh one is expected (503 while
        # away) unless the deployment has none ([edge] registrar_expected = false).
        expected=bool(config.registrar) or (registry is None and config.registrar_expected))
    from services.edge.media_client import MediaClient

    media = MediaClient(addresses=config.media, registry=runtime.registry,
                        service=config.media_service, timeout=config.media_timeout,
                        anchor=config.media_anchor, flags=config.media_flags,
                        set_id=config.media_set)
    nonce_counts = worker_nonce_counts(dict(os.environ))
    from services.freeswitch.routing_client import attach_to_edge

    freeswitch = attach_to_edge(runtime)  # ctx.freeswitch: box loads, ESL commands, events
    from services.edge.dialog_client import DialogClient
    from services.edge.dialog_tracking import DialogTracker

    dialogs = DialogClient(addresses=config.dialog, registry=runtime.registry,
                           service=config.dialog_service, buffer_size=config.dialog_buffer,
                           query_timeout=config.dialog_timeout,
                           batch_window=config.dialog_batch_ms / 1000)
    tracker = DialogTracker(dialogs, enabled=config.dialog_tracking)
    from services.edge.presence_client import PresenceClient
    from services.edge.recording import RecordingClient

    siprec = RecordingClient(addresses=config.siprec, registry=runtime.registry,
                             service=config.siprec_service, default_srs=config.siprec_srs,
                             token=config.siprec_token)
    presence = PresenceClient(addresses=config.presence, registry=runtime.registry,
                              service=config.presence_service, timeout=config.presence_timeout)
    app = EdgeApp(config, counters=counters, private_port=private_port,
                  services={"registrar": registrar, "media": media,
                            "freeswitch": freeswitch, "dialog": dialogs,
                            "siprec": siprec, "presence": presence},
                  exec_threshold=runtime.events_config.exec_threshold,
                  on_slow=runtime.report_slow, nonce_counts=nonce_counts, tracker=tracker,
                  rr_key=rr_secret(config))
    from services.edge.anycast_cluster import setup_anycast

    setup_anycast(runtime, app, config.t1, config.workers)  # [edge.tm] replication_cluster
    runtime.stats.group("dialog", dialogs.statistics)
    uac_servers: list[Any] = []
    runtime.metrics.register(EdgeCollector(app))
    runtime.stats.gauge("tm", "inuse_transactions",
                        lambda: app.core.transactions if app.core else 0)
    runtime.stats.group("tcp", app.tcp.statistics)  # connections, buffered bytes, refusals
    from services.edge.permissions_mi import attach_permissions

    attach_permissions(runtime, app.trust, config)  # the address table, its MI commands
    from services.edge.pike_mi import attach_pike

    app.pike = attach_pike(runtime, app.trust, config)  # flood protection
    from services.edge.dispatcher_mi import attach_dispatcher

    attach_dispatcher(runtime, app, config)  # ctx.dispatch(), ds_list, OPTIONS probing
    from services.edge.operator_mi import attach_operator_views

    attach_operator_views(runtime, app)  # list_tcp_conns, the transaction time histogram
    from services.edge.siptrace import attach_siptrace

    attach_siptrace(runtime, app, config)  # sip_trace: HEP v3 to a capture server
    from services.edge.tracer import attach_tracer

    attach_tracer(runtime, app, config)  # ctx.trace(), MI trace/trace_start/trace_stop

    # /ready: SIP sockets open and, in a mesh, a registrar to send REGISTERs to.
    runtime.ready_check("sip", lambda: bool(app.interfaces))
    runtime.ready_check("registrar", lambda: registrar.available or not registrar.expected)

    @runtime.command("edge_listeners", doc="the SIP sockets of this edge worker")
    async def edge_listeners() -> Any:
        return {"Listeners": app.listen_lines()}

    @runtime.on_start
    async def _start() -> None:
        await registrar.start()
        await media.start()
        await dialogs.start()
        await presence.start()
        await app.start()
        from services.edge.uac import SERVICE as UAC_SERVICE
        from services.edge.uac import UacServicer
        from shared.rpc.grpc_helpers import start_grpc_server

        uac_srv = await start_grpc_server(
            [lambda s: uac_pb2_grpc.add_UacServicer_to_server(  # type: ignore[no-untyped-call]
                UacServicer(app), s)],
            services=[UAC_SERVICE], host=config.uac_host,
            port=config.uac_port if config.workers == 1 else 0)
        uac_servers.append(uac_srv)
        uac_host = config.uac_advertise or (
            runtime.address if config.uac_host in ("0.0.0.0", "::") else config.uac_host)
        tracker.edge_uac = runtime.meta["uac"] = f"{uac_host}:{uac_srv.port}"
        siprec.edge_uac = tracker.edge_uac
        presence.uac = tracker.edge_uac
        tune_collector(THRESHOLDS)  # an edge worker's policy: services/edge/gc_policy.py
        # The sans-IO core compiled with mypyc, or pure Python (why): shared/compiled.py.
        structlog.get_logger("edge").info("edge.sip_core", mode=compiled.mode())
        for itf in app.interfaces:
            runtime.meta[f"sip_{itf.transport}"] = (
                f"sip:{itf.host_in_uri}:{itf.port};transport={itf.transport}")
            if itf.transport == "udp" and not siprec.edge_sip:
                siprec.edge_sip = runtime.meta["sip_udp"]

    @runtime.on_stop
    async def _stop() -> None:
        await app.stop()
        for srv in uac_servers:
            await srv.stop(0.5)
        await dialogs.close()
        await presence.close()
        await registrar.close()
        await media.close()
        await siprec.close()
        if nonce_counts is not None:
            nonce_counts.close()

    started = asyncio.Event()

    async def announce() -> None:
        # One stable line on stdout once the sockets are open: tests and `make run` read it.
        while not app.interfaces or not runtime.port:
            await asyncio.sleep(0.01)  # start-up of this very process, not a test
        started.set()
        first = app.interfaces[0]
        say(f"edge ready {' '.join(app.listen_lines())} http {runtime.base_url} "
            f"pid {os.getpid()} -- point a phone at sip:{first.advertised_in_uri}:{first.port}")

    announcer = asyncio.create_task(announce())
    try:
        await runtime.serve()
    finally:
        announcer.cancel()


def _check_events_config() -> None:
    """The runtime reads [events] itself; a bad value is reported here, as one line."""
    from shared.config import load_section
    from shared.events.config import EventsConfig

    load_section(EventsConfig, "events")


def main(argv: Sequence[str] | None = None) -> int:
    from shared.config import EXIT_CONFIG
    from shared.service import configure_logging, run_service
    from shared.service.parent import die_with_parent_from_env

    # Started by `sipmesh up`, or a worker started by the edge: end with the parent, even
    # on its SIGKILL (the variable is taken out, so this edge's own workers get its pid).
    die_with_parent_from_env()
    args = _parse_args(argv)
    try:
        config = _config_from_args(args)
        _check_events_config()
    except ValueError as exc:
        print(f"edge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging("edge", level=config.log_level)
    if config.workers > 1:
        return supervise(config, args.config, lambda: rr_secret(config))

    async def run() -> None:
        await serve(config, private_port=args.private_port)

    run_service(run, name="edge", uvloop=config.uvloop)
    return 0
