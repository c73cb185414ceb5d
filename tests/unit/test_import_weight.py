"""What a process loads at start on the embedded defaults: not the optional backends.

Every service process, the gateway and the ``sipmesh`` command pay their imports at each
start, and the test meshes start hundreds of them. The libraries of the optional backends
(py-consul with requests and urllib3 for ``[discovery] backend = consul``; aio_pika for
RabbitMQ events or subscribers) cost ~0.1 s of CPU per process together, so they are
imported where the backend is opened, never at module level. One child process imports
every entry point (the modules a ``python -m`` start runs) and names what it loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = (
    "services.edge.app", "services.registrar.app", "services.dialog.app",
    "services.presence.app", "services.media.app", "services.siprec.app",
    "services.freeswitch.app", "gateway.__main__", "sipmesh.cli.main", "sipmesh.supervisor",
)
# Loaded only by the backend that needs it (shared/discovery/config.py, shared/service/
# runtime.py, gateway/events/service.py and transports.py, sipmesh/cli/events_cmd.py).
OPTIONAL = ("consul", "requests", "urllib3", "aio_pika", "aiormq", "pamqp")
SCRIPT = f"""
import importlib, sys
for name in {ENTRY_POINTS!r}:
    importlib.import_module(name)
print(" ".join(sorted(m for m in {OPTIONAL!r} if m in sys.modules)))
"""


def test_no_entry_point_imports_an_optional_backend() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_the_optional_backends_are_importable() -> None:
    # The other side of the guard above: what is imported late still imports (its module
    # names are right, it is installed), in this process, where it costs nothing more.
    for name in OPTIONAL:
        __import__(name)
