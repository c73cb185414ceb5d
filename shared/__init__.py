"""Libraries every SipMesh process imports.

Importing the package first decides whether the sans-IO core runs compiled (mypyc) or as
pure Python (`shared.compiled`), before any module of that core is imported, and imports
structlog without rich (`_import_structlog_without_rich`).
"""

import sys

from shared import compiled as _compiled

_compiled.install()


def _import_structlog_without_rich() -> None:
    """Imports structlog with rich hidden from it, unless either is loaded already.

    structlog's package imports its console renderer and traceback helpers, and they import
    rich when it is installed (the ``sipmesh`` command's tables need it): ~60 ms of CPU at
    every start of every service process, for nothing. A process renders exceptions as plain
    text before any renderer sees them (``format_exc_info`` in
    ``shared.service.logsetup``), so structlog's rich tracebacks are never used; without
    rich its defaults are the plain ones and the log lines are the same. Once structlog is
    imported, rich imports normally for whoever needs it."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()
