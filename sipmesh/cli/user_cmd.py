"""``sipmesh user add|rm|passwd AOR [PASSWORD]``: subscribers, as opensips-cli's user module.

The store is the registrar's (``[registrar] store``: a SQLite file by default, or a
``postgresql://`` DSN; ``--store`` overrides). Only HA1 hashes are written (MD5 and
SHA-256 of ``user:domain:password``); a password not given on the command line is asked
for twice without echo. Exit codes: 0 done, 1 refused (exists / no such user), 2 bad input
or store unreachable.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.markup import escape  # help texts render as rich markup: keep [section] literal

from services.registrar.location import RegisterError, parse_aor
from services.registrar.subscribers import SubscriberExists, open_store

StoreOption = Annotated[str | None, typer.Option(
    "--store", help=escape("SQLite file or postgresql:// DSN (default: [registrar] store)"))]


def _split(aor: str) -> tuple[str, str]:
    try:
        user, _, domain = parse_aor(aor).partition("@")
    except RegisterError as exc:
        typer.echo(f"error: {aor!r} is not user@domain ({exc.reason})", err=True)
        raise typer.Exit(2) from None
    return user, domain


def _location(store: str | None) -> str:
    if store:
        return store
    from services.registrar.config import RegistrarConfig
    from shared.config import ConfigError, load_section

    try:
        return load_section(RegistrarConfig, "registrar").store_location
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _password(given: str | None) -> str:
    if given is not None:
        return given
    value: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return value


def _run(location: str, action: Any) -> Any:
    async def go() -> Any:
        store = open_store(location)
        try:
            await store.open()
        except Exception as exc:
            typer.echo(f"error: cannot open the subscriber store: {exc}", err=True)
            raise typer.Exit(2) from None
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(go())


def register(app: typer.Typer) -> None:
    """Adds the ``sipmesh user`` group to the app."""
    users = typer.Typer(help="Manage subscribers (digest users) of the registrar.",
                        no_args_is_help=True)
    app.add_typer(users, name="user")

    @users.command("add")
    def add(aor: Annotated[str, typer.Argument(help="user@domain")],
            password: Annotated[str | None, typer.Argument()] = None,
            store: StoreOption = None) -> None:
        """Add a subscriber."""
        user, domain = _split(aor)
        secret = _password(password)

        async def action(s: Any) -> None:
            try:
                await s.add(user, domain, secret)
            except SubscriberExists:
                typer.echo(f"error: {user}@{domain} already exists", err=True)
                raise typer.Exit(1) from None

        _run(_location(store), action)
        typer.echo(f"added {user}@{domain}")

    @users.command("passwd")
    def passwd(aor: Annotated[str, typer.Argument(help="user@domain")],
               password: Annotated[str | None, typer.Argument()] = None,
               store: StoreOption = None) -> None:
        """Change a subscriber's password."""
        user, domain = _split(aor)
        secret = _password(password)

        async def action(s: Any) -> bool:
            return bool(await s.set_password(user, domain, secret))

        if not _run(_location(store), action):
            typer.echo(f"error: no subscriber {user}@{domain}", err=True)
            raise typer.Exit(1)
        typer.echo(f"password changed for {user}@{domain}")

    @users.command("rm")
    def rm(aor: Annotated[str, typer.Argument(help="user@domain")],
           store: StoreOption = None) -> None:
        """Remove a subscriber."""
        user, domain = _split(aor)

        async def action(s: Any) -> bool:
            return bool(await s.remove(user, domain))

        if not _run(_location(store), action):
            typer.echo(f"error: no subscriber {user}@{domain}", err=True)
            raise typer.Exit(1)
        typer.echo(f"removed {user}@{domain}")
