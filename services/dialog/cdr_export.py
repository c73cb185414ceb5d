"""``sipmesh cdr export --since ... [--until ...] --format csv|json``: CDRs for billing
(step 3 of the README's billing flow, for systems that import files rather than consume
RabbitMQ).

The store is the dialog service's (``[dialog] cdr_url``: a SQLite file by default, or a
``postgresql://`` DSN; ``--store`` overrides; ``--table`` the table, default ``acc``).
``--since``/``--until`` take an ISO-8601 time (``2026-12-06T10:00:00Z``, a date, or a
time without zone meaning UTC) or a span back from now (``90s``, ``15m``, ``2h``, ``7d``).
Rows come oldest first, one per call (answered and missed), with OpenSIPS's acc columns
then caller, callee, source_ip, destination, end_reason, extra (CSV: a JSON object),
missed, node, event_sent. Exit codes: 0 done, 2 bad input or store unreachable.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from services.dialog.store import COLUMNS, open_cdr_store

_SPAN = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO-8601 time (UTC when no zone is given) or a span back from `now`."""
    now = now or dt.datetime.now(dt.UTC)
    text = text.strip()
    span = _SPAN.match(text)
    if span:
        return now - dt.timedelta(seconds=int(span[1]) * _UNITS[span[2]])
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO-8601 time nor a span like 15m") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([json.dumps(row[c], sort_keys=True) if c == "extra" else
                         str(row[c]).lower() if isinstance(row[c], bool) else row[c]
                         for c in COLUMNS])
    return out.getvalue()


def _location(store: str | None) -> str:
    if store:
        return store
    from services.dialog.config import DialogConfig
    from shared.config import ConfigError, load_section

    try:
        return load_section(DialogConfig, "dialog").cdr_location
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    cdr = typer.Typer(help="Call detail records (the dialog service's acc table).",
                      no_args_is_help=True)
    app.add_typer(cdr, name="cdr")

    @cdr.command("export")
    def export(
        since: Annotated[str | None, typer.Option(help="from (ISO-8601 or a span: 15m, 2h)")]
        = None,
        until: Annotated[str | None, typer.Option(help="up to, excluded")] = None,
        fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
        store: Annotated[str | None, typer.Option(
            help="SQLite file or postgresql:// DSN (default: \\[dialog] cdr_url)")] = None,
        table: Annotated[str, typer.Option(help="the CDR table")] = "acc",
    ) -> None:
        """Writes the CDRs of a time window to stdout, oldest first."""
        if fmt not in ("csv", "json"):
            typer.echo("error: --format is csv or json", err=True)
            raise typer.Exit(2)
        try:
            start = parse_time(since) if since else None
            end = parse_time(until) if until else None
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        location = _location(store)

        async def read() -> list[dict[str, Any]]:
            cdrs = open_cdr_store(location, table=table)
            await cdrs.open()
            try:
                return await cdrs.export(start, end)
            finally:
                await cdrs.close()

        try:
            rows = asyncio.run(read())
        except Exception as exc:
            typer.echo(f"error: cannot read the CDR store: {exc}", err=True)
            raise typer.Exit(2) from None
        if fmt == "json":
            sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        else:
            sys.stdout.write(to_csv(rows))
