"""The public MI gateway: JSON-RPC 2.0 over HTTP POST at ``/mi``, as OpenSIPS's mi_http.

:mod:`.router` answers the core MI commands mesh-wide (merging statistics across every
instance found in discovery) and forwards any other command to the service that declares
it; :mod:`.app` wires it into a :class:`~shared.service.ServiceRuntime`.
"""

__version__ = "0.2.0"  # this service's own release (docs/adr/0002-versioning.md)

# `shared` first, as in services/__init__.py: it imports structlog without rich (a start
# cost every process is spared) before gateway/__main__.py imports structlog.
import shared as _shared  # noqa: F401
