"""The services ``sipmesh up`` starts: one line per service, in start order.

A service is a Python module run as ``python -m <module>`` that registers itself in
discovery under ``name`` (with :class:`shared.service.ServiceRuntime`). To add a service to
the mesh, add one :class:`ChildSpec` line here; ``[mesh] services`` (or
``SIPMESH_MESH_SERVICES=gateway,edge``) picks a subset by name.

Clustering is a property of an entry: a ``cluster_id`` makes the service *clustered*.
``sipmesh up --nodes N`` (``[mesh] nodes``) then runs N nodes of it on loopback, one
cluster per service, and the supervisor gives each node its ``[<cluster_section>]``
settings through the environment (:func:`sipmesh.supervisor.node_env`). Without
``--nodes`` a clustered service runs once, unclustered, and an entry marked
``nodes_only`` (the cluster demo) is not started at all.

An entry with ``nodes_setting = "edges"`` (the edge) counts its nodes from ``[mesh] edges``
(``sipmesh up --edges N``) instead, so ``--nodes N`` keeps one edge: N >= 2 runs N anycast
edge nodes sharing one SIP address (README "Anycast"), each given the same listen address
with ``;anycast`` on its UDP entries (``anycast_listen_env``; SO_REUSEPORT lets them all
bind it) and the same values of the ``shared_secrets`` settings, drawn once per run.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """One supervised child process (``cluster_*`` fields: see the module docstring)."""

    name: str
    module: str
    cluster_id: int = 0  # > 0: a clustered service, this is its cluster's id
    cluster_section: str = ""  # its ClusterConfig section, e.g. "registrar.cluster"
    cluster_env: tuple[tuple[str, str], ...] = ()  # turns clustering on in the service
    sharing_tags: tuple[str, ...] = ()  # "name/cluster_id=backup" given to every node
    port_env: tuple[str, ...] = ()  # listening-port settings forced to 0 (ephemeral) per node
    sip_port_env: str = ""  # its SIP port setting: a distinct free port per node
    nodes_only: bool = False  # started only by `sipmesh up --nodes N`
    nodes_setting: str = "nodes"  # the [mesh] setting counting its nodes: nodes or edges
    anycast_listen_env: str = ""  # its listen setting, made `;anycast` on every node
    shared_secrets: tuple[str, ...] = ()  # settings every node must share (drawn per run)
    # Rolling restart starts the new process first and stops the old one once the new is
    # ready (Kubernetes' maxSurge: 1): a single instance that hands its work over.
    surge: bool = False

    @property
    def clustered(self) -> bool:
        return self.cluster_id > 0


SERVICES: tuple[ChildSpec, ...] = (
    ChildSpec("gateway", "gateway"),
    # `sipmesh up --edges N` (N >= 2): N anycast edge nodes on one address (README "Anycast").
    ChildSpec("edge", "services.edge",
              cluster_id=5, cluster_section="edge.cluster",
              cluster_env=(("SIPMESH_EDGE_TM_REPLICATION_CLUSTER", "true"),
                           ("SIPMESH_EDGE_WORKERS", "1")),
              port_env=("SIPMESH_EDGE_HTTP_PORT",), nodes_setting="edges",
              anycast_listen_env="SIPMESH_EDGE_LISTEN",
              shared_secrets=("SIPMESH_EDGE_RR_SECRET", "SIPMESH_EDGE_AUTH_SECRET")),
    ChildSpec("registrar", "services.registrar",
              cluster_id=1, cluster_section="registrar.cluster",
              cluster_env=(("SIPMESH_REGISTRAR_CLUSTER_MODE", "full-sharing"),),
              port_env=("SIPMESH_REGISTRAR_HTTP_PORT", "SIPMESH_REGISTRAR_GRPC_PORT")),
    # The rtpengine broker; with no rtpengine provisioned it idles and says so, and edges
    # anchor media only with [edge] media_anchor = true.
    ChildSpec("media", "services.media", port_env=("SIPMESH_MEDIA_HTTP_PORT",
                                                   "SIPMESH_MEDIA_GRPC_PORT")),
    # Idles until a box is configured. Restarted with surge: FreeSWITCH keeps no event
    # for a listener that is gone, so the new bridge links up before the old one hands
    # over (services/freeswitch/handover.py).
    ChildSpec("freeswitch", "services.freeswitch", surge=True),
    # The SIPREC recorder: idle until an edge records a call (ctx.record, [edge] siprec_srs).
    # Restarted with surge too: a call that begins and ends while no recorder runs could
    # not be recorded at all (its media is gone); the new one finds the old one's
    # recordings in the shared store.
    ChildSpec("siprec", "services.siprec", port_env=("SIPMESH_SIPREC_HTTP_PORT",),
              surge=True),
    ChildSpec("dialog", "services.dialog",
              cluster_id=3, cluster_section="dialog.cluster",
              cluster_env=(("SIPMESH_DIALOG_CLUSTER", "true"),),
              port_env=("SIPMESH_DIALOG_HTTP_PORT", "SIPMESH_DIALOG_GRPC_PORT")),
    # Presence (PUBLISH, SUBSCRIBE/NOTIFY); edges hand it presence requests once it is up.
    ChildSpec("presence", "services.presence",
              cluster_id=4, cluster_section="presence.cluster",
              cluster_env=(("SIPMESH_PRESENCE_CLUSTER", "true"),),
              sharing_tags=("presence/4=backup",),
              port_env=("SIPMESH_PRESENCE_HTTP_PORT", "SIPMESH_PRESENCE_GRPC_PORT")),
    ChildSpec("cluster-demo", "examples.cluster_demo",
              cluster_id=2, cluster_section="demo.cluster", sharing_tags=("vip/2=backup",),
              nodes_only=True),
)
