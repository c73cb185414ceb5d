"""Versions a process reports (docs/adr/0002-versioning.md).

* the **mesh release** (``sipmesh --version``, the ``version`` MI banner, ``meta.version``):
  ``[project] version`` of pyproject.toml, :data:`shared.service.runtime.VERSION`;
* each **service's own version**: ``__version__`` of its package (``services.registrar``,
  ``gateway``...), bumped by that service's releases alone, so a deployment can run a
  registrar of one release beside an edge of another;
* the **contracts version** (:data:`CONTRACTS_VERSION`, ``contracts/__init__.py``): the
  released snapshot under ``contracts/released/`` that ``contracts/compat.py`` checks the
  current ``.proto``/JSON Schemas against.
"""

from __future__ import annotations

import sys

from contracts import CONTRACTS_VERSION

__all__ = ["CONTRACTS_VERSION", "MESH_VERSION", "service_version"]

MESH_VERSION = "0.2.0"


def service_version(name: str) -> str:
    """``__version__`` of service ``name``'s package (``services.<name>`` or ``<name>``,
    whichever this process imported), else the mesh release."""
    base = name.replace("-", "_")
    for module in (f"services.{base}", base, f"examples.{base}"):
        found = sys.modules.get(module)
        version = getattr(found, "__version__", None)
        if isinstance(version, str) and version:
            return version
    return MESH_VERSION
