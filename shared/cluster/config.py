"""The ``[cluster]`` configuration section of a clustered service.

Everything OpenSIPS provisions per node (``current_info``/``neighbor_info``, research §1)
is here: ids, the replication address peers dial, the SIP address (for the
EQ/NEQ_SIP_ADDR match rules), priority, the seed flag, and the seeds to join through
(``"<node_id>@<host>:<port>"``; one is enough, the rest of the cluster is learned from it)
and/or ``discovery_service``, a service whose registered instances announce their node
(``ClusterNode.meta()`` in the instance metadata). ``members`` lists the node ids allowed
in the cluster (``"1-5,9"``) besides those found through discovery; empty admits any
node that proves the shared ``secret``. The secret is required: a node without one
refuses to start clustered (no cluster is ever open to whoever connects). Timers keep
OpenSIPS' names and defaults; ``ack_timeout`` bounds a tracked replication
(``ClusterNode.replicate``) and ``anti_entropy_interval`` adds periodic data comparisons
to the ones made on every reconnect.

Replicas that share one configuration (a Kubernetes StatefulSet's pods) take their node id
from their host name: with ``node_id_from_hostname`` the node id is ``node_id`` plus the
ordinal ending the host name (pod ``sipmesh-registrar-1`` with ``node_id = 1`` is node 2);
:meth:`ClusterConfig.for_host` makes that one node's settings (``ClusterNode`` applies it
with the machine's host name).

A service loads it with ``load_section(ClusterConfig, "<service>.cluster")`` so each
service has its own cluster; every field can be set as ``SIPMESH_<SERVICE>_CLUSTER_<FIELD>``.
:func:`host_cluster_config` reads it as this host's node and validates it, so a service
checks it with its other settings and stops on a bad one with its one-line configuration
error (``<service>: configuration error: ...``, exit ``EXIT_CONFIG``) rather than a
traceback once it is serving.
"""

from __future__ import annotations

import dataclasses
import socket

from shared.cluster.link import LinkTimers
from shared.cluster.shtags import ShtagConfig


@dataclasses.dataclass(frozen=True)
class Seed:
    node_id: int
    url: str


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    cluster_id: int = 1
    node_id: int = 1
    node_id_from_hostname: bool = False  # node_id + the host name's ordinal (StatefulSet)
    listen: str = "127.0.0.1:0"
    advertise: str = ""  # host:port others dial; default: listen host and the bound port
    sip_addr: str = ""
    priority: int = 50
    seed: bool = False
    seeds: tuple[str, ...] = ()
    discovery_service: str = ""  # also take seeds from this service's instances' meta
    members: str = ""
    secret: str = ""
    description: str = ""
    ping_interval: float = 4.0
    ping_timeout: float = 1.0
    ping_retries: int = 3
    node_timeout: float = 60.0
    seed_fallback_interval: float = 5.0
    sync_timeout: float = 15.0
    sync_packet_size: int = 65536
    sharing_tags: tuple[str, ...] = ()
    shtag_backend: str = "embedded"  # or "consul"
    consul_addr: str = ""
    shtag_ttl: int = 10
    shtag_lock_delay: int = 1
    ack_timeout: float = 0.5  # how long replicate() waits for the targets' acks
    anti_entropy_interval: float = 0.0  # > 0: also compare data that often (s)

    def validate(self) -> None:
        if not 0 < self.node_id < 2**31 or not 0 < self.cluster_id < 2**31:
            raise ValueError("[cluster] node_id and cluster_id must be positive")
        if self.ping_interval <= 0 or self.ping_timeout <= 0 or self.ping_retries < 0:
            raise ValueError("[cluster] ping_interval/ping_timeout must be > 0, retries >= 0")
        if self.shtag_backend not in ("embedded", "consul"):
            raise ValueError("[cluster] shtag_backend must be embedded or consul")
        if not self.secret:
            raise ValueError("[cluster] secret is empty: a cluster needs a shared secret "
                             "(secret in [<service>.cluster], or "
                             "SIPMESH_<SERVICE>_CLUSTER_SECRET)")
        if self.ack_timeout <= 0 or self.anti_entropy_interval < 0:
            raise ValueError("[cluster] ack_timeout must be > 0, anti_entropy_interval >= 0")
        if self.sync_packet_size < 1024:
            raise ValueError("[cluster] sync_packet_size must be at least 1024")
        self.seed_list()
        self.member_ids()
        self.shtags()
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"[cluster] listen {self.listen!r} is not host:port")

    def for_host(self, hostname: str) -> ClusterConfig:
        """These settings on the host named ``hostname``: unchanged, or with
        ``node_id_from_hostname`` the node id ``node_id + N`` where the host's first label
        ends in ``-N`` (a StatefulSet pod's name is ``<set>-<ordinal>``; ordinal 0 is
        ``node_id``). A name without an ordinal is a configuration error, never a guess."""
        if not self.node_id_from_hostname:
            return self
        label = hostname.split(".", 1)[0]
        _, sep, ordinal = label.rpartition("-")
        if not sep or not ordinal.isdigit():
            raise ValueError(f"[cluster] node_id_from_hostname: host name {hostname!r} does "
                             "not end in -<ordinal> (a StatefulSet pod's name does)")
        return dataclasses.replace(self, node_id=self.node_id + int(ordinal),
                                   node_id_from_hostname=False)

    @property
    def timers(self) -> LinkTimers:
        return LinkTimers(self.ping_interval, self.ping_timeout, self.ping_retries,
                          self.node_timeout)

    def seed_list(self) -> list[Seed]:
        out = []
        for item in self.seeds:
            node, sep, url = item.partition("@")
            if not sep or not node.strip().isdigit() or ":" not in url:
                raise ValueError(f"[cluster] seed {item!r} is not node_id@host:port")
            out.append(Seed(int(node), url.strip()))
        return out

    def member_ids(self) -> frozenset[int] | None:
        """Allowed node ids, or None when any authenticated node is admitted."""
        if not self.members.strip():
            return None
        ids: set[int] = set()
        for part in self.members.split(","):
            lo, sep, hi = part.strip().partition("-")
            try:
                ids.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
            except ValueError as exc:
                raise ValueError(f"[cluster] members {self.members!r}: {exc}") from exc
        return frozenset(ids)

    def shtags(self) -> list[ShtagConfig]:
        tags = [ShtagConfig.parse(t) for t in self.sharing_tags]
        for t in tags:
            if t.cluster_id != self.cluster_id:
                raise ValueError(f"[cluster] sharing tag {t.name}/{t.cluster_id} is not "
                                 f"in cluster {self.cluster_id}")
        return tags


def host_cluster_config(service: str, hostname: str | None = None) -> ClusterConfig:
    """``[<service>.cluster]`` as the node this host runs (:meth:`ClusterConfig.for_host`
    with the machine's host name unless ``hostname`` is given), validated. Raises
    ValueError (a pod name without an ordinal, no secret, ...)."""
    from shared.config import load_section

    config = load_section(ClusterConfig, f"{service}.cluster").for_host(
        socket.gethostname() if hostname is None else hostname)
    config.validate()
    return config
