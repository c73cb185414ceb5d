"""Console scripts of the deployable units: ``sipmesh-<service>`` runs one service alone,
exactly as ``python -m <module>`` does (``--version`` included); see ``[project.scripts]``.

The unit list is the catalog's (:data:`sipmesh.catalog.SERVICES`), so a new service is a
deployable unit as soon as it is in the catalog; its console script is one more line in
pyproject.toml (``tests/unit/test_deploy_units.py`` checks both lists agree).
"""

from __future__ import annotations

import runpy
import sys

from sipmesh.catalog import SERVICES


def run(name: str) -> None:
    """Runs service ``name``'s ``__main__`` with this process's arguments."""
    [spec] = [s for s in SERVICES if s.name == name]
    sys.argv[0] = f"sipmesh-{name}"
    runpy.run_module(spec.module, run_name="__main__", alter_sys=True)


def gateway() -> None:
    run("gateway")


def edge() -> None:
    run("edge")


def registrar() -> None:
    run("registrar")


def media() -> None:
    run("media")


def freeswitch() -> None:
    run("freeswitch")


def dialog() -> None:
    run("dialog")


def siprec() -> None:
    run("siprec")


def presence() -> None:
    run("presence")
