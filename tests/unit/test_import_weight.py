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

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The service processes (`python -m <package>`), then the `sipmesh` command and the
# supervisor of `sipmesh up` (which need rich for their tables).
SERVICES = (
    "services.edge.app", "services.registrar.app", "services.dialog.app",
    "services.presence.app", "services.media.app", "services.siprec.app",
    "services.freeswitch.app", "gateway.__main__",
)
COMMANDS = ("sipmesh.cli.main", "sipmesh.supervisor")
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
