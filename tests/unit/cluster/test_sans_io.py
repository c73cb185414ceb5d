"""The cluster's decision modules stay sans-IO: no sockets, loop, threads, clock or gRPC,
so they run on a fake clock in tests (time is always passed in as ``now``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLUSTER = Path(__file__).resolve().parents[3] / "shared" / "cluster"
FORBIDDEN = {"asyncio", "socket", "selectors", "threading", "uvloop", "time", "aiohttp", "grpc",
             "consul"}


@pytest.mark.parametrize("module", ["link.py", "topology.py", "sync.py"])
def test_decision_modules_import_no_io(module: str) -> None:
    tree = ast.parse((CLUSTER / module).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    assert not found & FORBIDDEN, f"{module} imports {sorted(found & FORBIDDEN)}"
