"""The clustering engine (OpenSIPS 2.4 clusterer over gRPC), embedded by clustered services.

Sans-IO (no sockets, loop or clock; ``now`` passed in; tests/unit/cluster drive them on a
fake clock):

* :mod:`.state` -- :class:`~.state.ClusterState`, every decision of one node;
* :mod:`.link` -- link state machine (Up/Probe/Down);
* :mod:`.topology` -- flooded node states, shortest-path next hops;
* :mod:`.sync` -- full data sync of a capability (donor, chunks, buffer, replay, retry);
* :mod:`.shtags` -- sharing tags, the embedded deterministic takeover;
* :mod:`.auth` -- the handshake (mutual challenge-response) and sealed frames;
* :mod:`.antientropy` -- digests of a capability's data and the repair of what differs;
* :mod:`.events` -- what the state asks its adapter to do.

Adapters: :mod:`.engine` -- :class:`ClusterNode`, asyncio + grpc.aio, the services' API;
:mod:`.shtags_consul` -- sharing tags on Consul KV locks; :mod:`.mi` -- the clusterer MI
commands; :mod:`.config` -- the ``[cluster]`` section. A runnable demo node lives in
``examples/cluster_demo``.
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
from shared.cluster.events import ReplicationDone
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
    "ReplicationDone",
    "register_mi",
    "run_local_mi",
]
