"""What the command groups that edit a table share (``sipmesh address``, ``dispatcher``,
``user``, ``rtpengine``): the ``--store`` option and the registrar's store it defaults to,
opening a table for one action (a store that cannot be opened: one line, exit 2; the table
is closed whatever the action does), and printing rows as text or JSON lines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import typer
from rich.markup import escape  # help texts render as rich markup: keep [section] literal

StoreOption = Annotated[str | None, typer.Option(
    "--store", help=escape("SQLite file or postgresql:// DSN (default: [registrar] store)"))]


def registrar_store(store: str | None) -> str:
    """`store`, else the registrar's (``[registrar] store``); a bad setting exits 2."""
    if store:
        return store
    from services.registrar.config import RegistrarConfig
    from shared.config import ConfigError, load_section

    try:
        return load_section(RegistrarConfig, "registrar").store_location
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def run_on(open_table: Callable[[], Any], what: str,
           action: Callable[[Any], Awaitable[Any]]) -> Any:
    """`action(table)` on the table `open_table()` makes, opened first and closed after;
    `what` names it in the error line of one that cannot be opened."""

    async def go() -> Any:
        table = open_table()
        try:
            await table.open()
        except Exception as exc:
            typer.echo(f"error: cannot open the {what}: {exc}", err=True)
            raise typer.Exit(2) from None
        try:
            return await action(table)
        finally:
            await table.close()

    return asyncio.run(go())


def echo_rows(rows: Sequence[Any], *, as_json: bool, fields: Sequence[str],
              text: Callable[[Any], str], none: str) -> None:
    """One line a row: `text(row)`, or a JSON object of its `fields`; `none` for an empty
    table (as text only: JSON lines print nothing)."""
    for row in rows:
        if as_json:
            typer.echo(json.dumps({name: getattr(row, name) for name in fields}))
        else:
            typer.echo(text(row))
    if not rows and not as_json:
        typer.echo(none)
