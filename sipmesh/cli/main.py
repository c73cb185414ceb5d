"""Entry point of the `sipmesh` console script.

Each group of commands lives in its own module with a `register(app)` function, so the
commands for SIP tooling and for running the mesh can grow independently.
"""

from __future__ import annotations

import typer

from services.dialog import cdr_export
from sipmesh.cli import (
    address_cmd,
    dispatcher_cmd,
    import_cmd,
    mesh_cmd,
    parse_cmd,
    rtpengine_cmd,
    user_cmd,
)
from sipmesh.cli import events_cmd as events_cli


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="sipmesh",
        help="SipMesh: a clustered SIP platform as a mesh of services.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    def _print_version(value: bool) -> None:
        if value:
            from shared import compiled
            from shared.service.version import CONTRACTS_VERSION, MESH_VERSION

            typer.echo(f"sipmesh {MESH_VERSION} (contracts {CONTRACTS_VERSION}, "
                       f"SIP core: {compiled.mode()})")
            raise typer.Exit(0)

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", help="Print the release and exit.",
                                     is_eager=True, callback=_print_version),
    ) -> None:
        """SipMesh: a clustered SIP platform as a mesh of services."""

    parse_cmd.register(app)
    mesh_cmd.register(app)
    events_cli.register(app)
    user_cmd.register(app)
    rtpengine_cmd.register(app)
    address_cmd.register(app)
    dispatcher_cmd.register(app)
    import_cmd.register(app)
    cdr_export.register(app)
    return app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
