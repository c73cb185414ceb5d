"""What a process loads at start on the embedded defaults: not the optional backends.

Every service process, the gateway and the ``sipmesh`` command pay their imports at each
start, and the test meshes start hundreds of them. The libraries of the optional backends
(py-consul with requests and urllib3 for ``[discovery] backend = consul``; aio_pika for
RabbitMQ events or subscribers) cost ~0.1 s of CPU per process together, so they are
imported where the backend is opened, never at module level; and structlog is imported without rich
(~60 ms more; ``shared/__init__.py``). One child process imports every entry point (the
modules a ``python -m`` start runs) and names what it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sipmesh.cli.main import COMMANDS as CLI_COMMANDS
from sipmesh.cli.main import module_commands

ROOT = Path(__file__).resolve().parents[2]
# The service processes (`python -m <package>`), then the `sipmesh` command and the
# supervisor of `sipmesh up` (which need rich for their tables), with every module of a
# command group (`sipmesh.cli.main` imports them lazily, the one a command needs).
SERVICES = (
    "services.edge.app", "services.registrar.app", "services.dialog.app",
    "services.presence.app", "services.media.app", "services.siprec.app",
    "services.freeswitch.app", "gateway.__main__",
)
COMMANDS = ("sipmesh.cli.main", *dict.fromkeys(CLI_COMMANDS.values()), "sipmesh.supervisor")
# Loaded only by the backend that needs it (shared/discovery/config.py, shared/service/
# runtime.py, gateway/events/service.py and transports.py, sipmesh/cli/events_cmd.py).
OPTIONAL = ("consul", "requests", "urllib3", "aio_pika", "aiormq", "pamqp")
SCRIPT = f"""
import importlib, sys
def loaded(names):
    return " ".join(sorted(m for m in names if m in sys.modules)) or "-"
for name in {SERVICES!r}:
    importlib.import_module(name)
print(loaded({OPTIONAL!r} + ("rich",)))
for name in {COMMANDS!r}:
    importlib.import_module(name)
print(loaded({OPTIONAL!r}))
"""


def test_no_entry_point_imports_an_optional_backend() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    # Line 1, the services: nor rich either, which structlog would import (shared/__init__.py).
    assert done.stdout.splitlines() == ["-", "-"]


def test_the_optional_backends_are_importable() -> None:
    # The other side of the guard above: what is imported late still imports (its module
    # names are right, it is installed), in this process, where it costs nothing more.
    for name in OPTIONAL:
        __import__(name)


# `sipmesh <command>` imports the module of that command only (sipmesh/cli/main.py): the
# test meshes run the command ~100 times per suite, and importing every group (the
# supervisor, aiohttp, the importer...) cost ~0.3 s a start. One child process per command
# line runs it as the console script does and names the modules of the CLI it loaded.
CLI_RUN = """
import contextlib, io, json, sys
from sipmesh.cli.main import build_app
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        build_app()(sys.argv[1:], prog_name="sipmesh")
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "out": out.getvalue(),
                  "loaded": sorted(m for m in sys.modules if m.startswith(
                      ("sipmesh", "services", "gateway", "aiohttp")))}))
"""
HEAVY = ("aiohttp", "sipmesh.supervisor", "sipmesh.importer", "gateway")


def _cli(*argv: str) -> tuple[int, str, set[str]]:
    """Exit code, output and the loaded modules of interest of `sipmesh *argv`."""
    done = subprocess.run([sys.executable, "-c", CLI_RUN, *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return int(answer["code"] or 0), str(answer["out"]), set(answer["loaded"])


@pytest.mark.parametrize("command", ["user", "parse"])
def test_a_command_imports_only_its_own_group(command: str) -> None:
    code, out, loaded = _cli(command, "--help")
    assert code == 0
    assert "Usage: sipmesh " + command in out
    groups = set(CLI_COMMANDS.values())
    assert loaded & groups == {CLI_COMMANDS[command]}
    assert not {m for m in loaded if m.startswith(HEAVY)}, sorted(loaded)


def test_the_help_lists_every_command_in_order() -> None:
    code, shown, _ = _cli("--help")
    assert code == 0
    rows = [line.split()[1] for line in shown.splitlines()
            if line.startswith("│ ") and line.split()[1] in CLI_COMMANDS]
    assert rows == list(CLI_COMMANDS)


def test_the_lazy_table_names_what_each_module_registers() -> None:
    # Both ways: every command a module registers is in the table under that module, and
    # the table names no command its module does not register.
    registered = {name: module for module in dict.fromkeys(CLI_COMMANDS.values())
                  for name in module_commands(module)}
    assert registered == CLI_COMMANDS
