"""The clustering engine (OpenSIPS 2.4 clusterer over gRPC), embedded by clustered services.

* :mod:`.link` -- link state machine (Up/Probe/Down), sans-IO;
* :mod:`.topology` -- flooded node states, shortest-path next hops, sans-IO;
* :mod:`.sync` -- full data sync of a capability (donor, chunks, buffer, replay, retry);
* :mod:`.shtags` -- sharing tags: embedded deterministic takeover or Consul KV locks;
* :mod:`.engine` -- :class:`ClusterNode`, the asyncio + grpc.aio adapter and services' API;
* :mod:`.mi` -- the clusterer MI commands; :mod:`.config` -- the ``[cluster]`` section;
* :mod:`.demo` -- ``python -m shared.cluster.demo``, a replicated key/value node.
"""

from shared.cluster.config import ClusterConfig
from shared.cluster.engine import (
    DISABLED,
    SEND_ERROR,
    SENT,
    UNREACHABLE,
    Capability,
    ClusterNode,
)
from shared.cluster.mi import register_mi, run_local_mi
from shared.cluster.sync import Match

__all__ = [
    "DISABLED",
    "SEND_ERROR",
    "SENT",
    "UNREACHABLE",
    "Capability",
    "ClusterConfig",
    "ClusterNode",
    "Match",
    "register_mi",
    "run_local_mi",
]
