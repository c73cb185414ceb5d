"""Architecture rules that code review alone would let slip, checked on the source (AST).

1. **Sans-IO.** Protocol decisions live in sans-IO modules: no sockets, no event loop, no
   threads, no clock of their own (``now`` is passed in), no RPC stack. So a fake clock
   drives them in tests and any transport can carry them. :data:`SANS_IO` lists them;
   adding a module (or a whole package) to the rule is one line there.
2. **Layers.** ``shared`` is a library: it imports nothing from the services, the gateway
   or the application (``sipmesh``). The gateway imports no service; services import
   neither the gateway nor the application; ``contracts`` imports no code of the tree.
   The application (:mod:`sipmesh`) may import everything, and nothing imports it.
3. **Every module is classified.** A module of the tree that does I/O is an adapter (found
   by its imports); one that does none is either sans-IO (:data:`SANS_IO`, checked above) or
   application shell that decides no protocol (configuration, MI tables, entry points,
   stores' row mapping: :data:`SHELL_NAMES` and :data:`SHELL`). A new I/O-free module has
   to be put in one of the two, so a new protocol core cannot slip past rule 1.
4. **Tests mirror the packages they test.** ``tests/unit/<name>/`` holds the tests of the
   package ``<name>`` (``shared/<name>``, ``services/<name>``, ``gateway/<name>`` or
   ``sipmesh/<name>``), and each of its test modules imports that package (directly or
   through a helper module of the same test folder); ``tests/component/<name>/`` names a
   package too, or one of the few cross-cutting folders of :data:`CROSS_CUTTING_TESTS`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every sans-IO module of the tree: a package (every module under it) or one file.
SANS_IO: tuple[str, ...] = (
    "shared/sip",
    "shared/transaction",
    "shared/cluster/state.py",
    "shared/cluster/link.py",
    "shared/cluster/topology.py",
    "shared/cluster/sync.py",
    "shared/cluster/shtags.py",
    "shared/cluster/auth.py",
    "shared/cluster/antientropy.py",
    "shared/cluster/events.py",
    "shared/stats/load.py",
    "services/edge/core.py",
    "services/edge/context.py",
    "services/edge/validation.py",
    "services/edge/addresses.py",
    "services/edge/auth.py",
    "services/edge/best_response.py",
    "services/edge/counters.py",
    "services/edge/default_routing.py",
    "services/edge/routing.py",
    "services/edge/route_context.py",
    "services/edge/stateless.py",
    "services/edge/register_challenge.py",
    "services/edge/rr_signing.py",
    "services/edge/keepalive.py",
    "services/edge/tcp_limits.py",
    "services/edge/ratelog.py",
    "services/edge/permissions.py",
    "services/edge/pike.py",
    "services/edge/dispatcher.py",
    "services/edge/hep.py",
    "services/edge/pcap.py",
    "services/edge/trace_table.py",
    "services/media/ng.py",
    "services/media/flags.py",
    "services/media/sets.py",
    "services/media/stats.py",
    "services/freeswitch/esl.py",
    "services/freeswitch/handover.py",
    "services/freeswitch/balancing.py",
    "services/freeswitch/boxes.py",
    "services/dialog/states.py",
    "services/dialog/table.py",
    "services/dialog/model.py",
    "services/dialog/ownership.py",
    "services/dialog/cdr.py",
    "services/dialog/byes.py",
    "services/siprec/body.py",
    "services/siprec/metadata.py",
    "services/siprec/session.py",
    "services/presence/pidf.py",
    "services/presence/publications.py",
    "services/presence/subscriptions.py",
    "services/presence/core.py",
    "services/edge/uac_core.py",
    "services/edge/anycast.py",
    "services/registrar/digest.py",
    "services/registrar/location.py",
    "services/registrar/natping.py",
    "sipmesh/importer/rows.py",
    "gateway/targeting.py",
    "gateway/merging.py",
    "gateway/console/model.py",
)

# Modules (top-level names) a sans-IO module must not import.
IO_MODULES = frozenset({
    "asyncio", "socket", "selectors", "select", "ssl", "threading", "multiprocessing",
    "concurrent", "subprocess", "uvloop", "time", "aiohttp", "grpc", "grpc_health",
    "aio_pika", "aiormq", "asyncpg", "aiosqlite", "sqlite3", "redis", "consul", "requests",
    "urllib3", "httpx", "mmap", "fcntl",
})
# Calls that read the wall clock through datetime (``datetime.now()``, ``date.today()``).
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})
CLOCK_OWNERS = frozenset({"datetime", "date"})

# (importing package, packages it must not import)
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("shared", frozenset({"services", "gateway", "sipmesh"})),
    ("gateway", frozenset({"services", "sipmesh"})),
    ("services", frozenset({"gateway", "sipmesh"})),
    ("contracts", frozenset({"shared", "services", "gateway", "sipmesh"})),
)


# The packages of the tree whose modules rule 3 classifies.
PACKAGES: tuple[str, ...] = ("shared", "services", "gateway", "sipmesh")

# I/O-free modules that are application shell, by file name (any package) ...
SHELL_NAMES = frozenset({"__init__.py", "__main__.py", "config.py", "mi.py", "store.py"})
SHELL_SUFFIXES: tuple[str, ...] = ("_mi.py",)
# ... or one by one: they decide no protocol (they map, configure, render or start).
SHELL: tuple[str, ...] = (
    "shared/build_compiled.py",
    "shared/compiled.py",
    "shared/config/loader.py",
    "shared/discovery/port.py",
    "shared/events/envelope.py",
    "shared/events/schema.py",
    "shared/service/entry.py",
    "shared/service/gc_policy.py",
    "shared/service/logsetup.py",
    "shared/service/probe.py",
    "shared/service/say.py",
    "shared/service/stats.py",
    "shared/service/version.py",
    "shared/stats/memory.py",
    "shared/stats/registry.py",
    "shared/store/edge_tables.py",
    "shared/store/names.py",
    "shared/store/opensips.py",
    "services/edge/gc_policy.py",
    "services/edge/keyfile.py",
    "services/edge/media_anchor.py",
    # gRPC clients whose I/O is their base's (shared/rpc/discovered.py)
    "services/edge/media_client.py",
    "services/edge/presence_client.py",
    "gateway/events/sockets.py",
    "sipmesh/catalog.py",
    # table commands whose I/O is sipmesh/cli/tables.py's
    "sipmesh/cli/address_cmd.py",
    "sipmesh/cli/dispatcher_cmd.py",
    "sipmesh/cli/rtpengine_cmd.py",
    "sipmesh/cli/user_cmd.py",
    "sipmesh/cli/main.py",
    "sipmesh/cli/parse_cmd.py",
    "sipmesh/importer/run.py",
    "sipmesh/units.py",
)

# tests/component folders that test several packages together rather than one.
CROSS_CUTTING_TESTS = frozenset({
    "spine",   # the application spine: runtime, supervisor, discovery, gateway, CLI
    "deploy",  # readiness, versions and rolling restarts across services
})
TESTS = ROOT / "tests"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported(tree: ast.AST) -> set[str]:
    """Absolute module names imported anywhere in ``tree`` (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def clock_calls(tree: ast.AST) -> list[str]:
    """``datetime.now()``-style calls in ``tree``, as text."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in CLOCK_CALLS:
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else \
                owner.id if isinstance(owner, ast.Name) else ""
            if name in CLOCK_OWNERS:
                calls.append(f"{name}.{node.func.attr}() line {node.lineno}")
    return calls


def io_violations(tree: ast.AST) -> list[str]:
    bad = sorted({m for m in imported(tree) if m.split(".")[0] in IO_MODULES})
    return [f"imports {m}" for m in bad] + clock_calls(tree)


def _sources(entry: str) -> list[Path]:
    path = ROOT / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _all_sources(package: str) -> Iterator[Path]:
    for path in sorted((ROOT / package).rglob("*.py")):
        if "generated" not in path.relative_to(ROOT).parts:
            yield path


@pytest.mark.parametrize("entry", SANS_IO)
def test_declared_sans_io_entry_exists(entry: str) -> None:
    assert (ROOT / entry).exists(), f"{entry} is declared sans-IO but does not exist"
    assert _sources(entry), f"{entry} has no modules"


@pytest.mark.parametrize("module", [p for e in SANS_IO for p in _sources(e)], ids=_rel)
def test_sans_io_module_does_no_io(module: Path) -> None:
    bad = io_violations(_tree(module))
    assert not bad, f"{_rel(module)} must stay sans-IO (pass `now` in, I/O in adapters): {bad}"


@pytest.mark.parametrize("package,forbidden", LAYERS, ids=[p for p, _ in LAYERS])
def test_layers(package: str, forbidden: frozenset[str]) -> None:
    wrong = [
        f"{_rel(path)} imports {name}"
        for path in _all_sources(package)
        for name in sorted(imported(_tree(path)))
        if name.split(".")[0] in forbidden
    ]
    assert not wrong, f"{package} must not import {sorted(forbidden)}: {wrong}"


def test_io_detector_sees_imports_and_clock_reads() -> None:
    # The rules above are only worth something if the detector sees real violations.
    tree = ast.parse(
        "import asyncio\nfrom socket import socket\nfrom .x import y\n"
        "def f():\n    import grpc.aio\n    from datetime import datetime\n"
        "    return datetime.now(), datetime.datetime.utcnow(), date.today(), d.now\n"
    )
    assert io_violations(tree) == [
        "imports asyncio", "imports grpc.aio", "imports socket",
        "datetime.now() line 7", "datetime.utcnow() line 7", "date.today() line 7",
    ]
    assert not io_violations(ast.parse("import hashlib\nfrom datetime import UTC\n"))


def test_layer_detector_sees_lazy_imports() -> None:
    tree = ast.parse("def f():\n    from services.edge import core\n    import gateway.app\n")
    assert imported(tree) == {"services.edge", "gateway.app"}


def _is_shell(path: Path) -> bool:
    return path.name in SHELL_NAMES or path.name.endswith(SHELL_SUFFIXES) \
        or "testing" in path.relative_to(ROOT).parts or _rel(path) in SHELL


@pytest.mark.parametrize("entry", SHELL)
def test_declared_shell_entry_exists(entry: str) -> None:
    assert (ROOT / entry).is_file(), f"{entry} is declared shell but does not exist"


def test_every_module_is_classified() -> None:
    sans_io = {p for e in SANS_IO for p in _sources(e)}
    both = sorted(_rel(p) for p in sans_io if _is_shell(p) and p.name != "__init__.py")
    assert not both, f"declared both sans-IO and shell: {both}"
    unclassified = [
        _rel(path)
        for package in PACKAGES
        for path in _all_sources(package)
        if path not in sans_io and not _is_shell(path) and not io_violations(_tree(path))
    ]
    assert not unclassified, (
        "modules doing no I/O must be declared sans-IO (SANS_IO, when they decide protocol)"
        f" or shell (SHELL) in tests/unit/test_architecture.py: {unclassified}")


def _packages_named(name: str) -> list[str]:
    found = [f"{top}.{name}" for top in PACKAGES if (ROOT / top / name).is_dir()]
    return found + (["sipmesh"] if name == "sipmesh" else [])


def _test_dirs(tier: str) -> list[Path]:
    return sorted(d for d in (TESTS / tier).iterdir()
                  if d.is_dir() and not d.name.startswith(("_", ".")) and d.name != "fixtures")


@pytest.mark.parametrize("folder", _test_dirs("unit"), ids=lambda d: d.name)
def test_unit_tests_mirror_their_package(folder: Path) -> None:
    packages = _packages_named(folder.name)
    assert packages, f"tests/unit/{folder.name} names no package of {PACKAGES}"
    helpers = f"tests.unit.{folder.name}"
    stray = []
    for path in sorted(folder.glob("test_*.py")):
        names = imported(_tree(path))
        relative = any(isinstance(n, ast.ImportFrom) and n.level > 0
                       for n in ast.walk(_tree(path)))
        if not relative and not any(
            n == p or n.startswith((p + ".", helpers + "."))
            for n in names for p in packages
        ):
            stray.append(path.name)
    assert not stray, f"tests/unit/{folder.name} should test {packages}; move: {stray}"


@pytest.mark.parametrize("folder", _test_dirs("component"), ids=lambda d: d.name)
def test_component_folders_name_a_package(folder: Path) -> None:
    assert folder.name in CROSS_CUTTING_TESTS or _packages_named(folder.name), (
        f"tests/component/{folder.name} names no package of {PACKAGES}")
