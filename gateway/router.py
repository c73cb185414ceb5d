"""Mesh-wide MI: core commands answered by the gateway, the rest routed to services.

Core commands (OpenSIPS names and shapes):

* ``version``, ``uptime`` -- this gateway's;
* ``ps`` -- one entry per passing instance in discovery;
* ``which`` -- every command known in the mesh, or a command's parameter sets;
* ``get_statistics`` / ``list_statistics`` / ``reset_statistics`` -- sent to every passing
  instance (this process answered locally) and merged into one answer: values are summed,
  ``load:`` values computed from every process's busy ratios (internal command
  ``load_snapshot``) as OpenSIPS does - busy time over window x processes - rather than
  averaged from rounded percents: ``load``, ``load1m``, ``load10m`` over the SIP-handling
  processes (0 when there is none), ``load-all`` etc. over every process, ``load-proc-N``
  per process by ``ps`` ID;
* ``log_level [level [pid]]`` -- every process's log level (OpenSIPS shape), or sets it in
  every process, or in the one whose Unix ``PID`` (as ``ps`` shows it; a ``ps`` ``ID`` is
  taken too when no PID matches) is given;
* ``event_subscribe``, ``events_list``, ``subscribers_list`` -- the event interface, whose
  subscriptions this gateway holds (:mod:`gateway.events`).

Every public request is timed per method (``sipmesh_gateway_mi_seconds{method}`` on
``/metrics``; methods nobody declares are counted as ``unknown``).

Any other command is routed to the instances whose registration lists it in ``mi_commands``.
A command the service marked ``fanout`` (cluster-wide in OpenSIPS) is sent to all of them
and the answers merged (``ul_dump`` and ``ul_show_contact`` by :mod:`gateway.merging`:
the union of every registrar node's bindings, each contact once); any other goes to one
instance, round-robin, moving to the next only when the connection could not be made (so
a command is never executed twice).

Clustered services: the targeting param ``node_id`` sends a command to one cluster node,
and a command naming a cluster stays in it (:mod:`gateway.targeting`); ``ps`` shows each
instance's cluster and node.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog
from prometheus_client import Histogram

from gateway import targeting
from gateway.events import EVENT_COMMANDS, GatewayEvents
from gateway.merging import MERGERS
from shared.discovery import Instance, RegistryError, ServiceRegistry
from shared.events.forward import INGEST_METHOD
from shared.rpc import (
    INVALID_PARAMS,
    NOT_FOUND,
    SERVICE_UNAVAILABLE,
    JsonRpcClient,
    MiCommand,
    MiDispatcher,
    MiError,
    RpcError,
    RpcTransportError,
)
from shared.rpc.jsonrpc import int_param
from shared.service.runtime import (
    LOAD_SNAPSHOT,
    ServiceRuntime,
    log_level_param,
    method_of,
    server_banner,
    uptime_answer,
)
from shared.service.stats import merge_stats, mi_get, mi_list, mi_reset, stat_names
from shared.stats.load import ProcessLoad, load_statistics

CORE = ("version", "uptime", "ps", "which", "get_statistics", "list_statistics",
        "reset_statistics", "log_level", *EVENT_COMMANDS)
# Commands between mesh processes, never offered on the public endpoint.
INTERNAL = (LOAD_SNAPSHOT, INGEST_METHOD)
LOAD_SIP = ("load", "load1m", "load10m")
STAT_PARAMS: tuple[tuple[str, ...], ...] = ((), ("statistics",))


def merge_answers(answers: Sequence[Any]) -> Any:
    """Merges a fan-out command's answers: lists concatenate, dicts merge key by key
    (lists inside concatenated, numbers summed), anything else is kept as a list."""
    if not answers:
        return None
    if all(isinstance(a, list) for a in answers):
        return [x for a in answers for x in a]
    if all(isinstance(a, dict) for a in answers):
        out: dict[str, Any] = {}
        for a in answers:
            for k, v in a.items():
                if k not in out:
                    out[k] = v
                elif isinstance(out[k], list) and isinstance(v, list):
                    out[k] = out[k] + v
                elif isinstance(out[k], int | float) and isinstance(v, int | float):
                    out[k] = out[k] + v
        return out
    if all(a == answers[0] for a in answers):
        return answers[0]
    return list(answers)


def _sip_load_asked(statistics: Any) -> list[str]:
    """``load``/``load1m``/``load10m`` average the SIP-handling processes only; with none
    running they are 0, as OpenSIPS always has them: the ones ``statistics`` asks for."""
    names = set(stat_names(statistics))
    return [f"load:{key}" for key in LOAD_SIP
            if names & {"all", "load:", f"load:{key}", key}]


class MeshRouter:
    """The gateway's dispatcher (see the module docstring)."""

    def __init__(
        self, runtime: ServiceRuntime, registry: ServiceRegistry, *,
        service_token: str | None = None, call_timeout: float = 3.0,
    ) -> None:
        self.rt = runtime
        self.registry = registry
        self._token = service_token
        self._timeout = call_timeout
        self._log = structlog.get_logger("gateway.router")
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, JsonRpcClient] = {}
        self._rr = itertools.count()
        self._recipes: dict[tuple[str, str], list[list[str]]] = {}
        self.core = MiDispatcher(name="gateway")
        self.core.add(MiCommand("version", self._version))
        self.core.add(MiCommand("uptime", self._uptime))
        self.core.add(MiCommand("ps", self._ps))
        self.core.add(MiCommand("which", self._which, ((), ("command",))))
        self.core.add(MiCommand("get_statistics", self._get_statistics, STAT_PARAMS))
        self.core.add(MiCommand("list_statistics", self._list_statistics, STAT_PARAMS))
        self.core.add(MiCommand("reset_statistics", self._reset_statistics, STAT_PARAMS))
        self.core.add(MiCommand("log_level", self._log_level,
                                ((), ("level",), ("level", "pid"))))
        self.requests = runtime.stats.counter("mi", "requests")
        self.latency = Histogram(
            "sipmesh_gateway_mi_seconds", "MI request time at the gateway, per method",
            ["method"], registry=runtime.metrics,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0))
        self.events: GatewayEvents | None = None  # set by gateway.app

    # -- plumbing ------------------------------------------------------------------------
    def _client(self, url: str) -> JsonRpcClient:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._clients.clear()
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = JsonRpcClient(
                url, token=self._token, timeout=self._timeout, session=self._session)
        return client

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _passing(self) -> list[Instance]:
        try:
            return [i for i in await self.registry.instances() if i.passing]
        except RegistryError as exc:
            self._log.warning("registry_unreachable", error=str(exc))
            raise MiError(SERVICE_UNAVAILABLE, "Service discovery unavailable") from exc

    def _is_self(self, inst: Instance) -> bool:
        return inst.id == self.rt.instance_id

    async def _routes(self) -> tuple[dict[str, list[Instance]], list[Instance]]:
        instances = await self._passing()
        routes: dict[str, list[Instance]] = {}
        for inst in instances:
            if self._is_self(inst) or "mi_url" not in inst.meta:
                continue
            for name in filter(None, inst.meta.get("mi_commands", "").split(",")):
                if name not in CORE and name not in INTERNAL:
                    routes.setdefault(name, []).append(inst)
        return routes, instances

    async def dispatch(self, text: str) -> str:
        """The public ``/mi`` endpoint."""
        started = time.perf_counter()
        self.requests.inc()
        try:
            routes, _ = await self._routes()
        except MiError:
            routes = {}  # core commands still answer (locally) without discovery
        extra = {name: MiCommand(name, self._forwarder(name, insts), None)
                 for name, insts in routes.items()}
        try:
            return await self.core.dispatch(text, extra)
        finally:
            method = method_of(text)
            if method not in self.core.commands and method not in extra:
                method = "unknown"  # a label per junk name would grow without bound
            self.latency.labels(method).observe(time.perf_counter() - started)

    async def call(self, name: str, params: Any = None) -> Any:
        """One MI command from inside the gateway (the web console): routed as on the
        public endpoint, but not counted or timed as a client's request."""
        command = self.core.commands.get(name)
        if command is None:
            routes, _ = await self._routes()
            if name not in routes:
                raise MiError(NOT_FOUND, "Unknown command")
            command = MiCommand(name, self._forwarder(name, routes[name]), None)
        bound = command.bind(params if isinstance(params, list) else None,
                             params if isinstance(params, dict) else None)
        return await command.handler(**bound)

    async def routed(self) -> set[str]:
        """The commands some passing service answers (besides the gateway's own)."""
        routes, _ = await self._routes()
        return set(routes)

    async def per_process_statistics(self, statistics: Any) -> list[tuple[int, Any]]:
        """Every process's own ``get_statistics`` answer, unmerged, with its ``ps`` ID."""
        return await self._stats_everywhere("get_statistics", statistics)

    def ps_ids(self, instances: list[Instance]) -> dict[str, int]:
        """Instance id -> ``ps`` ID, as ``ps`` numbers the passing ``instances``."""
        return self._ps_ids(instances)

    # -- routed commands -----------------------------------------------------------------
    def _forwarder(self, name: str, instances: list[Instance]) -> Any:
        async def forward(params: Any) -> Any:
            fanout = any(name in i.meta.get("mi_fanout", "").split(",") for i in instances)
            pinned, params, instances_ = await self._target(name, params, instances)
            if fanout and not pinned:
                return await self._fan_out(name, params, instances_)
            return await self._call_one(name, params, instances_)

        return forward

    async def _target(
        self, name: str, params: Any, instances: list[Instance]
    ) -> tuple[bool, Any, list[Instance]]:
        """``(pinned to one node, params to forward, candidates)`` (gateway.targeting)."""
        node, params = targeting.pop_node(params)
        clustered = [i for i in instances if targeting.is_clustered(i)]
        clusters = {i.meta["cluster_id"] for i in clustered}
        asks_cluster = isinstance(params, dict) and targeting.CLUSTER_PARAM in params
        if node is not None and not clustered:
            raise MiError(INVALID_PARAMS, "Invalid params",
                          f"node_id: {name} does not run on cluster nodes")
        if not clustered or (node is None and not asks_cluster
                             and (len(clusters) < 2 or not params)):
            return False, params, instances  # nothing to choose between clusters
        recipes = await self._recipes_of(name, clustered or instances)
        cluster = targeting.named_cluster(targeting.named_view(params, recipes))
        if asks_cluster and recipes and not targeting.takes(recipes, targeting.CLUSTER_PARAM):
            params = {k: v for k, v in params.items() if k != targeting.CLUSTER_PARAM}
        chosen = targeting.select(clustered if (node or cluster) else instances, node, cluster)
        return node is not None, params or None, chosen

    async def _recipes_of(self, name: str, instances: list[Instance]) -> list[list[str]]:
        """The command's parameter sets (its ``which`` answer), cached per instance."""
        if len(self._recipes) > 4096:
            self._recipes.clear()  # restarted instances leave stale keys: bound the cache
        for inst in instances:
            key = (inst.id, name)
            if key not in self._recipes:
                try:
                    answer = await self._client(inst.meta["mi_url"]).call(
                        "which", {"command": name})
                except (RpcError, RpcTransportError):
                    continue
                if isinstance(answer, list):
                    self._recipes[key] = [[str(p) for p in r] for r in answer
                                          if isinstance(r, list)]
            if key in self._recipes:
                return self._recipes[key]
        return []

    async def _call_one(self, name: str, params: Any, instances: list[Instance]) -> Any:
        start = next(self._rr) % len(instances)
        order = instances[start:] + instances[:start]
        for inst in order:
            try:
                return await self._client(inst.meta["mi_url"]).call(name, params or None)
            except RpcError as exc:
                raise MiError(exc.code, exc.message, exc.data) from exc
            except RpcTransportError as exc:
                if not isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                    # Sent but unanswered: it may have run; do not run it elsewhere.
                    self._log.warning("mi_forward_failed", command=name, instance=inst.id)
                    raise MiError(SERVICE_UNAVAILABLE, "Service did not answer") from exc
        raise MiError(SERVICE_UNAVAILABLE, "No instance of the service is reachable")

    async def _fan_out(self, name: str, params: Any, instances: list[Instance]) -> Any:
        results = await self._gather(name, params, instances)
        answers = [r for r in results.values() if not isinstance(r, Exception)]
        if not answers:
            first = next(iter(results.values()), None)
            if isinstance(first, RpcError):
                raise MiError(first.code, first.message, first.data)
            raise MiError(SERVICE_UNAVAILABLE, "No instance of the service answered")
        merger = MERGERS.get(name)
        merged = merger(answers) if merger is not None else None
        return merge_answers(answers) if merged is None else merged

    async def _gather(
        self, name: str, params: Any, instances: list[Instance]
    ) -> dict[str, Any]:
        async def one(inst: Instance) -> Any:
            try:
                return await self._client(inst.meta["mi_url"]).call(name, params or None)
            except (RpcError, RpcTransportError) as exc:
                if isinstance(exc, RpcTransportError):
                    self._log.warning("mi_fanout_failed", command=name, instance=inst.id)
                return exc

        targets = [i for i in instances if "mi_url" in i.meta and not self._is_self(i)]
        results = await asyncio.gather(*(one(i) for i in targets))
        return {i.id: r for i, r in zip(targets, results, strict=True)}

    # -- core commands -------------------------------------------------------------------
    async def _version(self) -> Any:
        return {"Server": server_banner()}

    async def _uptime(self) -> Any:
        return uptime_answer(self.rt.started_at)

    def _ps_order(self, instances: list[Instance]) -> list[Instance]:
        """Processes in ``ps`` order; their index is the ps ``ID`` (also used in
        ``load:load-proc-<ID>``)."""
        if not any(self._is_self(i) for i in instances):
            instances = [*instances, self.rt._instance()]
        return sorted(instances, key=lambda i: (i.service, i.id))

    def _ps_ids(self, instances: list[Instance]) -> dict[str, int]:
        return {inst.id: n for n, inst in enumerate(self._ps_order(instances))}

    async def _ps(self) -> Any:
        instances = self._ps_order(await self._passing())
        procs = []
        for n, inst in enumerate(instances):
            pid = inst.meta.get("pid", "0")
            procs.append({"ID": n, "PID": int(pid) if pid.isdigit() else 0,
                          "Type": self._ps_type(inst),
                          # each service's own release (an older one may not say: "")
                          "Version": inst.meta.get("service_version", "")})
        return {"Processes": procs}

    @staticmethod
    def _ps_type(inst: Instance) -> str:
        kind = f"{inst.service} {inst.address}:{inst.port}"
        if targeting.is_clustered(inst):
            kind += f" cluster {inst.meta['cluster_id']} node {inst.meta['cluster_node_id']}"
        return kind

    async def _which(self, command: str | None = None) -> Any:
        try:
            routes, _ = await self._routes()
        except MiError:
            routes = {}
        if command is None:
            return sorted(set(self.core.commands) | set(routes))
        if command in self.core.commands:
            recipes = self.core.commands[command].params or ((),)
            return [list(r) for r in recipes]
        if command in routes:
            return await self._call_one("which", {"command": command}, routes[command])
        raise MiError(NOT_FOUND, "Unknown command")

    async def _stats_everywhere(
        self, method: str, statistics: Any
    ) -> list[tuple[int, Any]]:
        """Runs a statistics command on every instance; ``(ps ID, answer)`` pairs."""
        instances = await self._passing()
        params = None if statistics is None else {"statistics": statistics}
        local = {"get_statistics": mi_get, "list_statistics": mi_list,
                 "reset_statistics": mi_reset}[method]
        ids = self._ps_ids(instances)
        answers: list[tuple[int, Any]] = []
        try:
            answers.append((ids.get(self.rt.instance_id, 0), local(self.rt.stats, statistics)))
        except MiError as exc:
            if exc.code != NOT_FOUND:
                raise
        for inst_id, result in (await self._gather(method, params, instances)).items():
            if not isinstance(result, Exception):
                answers.append((ids.get(inst_id, 0), result))
        if not answers:
            raise MiError(NOT_FOUND, "Statistics Not Found")
        return answers

    async def _get_statistics(self, statistics: Any = None) -> Any:
        try:
            merged = merge_stats(await self._stats_everywhere("get_statistics", statistics))
        except MiError as exc:
            if exc.code != NOT_FOUND:
                raise
            merged = {}
        for key in _sip_load_asked(statistics):
            merged.setdefault(key, 0)
        if any(key.startswith("load:") for key in merged):
            await self._exact_load(merged)
        if not merged:
            raise MiError(NOT_FOUND, "Statistics Not Found")
        return dict(sorted(merged.items()))

    async def _exact_load(self, merged: dict[str, int]) -> None:
        """Replaces the ``load:`` values (averages of each process's rounded percent)
        by the exact ones: busy time over window x processes from every process's
        ratios (``load_snapshot``), as OpenSIPS computes them. Falls back silently to
        the averages when an instance cannot tell (an older runtime)."""
        instances = await self._passing()
        ids = self._ps_ids(instances)
        local = self.rt.mi.commands[LOAD_SNAPSHOT].handler
        answers = {self.rt.instance_id: await local()}
        answers.update(await self._gather(LOAD_SNAPSHOT, None, instances))
        procs: dict[int, ProcessLoad] = {}
        sip: list[int] = []
        for inst_id, answer in answers.items():
            try:
                procs[ids[inst_id]] = ProcessLoad.from_dict(answer)
            except (KeyError, TypeError, ValueError):
                return
            if answer.get("sip") is True:
                sip.append(ids[inst_id])
        exact = {f"load:{k}": v for k, v in load_statistics(procs, sip=sip).items()}
        for key in merged:
            if key in exact:
                merged[key] = exact[key]

    async def _list_statistics(self, statistics: Any = None) -> Any:
        merged: dict[str, str] = {}
        try:
            answers = await self._stats_everywhere("list_statistics", statistics)
        except MiError as exc:
            if exc.code != NOT_FOUND:
                raise
            answers = []
        for proc_id, answer in answers:
            if isinstance(answer, dict):
                for k, v in answer.items():
                    merged[merge_stats([(proc_id, {str(k): 0})]).popitem()[0]] = str(v)
        for key in _sip_load_asked(statistics):
            merged.setdefault(key, "non-incremental")
        if not merged:
            raise MiError(NOT_FOUND, "Statistics Not Found")
        return dict(sorted(merged.items()))

    async def _reset_statistics(self, statistics: Any = None) -> Any:
        await self._stats_everywhere("reset_statistics", statistics)
        return "OK"

    async def _log_level(self, level: Any = None, pid: Any = None) -> Any:
        """OpenSIPS ``log_level`` over the mesh (see the module docstring)."""
        instances = self._ps_order(await self._passing())
        if level is not None:
            level = log_level_param(level)  # refused here, before any process changes
        local = self.rt.mi.commands["log_level"].handler
        if pid is not None:
            wanted = str(int_param(pid, "pid"))
            chosen = [i for i in instances if i.meta.get("pid") == wanted] or [
                i for n, i in enumerate(instances) if str(n) == wanted]
            if not chosen:
                raise MiError(NOT_FOUND, "Process not found")
            instances = chosen[:1]
        params = None if level is None else {"level": level}
        answers: dict[str, Any] = {}
        if any(self._is_self(i) for i in instances):
            answers[self.rt.instance_id] = await (local() if level is None else local(level))
        answers.update(await self._gather("log_level", params, instances))
        if level is not None:
            if not any(not isinstance(a, Exception) for a in answers.values()):
                raise MiError(SERVICE_UNAVAILABLE, "No process answered")
            if pid is not None:
                return {"PID": int(instances[0].meta.get("pid", "0") or 0),
                        "New log level": level}
            return {"New global log level": level}
        procs = []
        for inst in instances:
            answer = answers.get(inst.id)
            if isinstance(answer, dict):
                for proc in answer.get("Processes", []):
                    procs.append({"PID": proc.get("PID"), "Log level": proc.get("Log level"),
                                  "Type": self._ps_type(inst)})
        return {"Processes": procs}


__all__ = ["CORE", "MeshRouter", "merge_answers"]
