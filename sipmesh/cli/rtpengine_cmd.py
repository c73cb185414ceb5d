"""``sipmesh rtpengine add|rm|list``: the provisioned rtpengine sets (OpenSIPS 2.4's
``rtpengine`` table: ``socket``, ``set_id``), edited in the media broker's database
(``[media] db_url``: a SQLite file by default, or a ``postgresql://`` DSN; ``--db``
overrides). The brokers read the table at start and on MI ``rtpengine_reload``::

    sipmesh rtpengine add udp:127.0.0.1:2223 --set 1 --weight 3
    sipmesh rtpengine list
    sipmesh rpc rtpengine_reload

Exit codes: 0 done, 1 nothing to remove, 2 bad input or database unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from services.media.sets import SetError, parse_socket
from services.media.store import open_media_store
from sipmesh.cli.tables import run_on

DbOption = Annotated[str | None, typer.Option(
    "--db", help=escape("SQLite file or postgresql:// DSN (default: [media] db_url)"))]
SetOption = Annotated[int, typer.Option("--set", min=0, help="the set id (0: default set)")]


def _location(db: str | None) -> tuple[str, str]:
    from services.media.config import MediaConfig
    from shared.config import ConfigError, load_section

    try:
        config = load_section(MediaConfig, "media")
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    return db or config.store_location, config.db_table


def _run(db: str | None, action: Any) -> Any:
    location, table = _location(db)
    return run_on(lambda: open_media_store(location, table=table), "rtpengine table", action)


def register(app: typer.Typer) -> None:
    """Adds the ``sipmesh rtpengine`` group to the app."""
    group = typer.Typer(help="Provision rtpengine instances for the media broker.",
                        no_args_is_help=True)
    app.add_typer(group, name="rtpengine")

    @group.command("add")
    def add(socket: Annotated[str, typer.Argument(help="udp:HOST:PORT (the ng socket)")],
            set_id: SetOption = 0,
            weight: Annotated[int, typer.Option(min=0, help="share of calls in its set")] = 1,
            db: DbOption = None) -> None:
        """Add an rtpengine instance to a set."""
        try:
            parse_socket(socket)
        except SetError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        value = socket if weight == 1 else f"{socket}={weight}"

        async def action(store: Any) -> int:
            return int(await store.add(value, set_id))

        row = _run(db, action)
        typer.echo(f"added {value} to set {set_id} (id {row}); MI rtpengine_reload applies it")

    @group.command("rm")
    def rm(socket: Annotated[str, typer.Argument(help="udp:HOST:PORT[=WEIGHT] as listed")],
           set_id: Annotated[int | None, typer.Option("--set", min=0)] = None,
           db: DbOption = None) -> None:
        """Remove an rtpengine instance (from every set, or from --set)."""

        async def action(store: Any) -> int:
            removed = int(await store.remove(socket, set_id))
            if not removed and "=" not in socket:
                rows = [r for r in await store.rows() if r.socket.partition("=")[0] == socket
                        and (set_id is None or r.set_id == set_id)]
                for r in rows:
                    removed += int(await store.remove(r.socket, r.set_id))
            return removed

        removed = _run(db, action)
        if not removed:
            typer.echo(f"error: {socket} is not provisioned", err=True)
            raise typer.Exit(1)
        typer.echo(f"removed {socket} ({removed} row{'s' if removed > 1 else ''}); "
                   "MI rtpengine_reload applies it")

    @group.command("list")
    def list_(db: DbOption = None,
              json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
        """List the provisioned instances."""

        async def action(store: Any) -> Any:
            return await store.rows()

        rows = _run(db, action)
        if json_out:
            import json

            typer.echo(json.dumps([{"id": r.id, "socket": r.socket, "set_id": r.set_id}
                                   for r in rows]))
            return
        if not rows:
            typer.echo("no rtpengine provisioned")
            return
        typer.echo(f"{'id':>4}  {'set':>4}  socket")
        for r in rows:
            typer.echo(f"{r.id:>4}  {r.set_id:>4}  {r.socket}")
