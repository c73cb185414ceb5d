"""``sipmesh user add|rm|passwd AOR [PASSWORD]``: subscribers, as opensips-cli's user module.

The store is the registrar's (``[registrar] store``: a SQLite file by default, or a
``postgresql://`` DSN; ``--store`` overrides). Only HA1 hashes are written (MD5 and
SHA-256 of ``user:domain:password``); a password not given on the command line is asked
for twice without echo. Exit codes: 0 done, 1 refused (exists / no such user), 2 bad input
or store unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.registrar.location import RegisterError, parse_aor
from services.registrar.subscribers import SubscriberExists, open_store
from sipmesh.cli.tables import StoreOption, registrar_store, run_on


def _split(aor: str) -> tuple[str, str]:
    try:
        user, _, domain = parse_aor(aor).partition("@")
    except RegisterError as exc:
        typer.echo(f"error: {aor!r} is not user@domain ({exc.reason})", err=True)
        raise typer.Exit(2) from None
    return user, domain


def _password(given: str | None) -> str:
    if given is not None:
        return given
    value: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return value


def _run(store: str | None, action: Any) -> Any:
    location = registrar_store(store)
    return run_on(lambda: open_store(location), "subscriber store", action)


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

        _run(store, action)
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

        if not _run(store, action):
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

        if not _run(store, action):
            typer.echo(f"error: no subscriber {user}@{domain}", err=True)
            raise typer.Exit(1)
        typer.echo(f"removed {user}@{domain}")
