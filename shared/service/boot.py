"""The start-up every service process repeated, written once.

A service's entry point (``services/<name>/app.py``) reads its section, builds a
:class:`~shared.service.runtime.ServiceRuntime`, wires its own objects and hooks, then
serves until SIGTERM. What was the same in each:

* :func:`arguments` -- the command line's parser with the ports every service takes
  (``--grpc-port``, ``--http-port``);
* :func:`load_settings` -- the section's settings with the command line's overrides (an
  option left out keeps the file's or environment's value), validated;
* :func:`discovery_settings` -- the ``[discovery]`` section, and an embedded registry of
  its own when nothing is configured (a service started alone, no ``sipmesh up`` around);
* :func:`service_runtime` -- the runtime from the section's ``http_*`` and ``drain_*``
  settings (the HTTP endpoint of MI, ``/metrics``, ``/health``, ``/ready``; the drain on
  SIGTERM), its token named as ``[section] http_token (SIPMESH_SECTION_HTTP_TOKEN)``;
* :func:`cluster_node` -- the node of a clustered service (``[section.cluster]``) with the
  cluster's MI commands;
* :class:`GrpcApi` -- the service's gRPC server: started from ``on_start``, advertised as
  ``grpc`` in discovery, in ``/ready`` while it serves, stopped with the drain grace;
* :func:`serve_announced` -- serves, printing the one ``<name> ready ...`` line on stdout
  once the endpoints listen (tests and ``sipmesh up`` read it);
* :func:`service_main` -- the process: settings (a bad one: the registrar's one line on
  stderr, ``<name>: configuration error: ...``, and exit ``EXIT_CONFIG``, which ``sipmesh
  up`` does not restart), logging, then the service on uvloop where its settings ask for
  it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc

from shared.rpc.grpc_helpers import GrpcServer, start_grpc_server
from shared.service.runtime import RuntimeConfig, ServiceRuntime
from shared.service.say import say

if TYPE_CHECKING:
    from shared.cluster import ClusterNode


class Validated(Protocol):
    def validate(self) -> None: ...


class HttpSettings(Protocol):
    """The settings of a section that the runtime reads."""

    @property
    def http_host(self) -> str: ...
    @property
    def http_port(self) -> int: ...
    @property
    def http_advertise(self) -> str: ...
    @property
    def http_token(self) -> str: ...
    @property
    def drain_delay(self) -> float: ...
    @property
    def drain_grace(self) -> float: ...


class GrpcSettings(Protocol):
    @property
    def grpc_host(self) -> str: ...
    @property
    def grpc_port(self) -> int: ...
    @property
    def grpc_advertise(self) -> str: ...
    @property
    def drain_grace(self) -> float: ...


class MainSettings(Protocol):
    @property
    def log_level(self) -> str: ...


S = TypeVar("S", bound=Validated)
M = TypeVar("M", bound=MainSettings)


def arguments(name: str, description: str, *, grpc: bool = True) -> argparse.ArgumentParser:
    """``python -m services.<name>``'s parser, with ``--grpc-port`` (when it serves gRPC)
    and ``--http-port``."""
    p = argparse.ArgumentParser(prog=f"python -m services.{name}", description=description)
    if grpc:
        p.add_argument("--grpc-port", type=int)
    p.add_argument("--http-port", type=int)
    return p


def load_settings(kind: type[S], section: str, args: argparse.Namespace,
                  options: Sequence[str],
                  more: Callable[[S], dict[str, Any]] | None = None) -> S:
    """Section `section` of `kind`, with the `options` the command line gave (and what
    `more` adds, from the section as read), validated (ValueError)."""
    from shared.config import load_section

    config = load_section(kind, section)
    overrides: dict[str, Any] = {}
    for name in options:
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if more is not None:
        overrides.update(more(config))
    config = dataclasses.replace(config, **overrides)  # type: ignore[type-var]
    config.validate()
    return config


def discovery_settings() -> tuple[Any, Any]:
    """(``[discovery]``, the registry to use: an embedded one when nothing is configured,
    else None: the runtime opens the configured one)."""
    from shared.config import load_section
    from shared.discovery import DiscoveryConfig

    discovery = load_section(DiscoveryConfig, "discovery")
    registry = None
    if discovery == DiscoveryConfig() and "SIPMESH_DISCOVERY_URL" not in os.environ:
        from shared.discovery.memory import MemoryRegistry

        registry = MemoryRegistry()  # standalone: no `sipmesh up` around
    return discovery, registry


def service_runtime(name: str, config: HttpSettings, *, section: str = "",
                    drain_timeout: float | None = None) -> ServiceRuntime:
    """The runtime of a service that handles no SIP itself; `drain_timeout` defaults to
    5 s more than the drain grace."""
    section = section or name
    discovery, registry = discovery_settings()
    env = f"SIPMESH_{section.upper()}_HTTP_TOKEN"
    return ServiceRuntime(
        name, config=RuntimeConfig(
            host=config.http_host, port=config.http_port, advertise=config.http_advertise,
            token=config.http_token, drain_delay=config.drain_delay,
            drain_grace=config.drain_grace,
            drain_timeout=5.0 + config.drain_grace if drain_timeout is None else drain_timeout,
            token_setting=f"[{section}] http_token ({env})"),
        discovery=discovery, registry=registry, sip_handling=False)


def cluster_node(runtime: ServiceRuntime, section: str) -> ClusterNode:
    """The service's cluster node, from ``[<section>.cluster]``, its MI commands added to
    the runtime (a node's local MI runs in this process)."""
    from shared.cluster import ClusterConfig, ClusterNode, register_mi, run_local_mi
    from shared.config import load_section

    cluster = ClusterNode(load_section(ClusterConfig, f"{section}.cluster"),
                          events=runtime.events, registry=runtime.registry,
                          mi_runner=lambda cmd, params: run_local_mi(runtime, cmd, params))
    register_mi(runtime, cluster)
    return cluster


class GrpcApi:
    """A service's gRPC server (see the module docstring)."""

    def __init__(self, runtime: ServiceRuntime, config: GrpcSettings, service: str,
                 add: Callable[[grpc.aio.Server], None]) -> None:
        self.runtime = runtime
        self.config = config
        self.service = service
        self.add = add
        self.servers: list[GrpcServer] = []
        runtime.ready_check("grpc", lambda: bool(self.servers))  # /ready: serving its API

    @property
    def serving(self) -> bool:
        return bool(self.servers)

    async def start(self) -> None:
        config = self.config
        srv = await start_grpc_server([self.add], services=[self.service],
                                      host=config.grpc_host, port=config.grpc_port)
        self.servers.append(srv)
        host = config.grpc_advertise or (
            self.runtime.address if config.grpc_host in ("0.0.0.0", "::") else config.grpc_host)
        self.runtime.meta["grpc"] = f"{host}:{srv.port}"

    async def stop(self) -> None:
        for srv in self.servers:
            await srv.stop(self.config.drain_grace)  # finish the RPCs in flight


async def serve_announced(runtime: ServiceRuntime, line: Callable[[], str], *,
                          ready: Callable[[], bool] = lambda: True) -> None:
    """Serves until stopped; once the HTTP endpoint listens and `ready()`, prints `line()`
    (one stable line on stdout: tests and `sipmesh up` read it)."""

    async def announce() -> None:
        while not runtime.port or not ready():
            await asyncio.sleep(0.01)  # start-up of this very process
        say(line())

    announcer = asyncio.create_task(announce())
    try:
        await runtime.serve()
    finally:
        announcer.cancel()


def service_main(name: str, load: Callable[[], M],
                 serve: Callable[[M], Coroutine[Any, Any, None]]) -> int:
    """A service process: its settings, logging, then `serve` (on uvloop when the
    settings' `uvloop` says so)."""
    from shared.config import EXIT_CONFIG
    from shared.service import configure_logging, run_service
    from shared.service.parent import die_with_parent_from_env

    die_with_parent_from_env()  # started by `sipmesh up`: end with it, even on its SIGKILL
    try:
        config = load()
    except ValueError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(name, level=config.log_level)

    async def run() -> None:
        await serve(config)

    if getattr(config, "uvloop", False):
        run_service(run)
    else:
        asyncio.run(run())
    return 0
