"""Architecture rules that code review alone would let slip.

The SIP core, the transaction layer and the cluster's decision modules are sans-IO: they
must never reach for sockets, an event loop, threads, a clock or gRPC, so they can be
driven by a fake clock in tests and by any transport.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANS_IO_PACKAGES = ["shared/sip", "shared/transaction"]
# Packages that hold adapters too: their sans-IO modules one by one.
SANS_IO_MODULES = [
    "shared/cluster/state.py", "shared/cluster/link.py", "shared/cluster/topology.py",
    "shared/cluster/sync.py", "shared/cluster/shtags.py", "shared/cluster/auth.py",
    "shared/cluster/antientropy.py", "shared/cluster/events.py",
]
FORBIDDEN = {"asyncio", "socket", "selectors", "threading", "uvloop", "time", "aiohttp", "grpc",
             "consul", "structlog"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", SANS_IO_PACKAGES)
def test_sans_io_packages_exist(package: str) -> None:
    assert _sources(package), f"{package} has no modules"


@pytest.mark.parametrize("module", SANS_IO_MODULES)
def test_sans_io_modules_exist(module: str) -> None:
    assert (ROOT / module).is_file(), f"{module} is gone: update SANS_IO_MODULES"


@pytest.mark.parametrize(
    "module",
    [p for pkg in SANS_IO_PACKAGES for p in _sources(pkg)]
    + [ROOT / m for m in SANS_IO_MODULES if (ROOT / m).is_file()] or [None],
    ids=lambda p: str(p.relative_to(ROOT)) if p else "none",
)
def test_sans_io_modules_import_no_io(module: Path | None) -> None:
    assert module is not None, "no sans-IO modules found"
    bad = _imports(module) & FORBIDDEN
    assert not bad, f"{module.relative_to(ROOT)} imports {sorted(bad)}: the core must stay sans-IO"


def test_detector_flags_an_io_import(tmp_path: Path) -> None:
    # The rule above is only worth something if the detector sees real imports.
    sample = tmp_path / "m.py"
    sample.write_text("import asyncio\nfrom socket import socket\nfrom .x import y\n")
    assert _imports(sample) == {"asyncio", "socket"}
