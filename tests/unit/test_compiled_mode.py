"""Which core runs (shared/compiled.py): compiled only when the build matches the sources.

The compiled modules call each other natively, so the choice is all or nothing, and a
build older than its sources must never run: these tests check the decision on a tree of
fake sources and fake extensions (no compiler needed), and that the finder then loads a
module from its `.py` even where an extension of the same name sits beside it.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import compiled

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
MODULES = ("pkg.alpha", "pkg.beta")


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package of two modules, each with a (fake) extension beside it, and a stamp
    recording their sources as built."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("alpha", "beta"):
        (pkg / f"{name}.py").write_text(f"NAME = {name!r}\n")
        (pkg / f"{name}{SUFFIX}").write_bytes(b"not an ELF file: importing it fails")
    stamp = tmp_path / "compiled.json"
    monkeypatch.setattr(compiled, "ROOT", tmp_path)
    monkeypatch.setattr(compiled, "STAMP", stamp)
    monkeypatch.setattr(compiled, "MODULES", MODULES)
    monkeypatch.delenv(compiled.ENV, raising=False)
    stamp.write_text(json.dumps({"suffix": SUFFIX, "sources": {
        m: compiled.digest(compiled.source(m)) for m in MODULES}}))
    return tmp_path


def test_a_build_matching_its_sources_is_used(tree: Path) -> None:
    assert compiled.why_not() is None


def test_an_edited_source_sends_every_module_back_to_pure_python(tree: Path) -> None:
    (tree / "pkg" / "beta.py").write_text("NAME = 'edited'\n")
    assert compiled.why_not() == "pkg.beta edited since the build: make compiled"


def test_a_missing_extension_or_stamp_means_pure_python(tree: Path) -> None:
    (tree / "pkg" / f"alpha{SUFFIX}").unlink()
    assert compiled.why_not() == "pkg.alpha not built: make compiled"
    (tree / "compiled.json").unlink()
    assert compiled.why_not() == "no build stamp: make compiled"


def test_a_build_of_another_module_list_is_not_used(tree: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "MODULES", (*MODULES, "pkg.gamma"))
    assert compiled.why_not() == "built for another Python or module list: make compiled"


def test_the_environment_can_ask_for_pure_python(tree: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compiled.ENV, "off")
    assert compiled.why_not() == f"{compiled.ENV}=off"


def test_no_extension_at_all_is_not_built(tree: Path) -> None:
    for name in ("alpha", "beta"):
        (tree / "pkg" / f"{name}{SUFFIX}").unlink()
    assert compiled.why_not() == "not built: make compiled"


def test_the_pure_finder_loads_each_listed_module_from_its_source(tree: Path) -> None:
    spec = compiled._PureFinder().find_spec("pkg.alpha", None)
    assert spec is not None and spec.origin == str(tree / "pkg" / "alpha.py")
    assert compiled._PureFinder().find_spec("pkg.other", None) is None
    # In a process: the extension beside the source is skipped, the source is imported.
    code = ("import sys, shared.compiled as c; c.MODULES = ('pkg.alpha', 'pkg.beta'); "
            f"c.ROOT = __import__('pathlib').Path({str(tree)!r}); "
            "sys.meta_path.insert(0, c._PureFinder()); import pkg.alpha; print(pkg.alpha.NAME)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                         text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{Path.cwd()}"})
    assert out.stdout.strip() == "alpha", out.stderr
    plain = subprocess.run([sys.executable, "-c", "import pkg.alpha"], cwd=tree,
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(tree)})
    assert plain.returncode != 0  # without the finder the (fake) extension wins


def test_require_refuses_to_run_pure_python() -> None:
    out = subprocess.run([sys.executable, "-c", "import shared"], capture_output=True,
                         text=True, timeout=60,
                         env={**os.environ, compiled.ENV: "require"})
    if compiled.stale() is None:  # this tree has a fresh build: require is satisfied
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode != 0
        assert f"{compiled.ENV}=require but the compiled core cannot be used" in out.stderr


def test_mode_says_which_core_this_process_runs() -> None:
    import shared.sip.parser as parser

    reason = compiled.why_not()
    assert compiled.mode() == ("compiled" if reason is None else f"pure ({reason})")
    assert parser.__file__ is not None
    assert parser.__file__.endswith(".so") == (reason is None)


def test_a_source_edited_during_the_build_is_not_stamped_as_built(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stamp records the sources as mypyc read them: an edit made while the C
    compiler runs leaves the next import on pure Python, not on a stale extension."""
    import sysconfig

    import mypyc.build

    from shared import build_compiled

    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        pytest.skip("no Python headers: build() stops before compiling")

    def compile_while_someone_edits(paths: list[str], **_: object) -> list[object]:
        (tree / "pkg" / "beta.py").write_text("NAME = 'edited during the build'\n")
        return []

    monkeypatch.setattr(build_compiled, "ROOT", tree)
    monkeypatch.setattr(build_compiled, "STAMP", tree / "compiled.json")
    monkeypatch.setattr(build_compiled, "MODULES", MODULES)
    monkeypatch.setattr(build_compiled, "clean", lambda: 0)
    monkeypatch.setattr(mypyc.build, "mypycify", compile_while_someone_edits)
    assert build_compiled.build() == 0
    assert compiled.why_not() == "pkg.beta edited since the build: make compiled"


def test_the_shipped_default_routing_is_compiled_with_the_core() -> None:
    """The routing module an edge runs when the operator names none (and the media
    anchoring it asks for every request) is in the compiled list: compiled whenever the
    core is, loaded by `load_router` from its extension. An operator's module is not."""
    from services.edge.config import EdgeConfig
    from services.edge.routing import RouterSetup, load_router

    default = EdgeConfig().routing_module
    assert {default, "services.edge.media_anchor"} <= set(compiled.MODULES)
    router = load_router(default, RouterSetup(frozenset(), {}))
    module = sys.modules[default]
    assert module.__file__ is not None
    assert module.__file__.endswith(".so") == (compiled.mode() == "compiled")
    # A compiled function is a builtin, not a Python function with a code object.
    assert hasattr(router.request_route, "__code__") == (compiled.mode() != "compiled")
    operator = load_router("tests.integration.edge.routing_fork", RouterSetup(frozenset(), {}))
    assert hasattr(operator.request_route, "__code__")


def test_the_workers_message_path_is_compiled_with_the_core() -> None:
    """What a worker runs for every datagram around the core (services/edge/datagrams.py:
    the socket's `datagram_received`, the app's receive, send and timer code) is compiled
    whenever the core is: no interpreted frame of ours per datagram."""
    from services.edge.addresses import Interface
    from services.edge.app import EdgeApp
    from services.edge.config import EdgeConfig
    from services.edge.transports import UdpEndpoint

    assert "services.edge.datagrams" in compiled.MODULES
    app = EdgeApp(EdgeConfig(listen=("udp:127.0.0.1:0",), rr_secret="k" * 32))
    endpoint = UdpEndpoint(Interface("udp", "127.0.0.1", 5060), app._on_message, app._warn)
    hot = [app._on_message, app._execute, app._rearm, endpoint.datagram_received]
    # A compiled method has no code object (a Python method's function has one).
    interpreted = [hasattr(getattr(fn, "__func__", fn), "__code__") for fn in hot]
    assert interpreted == [compiled.mode() != "compiled"] * len(hot)
