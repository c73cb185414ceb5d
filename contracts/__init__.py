"""The mesh's contracts: gRPC ``.proto``, JSON Schemas of MI methods and events.

:data:`CONTRACTS_VERSION` is the version of these contracts; ``contracts/released/<v>/`` holds
the snapshot of each released version and ``python -m contracts.compat`` fails on a change
that breaks a peer of the last release (docs/adr/0002-versioning.md).
"""

CONTRACTS_VERSION = "0.2.0"
