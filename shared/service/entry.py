"""``--version`` of each service's own entry point (docs/adr/0002-versioning.md).

Every service runs alone as ``python -m <module>`` or as its console script
(``sipmesh-gateway``, ``sipmesh-edge``, ``sipmesh-registrar``...: :mod:`sipmesh.units`);
both answer ``--version`` with the service's own version, the contracts it speaks and the
mesh release it was cut from, without starting anything.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from shared.service.say import say
from shared.service.version import CONTRACTS_VERSION, MESH_VERSION, service_version


def version_line(name: str) -> str:
    """``registrar 0.1.0 (contracts 0.1.0, sipmesh 0.1.0)``; the service's package must be
    imported already (it is, in its own ``__main__``)."""
    return (f"{name} {service_version(name)} (contracts {CONTRACTS_VERSION}, "
            f"sipmesh {MESH_VERSION})")


def exit_if_version(name: str, argv: Sequence[str] | None = None) -> None:
    """``--version`` among the arguments: print the version line and exit 0."""
    args = sys.argv[1:] if argv is None else argv
    if "--version" in args:
        say(version_line(name))
        raise SystemExit(0)
