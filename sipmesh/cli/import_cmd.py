"""``sipmesh import opensips --db URL``: bring an OpenSIPS 2.4 database over.

Reads the OpenSIPS database at ``--db`` (MySQL/MariaDB or PostgreSQL, read only) and
writes its ``subscriber``, ``location``, ``address`` and ``dispatcher`` tables into
SipMesh's stores (:mod:`sipmesh.importer.run` says where), drawing a progress bar per
table and a summary (rich). Exit codes: 0 imported (rows may have been skipped: the
summary says which and why), 1 nothing found to import, 2 a database cannot be reached or
a setting is wrong (one line, never a traceback).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.markup import escape  # help texts render as rich markup: keep [section] literal
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from shared.config import ConfigError
from sipmesh.cli.mesh_cmd import console
from sipmesh.importer.run import TABLES, TableReport, Targets, import_opensips
from sipmesh.importer.source import SourceError, open_source


def _targets(store: str | None, location_db: str | None) -> Targets:
    from services.registrar.config import RegistrarConfig
    from shared.config import load_section

    try:
        cfg = load_section(RegistrarConfig, "registrar")
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    where = store or cfg.store_location
    return Targets(store=where, location_db=location_db or cfg.db_url or where,
                   location_table=cfg.table)


def summary(reports: list[TableReport]) -> Table:
    table = Table(title="OpenSIPS import", header_style="bold", box=None, pad_edge=False)
    for title in ("TABLE", "READ", "IMPORTED", "SKIPPED", "NOTES"):
        table.add_column(title)
    for r in reports:
        if not r.found:
            table.add_row(r.table, "-", "-", "-", "[dim]no such table in the source[/dim]")
            continue
        why = "; ".join(f"{n} {escape(reason)}" for reason, n in r.skipped.most_common())
        notes = "; ".join(f"{n} {escape(note)}" for note, n in r.notes.most_common())
        table.add_row(r.table, str(r.read), f"[green]{r.imported}[/green]",
                      f"{sum(r.skipped.values())}" + (f" ({why})" if why else ""), notes)
    return table


def register(app: typer.Typer) -> None:
    """Adds the ``sipmesh import`` group to the app."""
    group = typer.Typer(help="Bring data over from another SIP server.", no_args_is_help=True)
    app.add_typer(group, name="import")

    @group.command("opensips")
    def opensips(
        db: Annotated[str, typer.Option(
            "--db", help="the OpenSIPS 2.4 database: mysql://user:pass@host/db or "
                         "postgresql://user:pass@host/db")],
        store: Annotated[str | None, typer.Option(
            "--store", help=escape("SipMesh's store: SQLite file or postgresql:// DSN "
                                   "(default: [registrar] store)"))] = None,
        location_db: Annotated[str | None, typer.Option(
            "--location-db", help=escape("where bindings go (default: [registrar] db_url, "
                                         "else the store)"))] = None,
        domain: Annotated[str, typer.Option(
            "--domain", help="domain of location rows without one (OpenSIPS use_domain=0)"
        )] = "",
        only: Annotated[list[str] | None, typer.Option(
            "--table", help=f"import only these tables ({', '.join(TABLES)})")] = None,
    ) -> None:
        """Import subscribers, registrations, trusted addresses and dispatcher sets from an
        OpenSIPS 2.4 database (read only; safe to run again)."""
        tables = tuple(only or TABLES)
        unknown = sorted(set(tables) - set(TABLES))
        if unknown:
            typer.echo(f"error: unknown table(s) {', '.join(unknown)}: "
                       f"choose among {', '.join(TABLES)}", err=True)
            raise typer.Exit(2)
        targets = _targets(store, location_db)
        out = console()
        try:
            source = open_source(db)
        except SourceError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

        async def run() -> list[TableReport]:
            await source.open()
            out.print(f"reading {escape(source.description)} (OpenSIPS 2.4 tables: "
                      f"{', '.join(tables)})")
            try:
                with Progress(TextColumn("{task.description:<11}"), BarColumn(),
                              MofNCompleteColumn(), console=out, transient=False) as bars:
                    tasks: dict[str, TaskID] = {}

                    def progress(table: str, done: int, total: int) -> None:
                        if table not in tasks:
                            tasks[table] = bars.add_task(table, total=total)
                        bars.update(tasks[table], completed=done)

                    return await import_opensips(source, targets, now=time.time(),
                                                 tables=tables, default_domain=domain,
                                                 progress=progress)
            finally:
                await source.close()

        try:
            reports = asyncio.run(run())
        except SourceError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ConfigError as exc:  # the target is an OpenSIPS table, a mysql:// store...
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except typer.Exit:
            raise
        except Exception as exc:  # a driver's error: one line, never a traceback
            typer.echo(f"error: import stopped: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(2) from None
        out.print(summary(reports))
        out.print(f"into: subscribers, address, dispatcher -> {escape(targets.store)}; "
                  f"bindings -> {escape(targets.location_db)} (table "
                  f"{targets.location_table}: loaded when a registrar starts, by default in "
                  f"cluster mode none)")
        if not any(r.found for r in reports):
            typer.echo("error: none of the OpenSIPS tables was found in the source", err=True)
            raise typer.Exit(1)
