"""Entry point of the `sipmesh` console script.

Each group of commands lives in its own module with a `register(app)` function, so the
commands for SIP tooling and for running the mesh can grow independently.

The modules are imported lazily: `sipmesh <command>` imports the one module that registers
`<command>` (a run of `sipmesh user add` loads neither aiohttp nor the supervisor, ~0.4 s
less per start); `sipmesh --help` and unknown-command suggestions still see every command,
because the root group's command table names them all and loads one on first look-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer
from typer.core import TyperGroup

# Every top-level command, in the order `sipmesh --help` lists them, and the module whose
# `register(app)` adds it (tests/unit/test_import_weight.py checks both ways).
COMMANDS: dict[str, str] = {
    "parse": "sipmesh.cli.parse_cmd",
    "up": "sipmesh.cli.mesh_cmd",
    "status": "sipmesh.cli.mesh_cmd",
    "rpc": "sipmesh.cli.mesh_cmd",
    "restart": "sipmesh.cli.mesh_cmd",
    "events": "sipmesh.cli.events_cmd",
    "user": "sipmesh.cli.user_cmd",
    "rtpengine": "sipmesh.cli.rtpengine_cmd",
    "address": "sipmesh.cli.address_cmd",
    "dispatcher": "sipmesh.cli.dispatcher_cmd",
    "import": "sipmesh.cli.import_cmd",
    "cdr": "services.dialog.cdr_export",
}


def module_commands(module: str) -> dict[str, Any]:
    """The click commands `module`'s `register(app)` adds, by name (the module imported)."""
    app = typer.Typer()

    @app.callback()
    def _group() -> None:  # a callback makes typer build a group even for one command
        """Holder."""

    importlib.import_module(module).register(app)
    return dict(typer.main.get_group(app).commands)


class _LazyCommands(MutableMapping[str, Any]):
    """The root group's command table: every name of COMMANDS at once, each command built
    (its module imported, with the other commands it registers) when first looked up."""

    def __init__(self, loaded: MutableMapping[str, Any]) -> None:
        self._loaded = dict(loaded)

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded and name in COMMANDS:
            for other, command in module_commands(COMMANDS[name]).items():
                self._loaded.setdefault(other, command)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._loaded if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS) + sum(1 for name in self._loaded if name not in COMMANDS)

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._loaded


class LazyGroup(TyperGroup):
    """typer's group over `_LazyCommands`: resolving `sipmesh <command>` builds that one."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names only: nothing imported to list them


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="sipmesh",
        help="SipMesh: a clustered SIP platform as a mesh of services.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        cls=LazyGroup,
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

    return app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
