"""Help texts show what they say: typer renders them as rich markup, where ``[registrar]``
is a tag that silently disappears (``(default:  store)``)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from rich.markup import escape
from typer.testing import CliRunner

from sipmesh.cli.main import build_app


def _commands() -> list[tuple[list[str], Any]]:
    root = typer.main.get_command(build_app())
    out: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        out.append((path, cmd))
        if hasattr(cmd, "commands"):  # a group (typer vendors its click)
            for name, sub in cmd.commands.items():
                walk([*path, name], sub)

    walk([], root)
    return out


def _unmarked(text: str) -> str:
    """What a help text must show: the text itself, without rich's escapes."""
    return text.replace("\\[", "[")


@pytest.mark.parametrize("path,command", _commands(), ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_every_option_help_is_shown_verbatim(path: list[str], command: Any) -> None:
    result = CliRunner().invoke(build_app(), [*path, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for param in command.params:
        text = getattr(param, "help", None)
        if text:
            assert _unmarked(text) in result.output, (path, param.name, result.output)


def test_the_two_reported_texts() -> None:
    runner = CliRunner()
    user_add = runner.invoke(build_app(), ["user", "add", "--help"], env={"COLUMNS": "250"})
    assert "(default: [registrar] store)" in user_add.output
    status = runner.invoke(build_app(), ["status", "--help"], env={"COLUMNS": "250"})
    assert "(default: [discovery] url)" in status.output


def test_detector_sees_a_lost_tag() -> None:
    # Unescaped, rich eats the tag: the check above would fail on it.
    app = typer.Typer()

    @app.command()
    def f(store: str = typer.Option("", help="x (default: [registrar] store)")) -> None:
        """Doc."""

    @app.command()
    def g() -> None:
        """Doc."""

    shown = CliRunner().invoke(app, ["f", "--help"], env={"COLUMNS": "250"}).output
    assert "(default: [registrar] store)" not in shown
    assert escape("[registrar]") == "\\[registrar]"
