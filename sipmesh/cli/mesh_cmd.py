"""``sipmesh up``, ``sipmesh status`` and ``sipmesh rpc``: running and poking the mesh.

* ``up`` runs the supervisor (:mod:`sipmesh.supervisor`) in the foreground;
  ``up --nodes N`` runs N nodes of every clustered service (one cluster per service) and
  the cluster demo, so a cluster can be watched on one machine; ``up --edges N`` runs N
  anycast edge nodes on the edge's one address (README "Anycast").
* ``status`` lists every registered instance with its address and health (registry TTL
  state and its ``/health`` answer); it exits 1 while any instance is unhealthy or a
  service the supervisor expects has no passing instance, 2 when the registry is down.
* ``restart SERVICE`` asks the supervisor for a rolling restart of one service (one
  instance at a time, each ready again before the next: :mod:`sipmesh.supervisor`).
* ``rpc METHOD [ARGS...]`` calls the gateway: ``name=value`` arguments are sent as a named
  object, others as a positional array (as opensips-cli does); the result is printed as
  indented text, or as JSON with ``--json``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import signal
from typing import Annotated, Any, TextIO

import aiohttp
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree  # help texts render as rich markup: keep [section] literal

from gateway.config import GatewayConfig
from shared.config import ConfigError, load_section
from shared.discovery import DiscoveryConfig, Instance, RegistryError, open_registry
from shared.rpc import JsonRpcClient, RpcError, RpcTransportError
from shared.service.logsetup import configure_logging
from sipmesh.catalog import SERVICES, ChildSpec
from sipmesh.supervisor import MeshConfig, Supervisor

# Commands whose positional arguments form one array parameter (opensips-cli does the same).
ARRAY_PARAM_COMMANDS = {"get_statistics", "list_statistics", "reset_statistics"}


def _load(cls: Any, section: str) -> Any:
    try:
        return load_section(cls, section)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _runnable(module: str) -> bool:
    """True when ``python -m module`` can run (a module, or a package with __main__)."""
    try:
        found = importlib.util.find_spec(module)
        if found is not None and found.submodule_search_locations is not None:
            found = importlib.util.find_spec(f"{module}.__main__")
    except ImportError:
        return False
    return found is not None


def _selected(cfg: MeshConfig) -> list[ChildSpec]:
    wanted = set(cfg.services) if cfg.services else None
    specs = []
    for spec in SERVICES:
        if wanted is not None and spec.name not in wanted:
            continue
        if not _runnable(spec.module):
            typer.echo(f"skipped {spec.name}: module {spec.module} not present")
            continue
        specs.append(spec)
    return specs


def up(
    nodes: Annotated[int | None, typer.Option(
        help="run N nodes of every clustered service, and the cluster demo "
             "(default: mesh.nodes setting, 0 = unclustered)")] = None,
    edges: Annotated[int | None, typer.Option(
        help="run N >= 2 anycast edge nodes sharing the edge's listen addresses "
             "(default: mesh.edges setting, 0 = one plain edge)")] = None,
) -> None:
    """Start every service of the mesh in the foreground (Ctrl-C stops them all)."""
    cfg: MeshConfig = _load(MeshConfig, "mesh")
    if nodes is not None:
        cfg = dataclasses.replace(cfg, nodes=nodes)
    if edges is not None:
        cfg = dataclasses.replace(cfg, edges=edges)
    try:
        cfg.validate()
    except ValueError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    gw: GatewayConfig = _load(GatewayConfig, "gateway")
    configure_logging("supervisor", level=gw.log_level, json=gw.log_json)
    specs = _selected(cfg)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Supervisor(specs, cfg).run(stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        typer.echo(f"sipmesh up: cannot start: {exc}", err=True)
        raise typer.Exit(2) from exc
    except ValueError as exc:  # e.g. an [edge] listen the anycast edges cannot share
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


async def _health(session: aiohttp.ClientSession, inst: Instance) -> str:
    url = inst.meta.get("health_url")
    if not url:
        return inst.status
    if not inst.passing:
        return inst.status
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            body = await resp.json(content_type=None)
            return str(body.get("status", "critical")) if resp.status == 200 else (
                str(body.get("status", f"http {resp.status}")))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return "unreachable"


async def _status(disc: DiscoveryConfig) -> tuple[list[tuple[str, str, str, str]], bool]:
    registry = open_registry(disc)
    try:
        instances = await registry.instances()
    finally:
        await registry.close()
    rows: list[tuple[str, str, str, str]] = []
    ok = True
    expected: set[str] = set()
    async with aiohttp.ClientSession() as session:
        for inst in instances:
            if inst.service == "supervisor":
                expected |= set(filter(None, inst.meta.get("expected", "").split(",")))
                continue
            health = await _health(session, inst)
            ok &= health == "passing"
            rows.append((inst.service, inst.id, f"{inst.address}:{inst.port}", health))
    for name in sorted(expected - {r[0] for r in rows if r[3] == "passing"}):
        if not any(r[0] == name for r in rows):
            rows.append((name, "-", "-", "missing"))
        ok = False
    if not rows:
        ok = False
    return rows, ok


def status(
    registry: Annotated[str, typer.Option(
        help=escape("registry URL (default: [discovery] url)"))] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List every service instance with its address and health."""
    disc: DiscoveryConfig = _load(DiscoveryConfig, "discovery")
    if registry:
        disc = DiscoveryConfig(backend="embedded", url=registry, ttl=disc.ttl)
    try:
        rows, ok = asyncio.run(_status(disc))
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps([dict(zip(("service", "id", "address", "health"), r,
                                        strict=True)) for r in rows], indent=2))
    elif not rows:
        typer.echo("no service instance registered")
    else:
        console().print(status_table(rows))
    raise typer.Exit(0 if ok else 1)


def _params(method: str, args: list[str]) -> Any:
    if not args:
        return None
    if all("=" in a and a.split("=", 1)[0].replace("_", "").isalnum() for a in args):
        named: dict[str, Any] = {}
        for a in args:
            key, value = a.split("=", 1)
            named[key] = value.split() if method in ARRAY_PARAM_COMMANDS else value
        return named
    return [args] if method in ARRAY_PARAM_COMMANDS else list(args)


def _scalar(value: Any) -> str:
    return escape(value if isinstance(value, str) else json.dumps(value))


def _grow(tree: Tree, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"[bold]{escape(str(key))}[/bold]"
            if isinstance(item, dict | list) and item:
                _grow(tree.add(name), item)
            else:
                tree.add(f"{name}: {_scalar(item)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list) and item:
                _grow(tree.add(f"[dim]{index}[/dim]"), item)
            else:
                tree.add(_scalar(item))
    else:
        tree.add(_scalar(value))


def render(value: Any) -> Tree:
    """A JSON value as a rich tree: ``key: value`` leaves, nested values below their key,
    list items under their index."""
    tree = Tree("", hide_root=True, guide_style="dim")
    _grow(tree, value)
    return tree


def status_table(rows: list[tuple[str, str, str, str]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("SERVICE", "ID", "ADDRESS", "HEALTH"):
        table.add_column(title)
    for service, ident, address, health in rows:
        style = "green" if health == "passing" else "red"
        table.add_row(service, ident, address, f"[{style}]{escape(health)}[/{style}]")
    return table


def console(file: TextIO | None = None) -> Console:
    """Stdout as rich draws it: in a terminal, to its width; piped or captured, with no
    width at all, so a long value is never wrapped or cut (rich crops trees to the
    console's width, 80 columns when it cannot ask a terminal)."""
    out = Console(file=file, highlight=False)
    if not out.is_terminal:
        out = Console(file=file, highlight=False, width=1_000_000, color_system=None)
    return out


def rpc(
    method: Annotated[str, typer.Argument(help="MI command, e.g. uptime, get_statistics")],
    args: Annotated[
        list[str] | None, typer.Argument(help="name=value pairs or positional values")
    ] = None,
    url: Annotated[str, typer.Option(
        help=escape("gateway MI URL (default: from [gateway])"))] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 10.0,
) -> None:
    """Call an MI command through the gateway and print the result."""
    gw: GatewayConfig = _load(GatewayConfig, "gateway")
    target = url or f"http://{gw.host if gw.host not in ('0.0.0.0', '::') else '127.0.0.1'}" \
        f":{gw.port}{gw.path}"

    async def call() -> Any:
        client = JsonRpcClient(target, token=gw.token or None, timeout=timeout)
        try:
            return await client.call(method, _params(method, args or []))
        finally:
            await client.close()

    try:
        result = asyncio.run(call())
    except RpcError as exc:
        detail = f" ({exc.data})" if exc.data not in (None, "") else ""
        typer.echo(f"error {exc.code}: {exc.message}{detail}", err=True)
        raise typer.Exit(1) from exc
    except RpcTransportError as exc:
        typer.echo(f"gateway unreachable at {target}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        console().print(render(result))


async def _rolling(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    client_timeout = aiohttp.ClientTimeout(total=timeout * 4 + 30)
    async with aiohttp.ClientSession(timeout=client_timeout) as session, \
            session.post(url, params={"timeout": str(timeout)}) as resp:
        return resp.status, await resp.json(content_type=None)


def restart(
    service: Annotated[str, typer.Argument(help="a service of the catalog, e.g. registrar")],
    timeout: Annotated[float, typer.Option(
        help="seconds each instance has to be ready again")] = 60.0,
    registry: Annotated[str, typer.Option(
        help=escape("the supervisor's registry URL (default: [discovery] url)"))] = "",
) -> None:
    """Rolling restart of one service of a running `sipmesh up`: one instance at a time,
    each drained on SIGTERM, started again, and ready before the next."""
    disc: DiscoveryConfig = _load(DiscoveryConfig, "discovery")
    base = (registry or disc.url).rstrip("/")
    try:
        code, body = asyncio.run(_rolling(f"{base}/restart/{service}", timeout))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        typer.echo(f"sipmesh restart: no supervisor at {base}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if "steps" not in body:
        typer.echo(f"sipmesh restart: {body.get('error', code)}", err=True)
        raise typer.Exit(2)
    for step in body["steps"]:
        state = "ready" if step["ready"] else "NOT ready"
        typer.echo(f"{step['child']}: pid {step['old_pid']} -> {step['pid']} {state} "
                   f"in {step['seconds']:g}s")
    raise typer.Exit(0 if body["ok"] else 1)


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the app."""
    app.command("up")(up)
    app.command("status")(status)
    app.command("rpc")(rpc)
    app.command("restart")(restart)


