"""``sipmesh up``: the supervisor of a single-host mesh.

It hosts the embedded registry (HTTP on loopback) in its own process, starts every service
of :mod:`.catalog` as a child (``python -m <module>``) told where the registry is through
``SIPMESH_DISCOVERY_URL``, prints the endpoints as instances register, restarts a child that
exits with exponential backoff (reset once a child stayed up ``stable_after`` seconds),
except one that exited with :data:`~shared.config.EXIT_CONFIG` (a configuration error: the
same settings would fail again), and on SIGINT/SIGTERM stops every child with SIGTERM
(SIGKILL after ``stop_timeout``), then the registry.

The supervisor registers itself as service ``supervisor`` with the list of services it
expects in ``meta.expected``, so ``sipmesh status`` can report a service that is down.
Children run in their own session (a terminal's Ctrl-C reaches only the supervisor, which
stops them in order) and die with it if it is killed (Linux ``PR_SET_PDEATHSIG``).

With ``[mesh] nodes`` = N (``sipmesh up --nodes N``) every clustered service of the
catalog runs as N children named ``<service>.<i>`` (node ids 1..N, one cluster per
service), each given its cluster settings by :func:`node_env`: the OpenSIPS
``current_info`` of node i (cluster and node id, replication address on an ephemeral
loopback port, node 1 the seed), the cluster's members 1-N and a secret drawn at random
for this run, seeds found through discovery (the service's own instances announce their
node), the catalog's sharing tags, and distinct ports. A restarted node keeps its node id,
so it rejoins and resyncs.

With ``[mesh] edges`` = N >= 2 (``sipmesh up --edges N``) the edge runs as N children
``edge.<i>``, an anycast cluster (cluster 5, capability ``tm-repl``): every node binds the
same ``[edge] listen`` addresses (SO_REUSEPORT; UDP marked ``;anycast``), shares one
Record-Route and nonce secret, and hands replies, CANCELs and ACKs of another node's
transaction to their owner (README "Anycast"). ``--nodes`` alone keeps one edge.

Rolling restart (``sipmesh restart <service>``, ``POST /restart/<service>`` on the
registry's loopback port): the service's children are restarted one at a time; each gets
SIGTERM (it leaves discovery, drains and exits: see :mod:`shared.service.runtime`), is
started again at once (no backoff, not counted as a crash), and the next one is only
touched once the new process answers ``/ready`` 200 (registered, its backends reachable,
its cluster data synced) and its registration says so too (meta ``ready``: what clients
choose instances by). With two or more nodes of a clustered service the others serve
meanwhile, so nothing is refused; a single instance is away for its drain and start-up.
A service marked ``surge`` in the catalog (the FreeSWITCH bridge) is restarted the other
way round, as Kubernetes' ``maxSurge: 1``: the new process is started beside the old one,
and the old one gets SIGTERM once the new one is ready (it hands its work over).

The registry's HTTP port also serves the supervisor's own ``GET /health`` (200 while it
runs, 503 once a child gave up on a configuration error or while stopping; the body names
every child with its pid, state and restarts) and ``GET /metrics`` (Prometheus:
``sipmesh_supervisor_child_up{child}``, ``sipmesh_supervisor_child_restarts_total{child}``,
``sipmesh_supervisor_instances`` and the process's own CPU and memory).

Output lines on stdout are stable for scripts and tests::

    registry http://127.0.0.1:8710
    sipmesh modes: discovery=embedded(http://127.0.0.1:8710); events=embedded(...); ...
    started gateway pid 1234
    started registrar.2 pid 1236
    endpoint gateway mi http://127.0.0.1:8888/mi
    endpoint registrar cluster 1/2 127.0.0.1:40123
    exited gateway pid 1234 rc -9; restart in 0.5s
    exited edge pid 1235 rc 78: configuration error, not restarted (fix the settings, restart)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from shared.config import EXIT_CONFIG, ConfigError, load_section, section_env_name
from shared.discovery.embedded import RegistryServer
from shared.discovery.port import Instance
from shared.events.config import EventsConfig
from shared.service.parent import PARENT_PID_ENV
from shared.service.runtime import events_mode
from shared.service.say import say
from sipmesh.catalog import ChildSpec

# Registration metadata keys printed as endpoints, with their label.
ENDPOINT_KEYS = (("public_mi_url", "mi"), ("grpc", "grpc"), ("sip", "sip"), ("sip_udp", "sip"),
                 ("sip_tcp", "sip"), ("metrics_url", "metrics"))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The ``[mesh]`` section: the supervisor's registry and restart policy."""

    registry_host: str = "127.0.0.1"
    registry_port: int = 8710
    services: tuple[str, ...] = ()
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 30.0
    stop_timeout: float = 10.0
    nodes: int = 0  # > 0: run that many nodes of every clustered service
    edges: int = 0  # >= 2: run that many anycast edge nodes on one address (README Anycast)

    def validate(self) -> None:
        if not 0 <= self.nodes <= 64:
            raise ValueError("[mesh] nodes must be between 0 and 64")
        if not 0 <= self.edges <= 64:
            raise ValueError("[mesh] edges must be between 0 and 64")

    def count(self, spec: ChildSpec) -> int:
        """How many nodes of clustered ``spec`` to run (0: one unclustered child)."""
        if spec.nodes_setting == "edges":
            return self.edges if self.edges >= 2 else 0  # one anycast node is a plain edge
        return self.nodes


def free_port() -> int:
    """A free loopback port (bound then released: a SIP port must be fixed up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_env(spec: ChildSpec, node_id: int, nodes: int, secret: str,
             base: Mapping[str, str]) -> dict[str, str]:
    """The environment that makes a child node ``node_id`` of ``spec``'s cluster of
    ``nodes`` nodes. Identity settings are forced; a secret already set in ``base`` wins
    (a user's fixed secret), as do timers and other cluster settings it sets."""
    def key(field: str) -> str:
        return section_env_name(spec.cluster_section, field)

    env = dict(spec.cluster_env)
    env.update({
        key("cluster_id"): str(spec.cluster_id),
        key("node_id"): str(node_id),
        key("listen"): "127.0.0.1:0",
        key("advertise"): "",
        key("seed"): "true" if node_id == 1 else "false",
        key("seeds"): "",
        key("discovery_service"): spec.name,
        key("members"): f"1-{nodes}",
        key("secret"): base.get(key("secret")) or secret,
        key("description"): f"{spec.name} node {node_id}",
    })
    if spec.sharing_tags and key("sharing_tags") not in base:
        env[key("sharing_tags")] = ",".join(spec.sharing_tags)
    for name in spec.port_env:
        env[name] = "0"
    if spec.sip_port_env:
        port = free_port()
        env[spec.sip_port_env] = str(port)
        env[key("sip_addr")] = f"sip:127.0.0.1:{port}"
    return env


def anycast_listen(items: Sequence[str]) -> str:
    """The ``[edge] listen`` of every node of an anycast edge cluster: the same addresses
    for all (a port 0 fixed here once), UDP entries marked ``;anycast``. The nodes share
    each address through SO_REUSEPORT, the kernel spreading datagrams over them."""
    from services.edge.config import parse_listen

    out = []
    for item in items:
        itf = parse_listen(item)
        port = itf.port or free_port()
        mark = ";anycast" if itf.transport == "udp" else ""
        out.append(f"{itf.transport}:{itf.host_in_uri}:{port}{mark}")
    return ",".join(out)


def _listen_setting(env_name: str, base: Mapping[str, str]) -> list[str]:
    """The listen setting the children would read (environment, else config file)."""
    from services.edge.config import EdgeConfig

    if env_name in base:
        return [x for x in base[env_name].split(",") if x.strip()]
    return list(load_section(EdgeConfig, "edge", environ=base).listen)


class _Child:
    def __init__(self, spec: ChildSpec, node_id: int = 0,
                 env: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.node_id = node_id
        self.name = f"{spec.name}.{node_id}" if node_id else spec.name
        self.env = dict(env or {})
        self.proc: asyncio.subprocess.Process | None = None
        self.backoff = 0.0
        self.restarts = 0
        self.started = 0.0
        self.gave_up = False  # exited with a configuration error: not restarted
        self.planned = False  # stopped by a rolling restart: started again at once
        # A surge restart's new process, started beside `proc`: adopted when `proc` exits.
        self.successor: asyncio.subprocess.Process | None = None


class Supervisor:
    """Runs the registry and the children until ``stop`` is set."""

    def __init__(
        self, specs: Sequence[ChildSpec], cfg: MeshConfig, *,
        env: Mapping[str, str] | None = None, out: Callable[[str], None] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.cfg = cfg
        self.base_env = dict(os.environ if env is None else env)
        self.out = out or say
        self.log = structlog.get_logger("supervisor")
        self.server = RegistryServer()
        self.children = {c.name: c for c in self._plan()}
        self.registry_url = ""
        self._stopping = asyncio.Event()
        self._printed: set[tuple[str, str]] = set()
        self.metrics = CollectorRegistry()
        self.metrics.register(_ChildrenCollector(self))
        ProcessCollector(registry=self.metrics)
        self._instances = 0
        self.server.app.router.add_get("/health", self._health)
        self.server.app.router.add_get("/metrics", self._metrics)
        self.server.app.router.add_post("/restart/{service}", self._restart)
        self._rolling = asyncio.Lock()  # one rolling restart at a time

    # -- the supervisor's own /health and /metrics -----------------------------------------
    def child_state(self, child: _Child) -> str:
        if child.gave_up:
            return "configuration error"
        if child.proc is not None and child.proc.returncode is None:
            return "running"
        return "stopped" if self._stopping.is_set() else "restarting"

    async def _health(self, request: web.Request) -> web.Response:
        states = {name: self.child_state(c) for name, c in self.children.items()}
        ok = not self._stopping.is_set() and not any(c.gave_up for c in self.children.values())
        body = {"status": "passing" if ok else "critical", "service": "supervisor",
                "pid": os.getpid(),
                "children": {name: {"pid": c.proc.pid if c.proc is not None else 0,
                                    "state": states[name], "restarts": c.restarts}
                             for name, c in self.children.items()}}
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._instances = len(await self.server.registry.instances())
        return web.Response(body=generate_latest(self.metrics),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _plan(self) -> list[_Child]:
        """One child per service, or ``nodes`` children per clustered service."""
        children = []
        for spec in self.specs:
            if spec.nodes_only and not self.cfg.nodes:
                continue
            count = self.cfg.count(spec) if spec.clustered else 0
            if count:
                secret = secrets.token_hex(16)  # per run and cluster
                shared = {name: self.base_env.get(name) or secrets.token_hex(32)
                          for name in spec.shared_secrets}
                if spec.anycast_listen_env:
                    shared[spec.anycast_listen_env] = anycast_listen(
                        _listen_setting(spec.anycast_listen_env, self.base_env))
                children += [_Child(spec, i, {**node_env(spec, i, count, secret,
                                                         self.base_env), **shared})
                             for i in range(1, count + 1)]
            else:
                children.append(_Child(spec))
        return children

    async def run(self, stop: asyncio.Event) -> None:
        self.registry_url = await self.server.start(self.cfg.registry_host, self.cfg.registry_port)
        self.out(f"registry {self.registry_url}")
        self.out(self.mode_line())
        me = Instance("supervisor", f"supervisor-{os.getpid()}", self.cfg.registry_host,
                      self.server.port, meta={
                          "pid": str(os.getpid()),
                          "health_url": f"{self.registry_url}/health",
                          "metrics_url": f"{self.registry_url}/metrics",
                          "expected": ",".join(dict.fromkeys(
                              c.spec.name for c in self.children.values()))})
        await self.server.registry.register(me, ttl=3600 * 24 * 365)
        tasks = [asyncio.create_task(self._keep(child)) for child in self.children.values()]
        tasks.append(asyncio.create_task(self._announce()))
        await stop.wait()
        self._stopping.set()
        self.out("stopping")
        await asyncio.gather(*(self._terminate(c) for c in self.children.values()))
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.server.registry.deregister(me.id)
        await self.server.stop()
        self.out("stopped")

    def mode_line(self) -> str:
        """``sipmesh modes: ...``: what every child will run with (each prints its own)."""
        try:
            events = events_mode(load_section(EventsConfig, "events", environ=self.base_env))
        except ConfigError as exc:
            events = f"invalid ({exc})"
        names = ",".join(dict.fromkeys(c.spec.name for c in self.children.values()))
        return (f"sipmesh modes: discovery=embedded({self.registry_url}); events={events}; "
                f"nodes={self.cfg.nodes or 'unclustered'}; "
                f"{f'edges={self.cfg.edges} anycast; ' if self.cfg.edges >= 2 else ''}"
                f"services={names}")

    def _env(self, child: _Child) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(child.env)
        env["SIPMESH_DISCOVERY_BACKEND"] = "embedded"
        env["SIPMESH_DISCOVERY_URL"] = self.registry_url
        if child.spec.name == "edge" and not any(
                c.spec.name == "registrar" for c in self.children.values()):
            # No registrar in this mesh ([mesh] services leaves it out), so none can come:
            # the edge is ready without one (and its local users are unknown, 404),
            # instead of never ready (issue 20). The variable set by the user still wins.
            env.setdefault("SIPMESH_EDGE_REGISTRAR_EXPECTED", "false")
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The child arms its parent-death signal itself after exec (shared.service.parent:
        # no preexec_fn, which runs at-fork handlers in the forked child).
        env[PARENT_PID_ENV] = str(os.getpid())
        return env

    async def _spawn(self, child: _Child) -> None:
        child.proc = await self._process(child)
        child.started = time.monotonic()

    async def _process(self, child: _Child) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", child.spec.module, env=self._env(child),
            start_new_session=True,
        )
        self.out(f"started {child.name} pid {proc.pid}")
        return proc

    async def _keep(self, child: _Child) -> None:
        """Starts the child and restarts it with backoff whenever it exits."""
        while not self._stopping.is_set():
            if child.successor is not None:  # a surge restart: already running
                child.proc, child.successor = child.successor, None
                child.started = time.monotonic()
            else:
                await self._spawn(child)
            assert child.proc is not None
            rc = await child.proc.wait()
            await self._forget(child.proc.pid)
            if self._stopping.is_set():
                return
            if child.planned:  # a rolling restart: no backoff, not a crash
                child.planned = False
                child.backoff = 0.0
                self.out(f"exited {child.name} pid {child.proc.pid} rc {rc}; rolling restart")
                continue
            if rc == EXIT_CONFIG:
                # The same settings would fail the same way: say so once, stop trying.
                child.gave_up = True
                self.out(f"exited {child.name} pid {child.proc.pid} rc {rc}: "
                         "configuration error, not restarted (fix the settings, restart)")
                return
            ran = time.monotonic() - child.started
            # Kept by hand: a restart policy, not retries of one call (tenacity's model):
            # the backoff goes back to its start once a child stayed up stable_after.
            if ran >= self.cfg.stable_after or child.backoff == 0.0:
                child.backoff = self.cfg.backoff_initial
            else:
                child.backoff = min(child.backoff * 2, self.cfg.backoff_max)
            child.restarts += 1
            self.out(f"exited {child.name} pid {child.proc.pid} rc {rc}; "
                     f"restart in {child.backoff:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.backoff)

    async def _forget(self, pid: int) -> None:
        """Drops the registrations of a dead child (it could not deregister itself)."""
        for inst in await self.server.registry.instances():
            if inst.meta.get("pid") == str(pid) and inst.service != "supervisor":
                await self.server.registry.deregister(inst.id)

    async def _terminate(self, child: _Child) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.cfg.stop_timeout)
        except TimeoutError:
            self.log.warning("child_killed", child=child.name, pid=proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self.out(f"exited {child.name} pid {proc.pid} rc {proc.returncode}")

    # -- rolling restart -------------------------------------------------------------------
    async def _restart(self, request: web.Request) -> web.Response:
        if request.remote not in ("127.0.0.1", "::1"):
            return web.json_response({"error": "loopback only"}, status=403)
        service = request.match_info["service"]
        try:
            timeout = float(request.query.get("timeout", "60"))
        except ValueError:
            return web.json_response({"error": "timeout: a number of seconds"}, status=400)
        if not any(c.spec.name == service for c in self.children.values()):
            return web.json_response({"error": f"no service {service!r} in this mesh"},
                                     status=404)
        steps = await self.rolling_restart(service, timeout)
        ok = all(step["ready"] for step in steps)
        return web.json_response({"service": service, "ok": ok, "steps": steps},
                                 status=200 if ok else 504)

    async def rolling_restart(self, service: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Restarts ``service``'s children one at a time, each once the previous one is
        ready again (see the module docstring); stops at the first that does not get
        ready within ``timeout`` s."""
        steps: list[dict[str, Any]] = []
        async with self._rolling:
            for child in [c for c in self.children.values() if c.spec.name == service]:
                step = await self._restart_child(child, timeout)
                steps.append(step)
                if not step["ready"]:
                    break
        return steps

    async def _restart_child(self, child: _Child, timeout: float) -> dict[str, Any]:
        if child.spec.surge:
            return await self._surge_child(child, timeout)
        began = time.monotonic()
        old = child.proc
        step: dict[str, Any] = {"child": child.name, "old_pid": 0, "pid": 0, "ready": False}
        if old is not None and old.returncode is None and not child.gave_up:
            step["old_pid"] = old.pid
            self.out(f"rolling restart {child.name} pid {old.pid}")
            child.planned = True
            await self._terminate(child)
        await self._await_successor(child, old, began + timeout, step)
        return self._report(child, began, step)

    async def _surge_child(self, child: _Child, timeout: float) -> dict[str, Any]:
        """The surge restart: the new process first, SIGTERM to the old one once the new
        one is ready (the old one keeps running if it never gets ready)."""
        began = time.monotonic()
        old = child.proc
        step: dict[str, Any] = {"child": child.name, "old_pid": 0, "pid": 0, "ready": False}
        if old is None or old.returncode is not None or child.gave_up:
            # Not running: wait for the one `_keep` starts.
            await self._await_successor(child, None, began + timeout, step)
            return self._report(child, began, step)
        step["old_pid"] = old.pid
        self.out(f"rolling restart {child.name} pid {old.pid} (new process first)")
        new = await self._process(child)
        step["pid"] = new.pid
        deadline = began + timeout
        while time.monotonic() < deadline and not self._stopping.is_set() \
                and new.returncode is None:
            if await self._ready(new.pid):
                step["ready"] = True
                break
            await asyncio.sleep(0.1)  # polling a process we do not control, not a test
        if step["ready"]:
            child.successor = new  # adopted by _keep once the old process exits
            child.planned = True
            await self._terminate(child)
        else:
            with contextlib.suppress(ProcessLookupError):
                new.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(new.wait(), self.cfg.stop_timeout)
            if new.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    new.kill()
                await new.wait()
            await self._forget(new.pid)
        return self._report(child, began, step)

    async def _await_successor(self, child: _Child, old: asyncio.subprocess.Process | None,
                               deadline: float, step: dict[str, Any]) -> None:
        """Waits until the process `_keep` runs for `child` in place of `old` is ready
        (`step` gets its pid and readiness), or the deadline."""
        while time.monotonic() < deadline and not self._stopping.is_set():
            proc = child.proc
            if proc is not None and proc is not old and proc.returncode is None:
                step["pid"] = proc.pid
                if await self._ready(proc.pid):
                    step["ready"] = True
                    return
            await asyncio.sleep(0.1)  # polling a process we do not control, not a test

    def _report(self, child: _Child, began: float, step: dict[str, Any]) -> dict[str, Any]:
        step["seconds"] = round(time.monotonic() - began, 3)
        self.out(f"rolling restart {child.name} pid {step['pid']} "
                 f"{'ready' if step['ready'] else 'NOT ready'} in {step['seconds']:g}s")
        return step

    async def _ready(self, pid: int) -> bool:
        """The instance(s) of process ``pid`` are registered, ready as discovery shows
        them (meta ``ready``), and answer ``/ready`` 200.

        Discovery's word counts, not only /ready's: clients (the edge's registrar
        client) pick instances by the ``ready`` of their registration, which the service
        publishes a moment after its /ready turns 200. Draining the next node in that
        moment left the clients with no ready instance at all (issue 20: 503s in a
        rolling restart of two registrar nodes)."""
        mine = [i for i in await self.server.registry.instances()
                if i.meta.get("pid") == str(pid) and i.passing]
        if not mine or any(i.meta.get("ready") == "0" for i in mine):
            return False  # no meta "ready" (an older release): registered will do
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for inst in mine:
                health = inst.meta.get("health_url", "")
                if not health.endswith("/health"):
                    continue  # no HTTP endpoint published: registered is the best sign
                try:
                    async with http.get(health.removesuffix("/health") + "/ready") as resp:
                        if resp.status == 404:
                            continue  # an older release without /ready: registered will do
                        if resp.status != 200:
                            return False
                except (aiohttp.ClientError, TimeoutError):
                    return False
        return True

    async def _announce(self) -> None:
        """Prints each endpoint once, as instances register."""
        index = 0
        registry = self.server.registry
        while True:
            index, _ = await registry.wait_instances("*", index, 30.0)
            for inst in await registry.instances():
                if not inst.passing:
                    continue
                for key, label in ENDPOINT_KEYS:
                    value = inst.meta.get(key)
                    if value and (inst.id, key) not in self._printed:
                        self._printed.add((inst.id, key))
                        self.out(f"endpoint {inst.service} {label} {value}")
                node, url = inst.meta.get("cluster_node_id"), inst.meta.get("cluster_url")
                if node and url and (inst.id, "cluster") not in self._printed:
                    self._printed.add((inst.id, "cluster"))
                    self.out(f"endpoint {inst.service} cluster "
                             f"{inst.meta.get('cluster_id', '?')}/{node} {url}")


class _ChildrenCollector(Collector):
    """The supervisor's children as Prometheus metrics (read when scraped)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor

    def collect(self) -> list[Metric]:
        up = GaugeMetricFamily("sipmesh_supervisor_child_up",
                               "1 while the child process runs", labels=["child"])
        restarts = CounterMetricFamily("sipmesh_supervisor_child_restarts",
                                       "Times the child was restarted", labels=["child"])
        for name, child in self._sup.children.items():
            up.add_metric([name], 1.0 if self._sup.child_state(child) == "running" else 0.0)
            restarts.add_metric([name], child.restarts)
        instances = GaugeMetricFamily("sipmesh_supervisor_instances",
                                      "Instances in the embedded registry",
                                      value=self._sup._instances)
        return [up, restarts, instances]
