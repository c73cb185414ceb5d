"""The sans-IO core compiled with mypyc, or the same code as pure Python: which one runs.

`make compiled` (``python -m shared.build_compiled``, the build) compiles :data:`MODULES` (the SIP
message core, the transaction layer and the edge proxy's core: the per-message hot path)
with mypyc into C extensions placed beside their sources (``parser.cpython-311-...so``
beside ``parser.py``), plus one shared library holding the code of all of them
(``shared/sipmesh_native__mypyc...so``).  Python's import system prefers an extension
module to a ``.py`` of the same name, so nothing else changes: the same modules, the same
names, a fraction of the interpreter's work per call (docs/perf.md has the figures).
``make pure`` (``python -m shared.build_compiled --clean``) removes them.

The build is optional.  Without a C compiler, Python headers or a build, everything runs
as pure Python, as it always did.  What is compiled is all or nothing: compiled modules
call each other natively, so one loaded from its ``.py`` beside compiled ones would break
them.  :func:`install` (run on the first import of ``shared`` and ``services``) therefore
loads *every* module of the list from its ``.py`` when

* ``SIPMESH_COMPILED=off`` asks for pure Python (to compare, or to debug), or
* the build is out of date: the stamp written by the build (``shared/compiled.json``)
  records a hash of each source, and a source edited since (or a missing extension)
  means the compiled code no longer is that source.  A developer editing ``parser.py``
  gets the edit, not a stale build.

``SIPMESH_COMPILED=require`` makes a missing or stale build an ImportError (the compiled
test run, ``make test-compiled``, must not quietly test pure Python).  :func:`mode` says
which one runs ("compiled" or "pure (why)"); ``sipmesh --version`` and the edge's start
log print it.

What mypyc needed of the code (kept readable, the same in pure Python): no
``object.__new__`` on a compiled class (a native class's ``tp_new`` runs ``__init__``), so
`Request`/`Response` take already-checked ``parts`` in their constructors; an attribute
keeps one type across subclasses (`ServerTransaction.request` is declared per subclass);
two except clauses of different types bind two names (compiled, the second clause's
variable kept the first one's type); objects built per message get a written-out
``__init__`` (a dataclass's generated one, and a NamedTuple's ``__new__``, stay
interpreted Python in a compiled module): the transaction events are plain classes (as
frozen, slotted dataclasses the compiled module crashed at import), `Uri`, `Via`,
`NameAddr` and the edge's `Source`, `Destination`, `Send` are ``init=False`` dataclasses
(the last three no longer frozen: same equality and hash), `Arm` is built with
``tuple.__new__``.  Not compiled: operators' routing scripts and the rest of the
routing API (operators' code subclasses them; its per-request `RouteContext` and `Target`
are compiled, in services/edge/route_context.py), and everything with I/O.  The routing
script shipped as the default (`services.edge.default_routing`, what a worker runs when
the operator names none) and the media anchoring it calls are compiled; a script that
wraps its functions calls them compiled too.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
STAMP = Path(__file__).resolve().parent / "compiled.json"
GROUP = "shared.sipmesh_native"  # the shared library: shared/sipmesh_native__mypyc*.so
ENV = "SIPMESH_COMPILED"  # auto (default) | off | require

# The per-message hot path, in import order of no importance (one mypyc group).
MODULES: tuple[str, ...] = (
    "shared.sip.cseq",
    "shared.sip.digest",
    "shared.sip.errors",
    "shared.sip.framing",
    "shared.sip.headers",
    "shared.sip.limits",
    "shared.sip.message",
    "shared.sip.nameaddr",
    "shared.sip.parser",
    "shared.sip.response",
    "shared.sip.status",
    "shared.sip.uri",
    "shared.sip.via",
    "shared.transaction.events",
    "shared.transaction.key",
    "shared.transaction.layer",
    "shared.transaction.machine",
    "shared.transaction.timers",
    "shared.transaction.transaction",
    "services.edge.addresses",
    "services.edge.auth",
    "services.edge.best_response",
    "services.edge.context",
    "services.edge.core",
    "services.edge.counters",
    "services.edge.datagrams",
    "services.edge.default_routing",
    "services.edge.keepalive",
    "services.edge.media_anchor",
    "services.edge.nonce_counts",
    "services.edge.register_challenge",
    "services.edge.route_context",
    "services.edge.rr_signing",
    "services.edge.stateless",
    "services.edge.validation",
)

_state: dict[str, str] = {}


def source(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extensions(module: str) -> list[Path]:
    """The extension files built for `module` (any Python version), beside its source."""
    src = source(module)
    return sorted(src.parent.glob(f"{src.stem}.*.so"))


def built() -> bool:
    """Extension files of this Python's ABI are present for some module of the list."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return any(source(m).with_suffix(suffix).exists() for m in MODULES)


def why_not() -> str | None:
    """None when the compiled build can be used; else why the pure Python runs."""
    if os.environ.get(ENV, "auto") == "off":
        return f"{ENV}=off"
    return stale()


def stale() -> str | None:
    """None when the build matches the sources; else what is missing or out of date."""
    if not built():
        return "not built: make compiled"
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return "no build stamp: make compiled"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if stamp.get("suffix") != suffix or sorted(stamp.get("sources", {})) != sorted(MODULES):
        return "built for another Python or module list: make compiled"
    for module, recorded in stamp["sources"].items():
        if not source(module).with_suffix(suffix).exists():
            return f"{module} not built: make compiled"
        if digest(source(module)) != recorded:
            return f"{module} edited since the build: make compiled"
    return None


class _PureFinder(importlib.abc.MetaPathFinder):
    """Loads every module of the compiled list from its `.py`, never from its extension."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source(fullname))


def install() -> None:
    """Decide once per process, before any module of the list is imported."""
    if _state:
        return
    reason = why_not()
    if reason is None:
        _state["mode"] = "compiled"
        return
    _state["mode"] = f"pure ({reason})"
    if os.environ.get(ENV) == "require":
        raise ImportError(f"{ENV}=require but the compiled core cannot be used: {reason}")
    if built():
        sys.meta_path.insert(0, _PureFinder())


def mode() -> str:
    """"compiled", or "pure (why)": what this process runs, as decided by `install`."""
    install()
    loaded = sys.modules.get("shared.sip.parser")
    if loaded is not None and _state["mode"] == "compiled" \
            and not str(getattr(loaded, "__file__", "")).endswith(".so"):
        return "pure (loaded before the check)"  # pragma: no cover - a broken install
    return _state["mode"]
