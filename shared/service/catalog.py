"""The services ``sipmesh up`` starts: one line per service, in start order.

A service is a Python module run as ``python -m <module>`` that registers itself in
discovery under ``name`` (with :class:`shared.service.ServiceRuntime`). To add a service to
the mesh, add one :class:`ChildSpec` line here; ``[mesh] services`` (or
``SIPMESH_MESH_SERVICES=gateway,edge``) picks a subset by name.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """One supervised child process."""

    name: str
    module: str


SERVICES: tuple[ChildSpec, ...] = (
    ChildSpec("gateway", "gateway"),
    ChildSpec("edge", "services.edge"),
    ChildSpec("registrar", "services.registrar"),
)
