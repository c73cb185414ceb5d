"""The runtime every SipMesh service process runs in.

A :class:`ServiceRuntime` gives a service, with no code of its own:

* one aiohttp server with ``GET /health`` (503 while draining or when a health check
  fails), ``GET /metrics`` (Prometheus text, from this runtime's own CollectorRegistry) and
  ``POST /mi`` (JSON-RPC 2.0, the service's MI commands plus the per-process core ones:
  ``which``, ``get_statistics``, ``list_statistics``, ``reset_statistics``, ``uptime``,
  ``version``, ``ps``);
* registration in discovery under the service name, with metadata the gateway routes by
  (``mi_url``, ``mi_commands``, ``mi_fanout``, ``pid``) and a heartbeat every TTL/3 that
  re-registers when the registry forgot the instance (e.g. it restarted);
* graceful stop on SIGTERM/SIGINT: deregister first (no new traffic is routed here), mark
  /health and /ready draining, keep serving ``drain_delay`` s while clients see the
  instance gone, run the service's stop hooks (which stop its gRPC servers with a grace for
  the RPCs in flight) within ``drain_timeout`` (in reverse order of registration), then
  close the HTTP server (requests in flight get ``drain_grace`` s) and the registry client.
* ``GET /ready`` (readiness, apart from liveness): 200 only once start-up finished, while
  not draining, and while every check the service added with :meth:`ServiceRuntime.ready_check`
  passes (its backends reachable, its cluster data synced); 503 otherwise, naming the checks
  that fail. A load balancer or compose healthcheck sends work only to ready instances.
* a per-service version (``__version__`` of the service's package, see
  :func:`shared.service.version.service_version` and docs/adr/0002-versioning.md) in
  discovery metadata (``service_version``), ``/health``, ``/ready``, MI ``ps`` and
  ``/metrics`` (``sipmesh_service_info``).

Binding the HTTP server to a non-loopback address requires a bearer ``token``: the runtime
refuses to start without one (a :class:`~shared.config.ConfigError`), as MI is an
administrative interface. Off loopback ``/metrics`` needs the token too, and ``/health``
without it answers its status only (no service name or instance id), unless
``metrics_public`` (``[runtime] metrics_public``, default false) opens both, for a
scraper or a probe that cannot send a bearer token. On loopback both are open.

At start the runtime prints one line (stderr) with the process's active modes (event transport,
discovery backend, and what the service adds to :attr:`ServiceRuntime.modes`: cluster
mode, store), so a misconfigured deployment shows itself at once.

Events: ``runtime.events`` is the process's :class:`~shared.events.bus.EventBus`, built
from the ``[events]`` section (:mod:`shared.events.config`): RabbitMQ when
``rabbitmq_url`` is set, otherwise the embedded forwarder to the gateway
(:mod:`shared.events.forward`), or in-process delivery for the gateway itself
(``local_events=True``). It starts before the service's start hooks (so they may raise
events) and is flushed and closed after its stop hooks. ``report_slow(source, micros,
extra)`` raises ``E_CORE_THRESHOLD`` when work exceeded ``[events] exec_threshold``; the
runtime reports its own MI requests that way (source ``mi command``). A service declares
the events it can raise (``declare_events``; every process can raise
``E_CORE_THRESHOLD``); they are registered in ``meta.events`` and the gateway's
``events_list`` advertises the union over the running instances, nothing more.

Load: the ``load`` group is this process's share of the OpenSIPS 2.4 model. ``load``,
``load1m`` and ``load10m`` are reported only by SIP-handling processes (``sip_handling``,
by default: the service published a ``sip_*`` endpoint in ``meta``); every process
reports ``load-all`` and ``load-proc-0`` (the gateway renumbers them mesh-wide).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import platform
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Info, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shared.config import EXIT_CONFIG, ConfigError, load_section
from shared.discovery import DiscoveryConfig, Instance, RegistryError, ServiceRegistry
from shared.discovery import open_registry as _open_registry
from shared.discovery.memory import MemoryRegistry
from shared.events.bus import BufferedEventBus, EmbeddedEventBus
from shared.events.config import EventsConfig
from shared.events.forward import INGEST_METHOD, ForwardingEventBus
from shared.events.schema import EventCatalog
from shared.rpc import grpc_metrics
from shared.rpc.jsonrpc import (
    INVALID_PARAMS,
    MAX_BODY,
    NOT_FOUND,
    MiCommand,
    MiDispatcher,
    MiError,
    bearer_ok,
    int_param,
    mi_http_handler,
    unauthorized,
)
from shared.service import logsetup
from shared.service.stats import declare_process_stats, mi_get, mi_list, mi_reset
from shared.service.version import CONTRACTS_VERSION, MESH_VERSION, service_version
from shared.stats.registry import StatsRegistry
from shared.stats.sampler import CpuTimeLoadSampler, LoadSampler, load_group, make_sampler

VERSION = MESH_VERSION  # the mesh release: pyproject.toml [project] version
LOAD_SNAPSHOT = "load_snapshot"  # internal MI command, never routed by the gateway
Hook = Callable[[], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """HTTP endpoint of a service (``/health``, ``/metrics``, MI) and its lifecycle knobs."""

    host: str = "127.0.0.1"
    port: int = 0
    mi_path: str = "/mi"
    token: str = ""
    advertise: str = ""
    drain_timeout: float = 5.0
    # Graceful drain on SIGTERM (issue 20): after leaving discovery keep serving drain_delay
    # s (/ready says "draining") so clients see the instance gone and move away; the HTTP
    # requests (MI) still in flight when the endpoint closes get drain_grace s to finish.
    drain_delay: float = 0.0
    drain_grace: float = 2.0
    metrics_public: bool | None = None  # None: the [runtime] section decides
    token_setting: str = ""  # where the token is set, e.g. "[edge] http_token", for errors


@dataclasses.dataclass(frozen=True)
class RuntimeDefaults:
    """The ``[runtime]`` section: settings every service process shares."""

    metrics_public: bool = False  # /metrics and the full /health without the token


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_banner() -> str:
    """The ``version`` answer, shaped as OpenSIPS's ``Server`` header value."""
    return f"SipMesh ({VERSION} ({platform.machine()}/{platform.system().lower()}))"


class ServiceRuntime:
    """HTTP, MI, metrics, discovery registration and graceful stop for one service."""

    def __init__(
        self, name: str, *, config: RuntimeConfig | None = None,
        discovery: DiscoveryConfig | None = None, registry: ServiceRegistry | None = None,
        events: EventsConfig | None = None, local_events: bool = False,
        sip_handling: bool | None = None, version: str | None = None,
    ) -> None:
        self.name = name
        self.version = version or service_version(name)
        self.config = config or RuntimeConfig()
        self.metrics_public = self.config.metrics_public
        if self.metrics_public is None:
            self.metrics_public = load_section(RuntimeDefaults, "runtime").metrics_public
        # What the start-up line says besides events and discovery (cluster, store...).
        self.modes: dict[str, str] = {"cluster": "none", "store": "none"}
        self.discovery = discovery or DiscoveryConfig()
        self.registry = registry or _open_registry(self.discovery)
        self.log = structlog.get_logger(name)
        self.instance_id = f"{name}-{socket.gethostname()}-{os.getpid()}"
        self.started_at = time.time()
        self.stats = StatsRegistry()
        declare_process_stats(self.stats)
        self.load_sampler: LoadSampler | None = None
        self.stats.group("load", self._load_values)
        self.metrics = CollectorRegistry()
        # Statistics another collector already exports (the event bus's) are left to it.
        self.metrics.register(self.stats.collector(
            lambda: list(self.metrics._names_to_collectors)))
        ProcessCollector(registry=self.metrics)
        grpc_metrics.register(self.metrics)
        Info("sipmesh_service", "This service's own version and the contracts it speaks",
             registry=self.metrics).info({"service": name, "version": self.version,
                                          "contracts": CONTRACTS_VERSION, "mesh": VERSION})
        self.mi = MiDispatcher(name=name)
        self.meta: dict[str, str] = {}
        self.sip_handling = sip_handling
        if events is None:
            events = load_section(EventsConfig, "events")
        self.events_config = events
        self._local_events = local_events
        self.events: BufferedEventBus = self._open_bus(events, local_events)
        self.raises: set[str] = {"E_CORE_THRESHOLD"}  # see declare_events
        self._declare_event_stats()
        self.health_checks: list[Callable[[], bool]] = []
        self.ready_checks: dict[str, Callable[[], bool]] = {}  # see ready_check()
        self.started = False  # start() finished: the service may be ready
        self._published_ready = False  # meta "ready" of the last registration
        # The gateway replaces the public MI with its mesh-wide dispatcher; this process's
        # own MI then moves to ``<mi_path>/local`` so other gateways never recurse into it.
        self.public_dispatch: Callable[[str], Awaitable[str]] | None = None
        self.port = 0
        self.draining = False
        self._start_hooks: list[Hook] = []
        self._stop_hooks: list[Hook] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._registered = False
        self._stopped = False
        self._began = False  # start() got past the configuration checks
        self._fanout: set[str] = set()
        self.app = web.Application(client_max_size=MAX_BODY)
        self._add_core_commands()

    # -- what a service declares ---------------------------------------------------------
    def command(
        self, name: str, params: tuple[tuple[str, ...], ...] = ((),), *, doc: str = "",
        fanout: bool = False,
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Decorator declaring an MI command. ``fanout`` asks the gateway to call every
        instance and merge the answers (OpenSIPS cluster-wide commands)."""

        def deco(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            self.mi.add(MiCommand(name, fn, params, doc))
            if fanout:
                self._fanout.add(name)
            return fn

        return deco

    def declare_events(self, *names: str) -> None:
        """Declares events this process can raise (names, or ``family.#`` for a whole
        family of the contracts): the gateway's ``events_list`` advertises them."""
        catalog = self.events.catalog
        for name in names:
            if name.endswith(".#"):
                found = catalog.families().get(name[:-2])
                if not found:
                    raise ValueError(f"no event family {name[:-2]!r} in contracts/events")
                self.raises.update(found)
            elif name in catalog:
                self.raises.add(name)
            else:
                raise ValueError(f"unknown event {name!r} (no contract in contracts/events)")

    def ready_check(self, name: str, check: Callable[[], bool]) -> None:
        """Adds a readiness condition (``/ready`` is 503 while ``check()`` is false or
        raises): a backend reachable, the cluster's data synced..."""
        self.ready_checks[name] = check

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and self._healthy() and all(
            _safe(check) for check in self.ready_checks.values())

    def _healthy(self) -> bool:
        return not self.draining and all(_safe(check) for check in self.health_checks)

    def on_start(self, hook: Hook) -> Hook:
        """Runs ``hook`` before the service registers (open sockets, connect stores)."""
        self._start_hooks.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        """Runs ``hook`` on shutdown after deregistration (drain, close)."""
        self._stop_hooks.append(hook)
        return hook

    # -- per-process core MI commands ----------------------------------------------------
    def _add_core_commands(self) -> None:
        add = self.mi.add

        async def which(command: str | None = None) -> Any:
            if command is None:
                return sorted(self.mi.commands)
            found = self.mi.commands.get(command)
            if found is None:
                raise MiError(NOT_FOUND, "Unknown command")
            return [list(r) for r in found.params or ((),)]

        async def get_statistics(statistics: Any = None) -> Any:
            return mi_get(self.stats, statistics)

        async def list_statistics(statistics: Any = None) -> Any:
            return mi_list(self.stats, statistics)

        async def reset_statistics(statistics: Any = None) -> Any:
            mi_reset(self.stats, statistics)
            return "OK"

        async def uptime() -> Any:
            return uptime_answer(self.started_at)

        async def version() -> Any:
            return {"Server": server_banner()}

        async def ps() -> Any:
            return {"Processes": [{"ID": 0, "PID": os.getpid(), "Type": self.name,
                                   "Version": self.version}]}

        add(MiCommand("which", which, ((), ("command",))))
        for stat_cmd in (get_statistics, list_statistics, reset_statistics):
            add(MiCommand(stat_cmd.__name__, stat_cmd, ((), ("statistics",))))
        add(MiCommand("uptime", uptime))
        add(MiCommand("version", version))
        add(MiCommand("ps", ps))

        async def log_level(level: Any = None, pid: Any = None) -> Any:
            # OpenSIPS log_level [level [pid]]; the gateway sends it to every process, or
            # to the one whose PID was given (see gateway.router).
            if pid is not None and int_param(pid, "pid") != os.getpid():
                raise MiError(NOT_FOUND, "Process not found")
            if level is None:
                return {"Processes": [{"PID": os.getpid(), "Log level":
                                       logsetup.opensips_level(), "Type": self.name}]}
            new = log_level_param(level)
            logsetup.set_level(logsetup.OPENSIPS_LEVELS[new])
            self.log.warning("log_level_changed", level=new)
            return {"New global log level": new} if pid is None else {
                "PID": os.getpid(), "New log level": new}

        add(MiCommand("log_level", log_level, ((), ("level",), ("level", "pid"))))

        async def load_snapshot() -> Any:
            # Internal (the gateway's exact mesh-wide load): this process's busy ratios.
            snap = self.load_sampler.snapshot() if self.load_sampler is not None else None
            ratios = snap.as_dict() if snap is not None else {
                "load": 0.0, "load1m": 0.0, "load10m": 0.0}
            return {**ratios, "sip": self._is_sip()}

        add(MiCommand(LOAD_SNAPSHOT, load_snapshot, ((),), "internal: load ratios"))

    # -- HTTP ----------------------------------------------------------------------------
    @property
    def observability_open(self) -> bool:
        """``/metrics`` and the full ``/health`` need no token (see the module docstring)."""
        return bool(self.metrics_public) or is_loopback(self.config.host) \
            or not self.config.token

    def _may_observe(self, request: web.Request) -> bool:
        return self.observability_open or bearer_ok(request.headers, self.config.token)

    async def _health(self, request: web.Request) -> web.Response:
        ok = self._healthy()
        body = {"status": "passing" if ok else ("draining" if self.draining else "critical")}
        if self._may_observe(request):
            body.update(service=self.name, id=self.instance_id, version=self.version)
        return web.json_response(body, status=200 if ok else 503)

    async def _ready(self, request: web.Request) -> web.Response:
        ok = self.ready
        status = "ready" if ok else ("draining" if self.draining else "not ready")
        body: dict[str, Any] = {"status": status}
        if self._may_observe(request):
            failing = [name for name, check in self.ready_checks.items() if not _safe(check)]
            if not self.started:
                failing.insert(0, "starting")
            if not self._healthy() and not self.draining:
                failing.append("health")
            body.update(service=self.name, id=self.instance_id, version=self.version,
                        failing=failing)
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self._may_observe(request):
            return unauthorized()
        return web.Response(body=generate_latest(self.metrics),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    @property
    def address(self) -> str:
        if self.config.advertise:
            return self.config.advertise
        return "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    @property
    def mi_url(self) -> str:
        return f"{self.base_url}{self.local_mi_path}"

    @property
    def local_mi_path(self) -> str:
        """Where this process's own MI is served (and registered as ``mi_url``)."""
        if self.public_dispatch is None:
            return self.config.mi_path
        return self.config.mi_path.rstrip("/") + "/local"

    def _instance(self) -> Instance:
        own = sorted(n for n in self.mi.commands)
        meta = {
            "mi_url": self.mi_url,
            "mi_commands": ",".join(own),
            "mi_fanout": ",".join(sorted(self._fanout)),
            "pid": str(os.getpid()),
            "version": VERSION,
            "service_version": self.version,
            # /ready as of the last registration (re-registered when it changes): clients
            # picking an instance from discovery may skip one not ready yet.
            "ready": "1" if self.ready else "0",
            "contracts_version": CONTRACTS_VERSION,
            "started": str(int(self.started_at)),
            "health_url": f"{self.base_url}/health",
            "metrics_url": f"{self.base_url}/metrics",
            "events": ",".join(sorted(self.raises)),
            **self.meta,
        }
        if self.public_dispatch is not None:
            meta["public_mi_url"] = f"{self.base_url}{self.config.mi_path}"
        return Instance(self.name, self.instance_id, self.address, self.port, meta=meta)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Starts hooks, HTTP and registration; raises if the configuration is unsafe."""
        if not is_loopback(self.config.host) and not self.config.token:
            where = self.config.token_setting or "a token"
            raise ConfigError(
                f"refusing to bind MI on non-loopback {self.config.host!r} without a bearer "
                f"token: set {where}")
        self._began = True
        self.announce_modes()
        await self.events.start()
        for hook in self._start_hooks:
            await hook()
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/ready", self._ready)
        self.app.router.add_get("/metrics", self._metrics)
        token = self.config.token or None
        self.app.router.add_post(self.local_mi_path, mi_http_handler(self._timed_dispatch, token))
        if self.public_dispatch is not None:
            self.app.router.add_post(
                self.config.mi_path, mi_http_handler(self.public_dispatch, token))
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=self.config.drain_grace)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            self.load_sampler = make_sampler(asyncio.get_running_loop())
        except RuntimeError:
            # Another runtime in this process already times the loop's selector (tests
            # run several in one loop): book CPU time instead.
            self.load_sampler = CpuTimeLoadSampler()
            self.load_sampler.install(asyncio.get_running_loop())
        self.started = True
        try:
            await self._register()
        except RegistryError as exc:
            # Serve anyway: the heartbeat loop keeps trying to register, so a registry
            # that comes up later (or comes back) finds this instance.
            self.log.warning("register_failed", error=str(exc))
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        self._tasks.append(asyncio.create_task(self._publish_readiness()))
        self.log.info("service_started", id=self.instance_id, mi=self.mi_url,
                      version=self.version)

    async def _register(self) -> None:
        instance = self._instance()
        await self.registry.register(instance, self.discovery.ttl)
        self._registered = True
        self._published_ready = instance.meta["ready"] == "1"

    async def _publish_readiness(self) -> None:
        """Registers again when readiness changed (meta ``ready``): at once while not
        ready (a restarted node gets traffic as soon as it is synced), then each TTL/3."""
        slow = max(self.discovery.ttl / 3.0, 0.1)
        while True:
            await asyncio.sleep(0.1 if not self._published_ready else slow)
            if self._registered and not self.draining and \
                    self.ready != self._published_ready:
                try:
                    await self._register()
                except RegistryError as exc:
                    self.log.warning("registry_unreachable", error=str(exc))

    async def _heartbeat(self) -> None:
        period = max(self.discovery.ttl / 3.0, 0.1)
        while True:
            await asyncio.sleep(period)
            if self.draining:
                return  # left discovery on purpose: never register again
            try:
                try:
                    await self.registry.heartbeat(self.instance_id)
                except RegistryError:
                    # Unknown to the registry (it restarted, or we expired): register again.
                    await self._register()
            except RegistryError as exc:
                self.log.warning("registry_unreachable", error=str(exc))

    def _is_sip(self) -> bool:
        if self.sip_handling is not None:
            return self.sip_handling
        return any(key.startswith("sip_") for key in self.meta)

    def _load_values(self) -> dict[str, int]:
        """The ``load`` group (OpenSIPS 2.4 model) of this single-process service; the
        SIP-only names are left out by processes that handle no SIP (see the docstring)."""
        sip = self._is_sip()
        if self.load_sampler is None:
            values = {f"{k}{s}": 0 for k in ("load", "load1m", "load10m")
                      for s in ("", "-all", "-proc-0")}
        else:
            values = load_group(self.load_sampler, sip=sip)()
        if not sip:
            for key in ("load", "load1m", "load10m"):
                values.pop(key, None)
        return values

    def mode_line(self) -> str:
        """``<name> modes: events=...; discovery=...; cluster=...; store=...``."""
        modes = {"events": events_mode(self.events_config, local=self._local_events),
                 "discovery": describe_registry(self.registry), **self.modes}
        return f"{self.name} modes: " + "; ".join(f"{k}={v}" for k, v in modes.items())

    def announce_modes(self) -> None:
        # stderr, with the logs: stdout carries the services' one "ready" line for scripts.
        print(self.mode_line(), file=sys.stderr, flush=True)

    # -- events --------------------------------------------------------------------------
    def _open_bus(self, cfg: EventsConfig, local: bool) -> BufferedEventBus:
        catalog = EventCatalog.load()
        common: dict[str, Any] = {
            "service": self.name, "node": self.instance_id, "buffer_size": cfg.buffer_size,
            "strict": cfg.strict, "registry": self.metrics}
        if cfg.rabbitmq:
            from shared.events.rabbitmq import RabbitMQEventBus

            return RabbitMQEventBus(catalog, url=cfg.rabbitmq_url, exchange=cfg.exchange,
                                    **common)
        if local:
            return EmbeddedEventBus(catalog, **common)
        return ForwardingEventBus(
            catalog, discovery=self.registry, gateway_service=cfg.gateway_service,
            token=cfg.gateway_token or None, timeout=cfg.forward_timeout, **common)

    async def events_stop_wait(self) -> float:
        """How long the bus may take at stop to hand over what it still holds: up to 2 s,
        but nothing when it forwards to a gateway no one can start (a standalone process:
        its registry is in-process and names no gateway), where waiting only delays."""
        drain = min(self.config.drain_timeout, 2.0)
        bus = self.events
        if not isinstance(bus, ForwardingEventBus) or not bus.buffered:
            return drain
        if isinstance(self.registry, MemoryRegistry) and not await self.registry.healthy(
                bus.gateway_service):
            return 0.0
        return drain

    def _declare_event_stats(self) -> None:
        bus = self.events
        self.stats.gauge("events", "raised", lambda: bus.stats.published)
        self.stats.gauge("events", "sent", lambda: bus.stats.delivered)
        self.stats.gauge("events", "dropped", lambda: bus.stats.dropped)
        self.stats.gauge("events", "buffered", lambda: bus.buffered)

    def report_slow(self, source: str, micros: int, extra: str) -> bool:
        """Raises ``E_CORE_THRESHOLD`` (OpenSIPS ``exec_msg_threshold`` semantics) when
        ``micros`` exceeds ``[events] exec_threshold``; True when it was raised."""
        threshold = self.events_config.exec_threshold
        if threshold <= 0 or micros <= threshold:
            return False
        self.log.warning("threshold_exceeded", source=source, us=micros, extra=extra)
        return self.events.publish(
            "E_CORE_THRESHOLD", {"source": source, "time": micros, "extra": extra}) is not None

    async def _timed_dispatch(self, text: str) -> str:
        """The local MI endpoint, timing each request against ``exec_threshold``."""
        started = time.perf_counter()
        answer = await self.mi.dispatch(text)
        micros = int((time.perf_counter() - started) * 1e6)
        if logsetup.current_level() <= logging.DEBUG:
            self.log.debug("mi_request", method=method_of(text), us=micros)
        threshold = self.events_config.exec_threshold
        if 0 < threshold < micros:
            method = method_of(text)
            # Ingesting events must never raise events about itself (a feedback loop).
            if method != INGEST_METHOD:
                self.report_slow("mi command", micros, f"{method} on {self.instance_id}")
        return answer

    async def stop(self) -> None:
        """Deregisters, drains and closes; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if not self._began:  # refused to start: nothing ran, nothing to report
            await self.events.close(0)
            await self.registry.close()
            return
        self.draining = True
        if self._registered:
            try:
                await asyncio.wait_for(self.registry.deregister(self.instance_id), 3.0)
            except (RegistryError, TimeoutError) as exc:
                self.log.warning("deregister_failed", error=str(exc))
        if self.config.drain_delay > 0:
            # Still serving (RPCs, MI) while discovery's watchers drop this instance.
            await asyncio.sleep(self.config.drain_delay)
        if self.load_sampler is not None:
            self.load_sampler.uninstall()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for hook in reversed(self._stop_hooks):
            try:
                await asyncio.wait_for(hook(), self.config.drain_timeout)
            except Exception:
                self.log.exception("stop_hook_failed")
        # Events raised while draining still go out, within a bounded wait.
        await self.events.close(await self.events_stop_wait())
        if self._runner is not None:
            await self._runner.cleanup()
        await self.registry.close()
        self.log.info("service_stopped", id=self.instance_id)

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Starts, runs until SIGTERM/SIGINT (or ``stop`` is set), then stops gracefully."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def describe_registry(registry: ServiceRegistry) -> str:
    """How the start-up line names a discovery backend."""
    return str(getattr(registry, "description", type(registry).__name__))


def events_mode(cfg: EventsConfig, *, local: bool = False) -> str:
    """How the start-up line names the event transport (no password shown)."""
    if cfg.rabbitmq:
        from yarl import URL

        where = URL(cfg.rabbitmq_url).with_password(None).with_user(None)
        return f"rabbitmq({where}, exchange {cfg.exchange})"
    return "embedded(in-process)" if local else "embedded(forwarded to the gateway)"


def method_of(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return "?"
    if isinstance(doc, list):
        return ",".join(str(d.get("method")) for d in doc if isinstance(d, dict)) or "?"
    return str(doc.get("method")) if isinstance(doc, dict) else "?"


def log_level_param(level: Any) -> int:
    """The ``level`` of MI ``log_level``: OpenSIPS's -3..4, or a name (``debug``)."""
    if isinstance(level, str) and not level.lstrip("-").isdigit():
        py = logsetup.python_level(level)
        if py is None:
            raise MiError(INVALID_PARAMS, "Invalid params", f"level: unknown level {level!r}")
        return logsetup.opensips_level(py)
    value = int_param(level, "level")
    if value not in logsetup.OPENSIPS_LEVELS:
        raise MiError(INVALID_PARAMS, "Invalid params", "level: must be -3..4")
    return value


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


def uptime_answer(started_at: float, now: float | None = None) -> dict[str, str]:
    """OpenSIPS 3 ``uptime`` shape: Now, Up since (ctime) and Up time in seconds."""
    now = time.time() if now is None else now
    return {
        "Now": time.ctime(now),
        "Up since": time.ctime(started_at),
        "Up time": f"{int(now - started_at)} [sec]",
    }


def run_service(main: Callable[[], Coroutine[Any, Any, None]], *, name: str = "",
                uvloop: bool = True) -> None:
    """Runs a service's async main on uvloop when available (the production default).

    A :class:`~shared.config.ConfigError` ends the process with one line on stderr and
    exit status :data:`~shared.config.EXIT_CONFIG`, which the supervisor does not restart.
    """
    try:
        if uvloop:
            try:
                import uvloop as loop_policy
            except ImportError:  # pragma: no cover - non-Linux
                asyncio.run(main())
            else:
                loop_policy.run(main())
        else:
            asyncio.run(main())
    except ConfigError as exc:
        exit_on_config_error(name, exc)


def exit_on_config_error(name: str, exc: BaseException) -> None:
    """One line, ``<name>: configuration error: ...``, then exit :data:`EXIT_CONFIG`."""
    prefix = f"{name}: " if name else ""
    print(f"{prefix}configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)
