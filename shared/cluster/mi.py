"""The clusterer MI commands of one :class:`~shared.cluster.engine.ClusterNode`.

:func:`register_mi` declares them on a service runtime (``runtime.command``), shaped as
OpenSIPS 3 prints them in JSON (contracts/mi/clusterer_*.json, cluster_*_mi.json):

* ``clusterer_list`` -- ``{"Clusters": [{"cluster_id", "local_node_id", "Nodes":
  [{"node_id", "db_id", "url", "link_state", "next_hop", "description"}]}]}``
  (``next_hop`` a node id as a string, or ``"none"``);
* ``clusterer_list_topology`` -- ``{"Clusters": [{"cluster_id", "Nodes": [{"node_id",
  "Neighbours": [...]}]}]}``;
* ``clusterer_list_cap`` -- ``{"Clusters": [{"cluster_id", "Capabilities": [{"name",
  "state"}]}]}`` with ``state`` ``Ok`` / ``not synced`` / ``syncing``;
* ``clusterer_list_sync`` (SipMesh) -- the progress of each capability's sync;
* ``clusterer_set_status cluster_id status``, ``clusterer_shtag_set_active tag``,
  ``clusterer_list_shtags`` (``[{"Tag", "Cluster", "State", "Node"}]``);
* ``cluster_send_mi cluster_id destination cmd_name [cmd_params]`` ("OK" once sent: the
  remote node runs it asynchronously; "Local node disabled"; 400 "Destination down") and
  ``cluster_broadcast_mi cluster_id cmd_name [cmd_params]`` (sent to every node, then run
  here: the answer is the local command's).

Statistics (group ``clusterer``): nodes, nodes up/down, packets sent/received/relayed,
and what the link security refused (``auth_refused``, ``replay_refused``, ``mac_refused``,
``unsigned_refused``, ``malformed_refused``), the anti-entropy rounds and records.

Beyond OpenSIPS, where an MI call reaches one instance: the list commands are fan-out
commands (the gateway asks every node and concatenates the answers), so each answer names
the node it comes from -- ``local_node_id`` in each ``Clusters`` entry, ``Node`` in each
sharing tag. The gateway's ``node_id`` param asks one node only (gateway.targeting).
"""

from __future__ import annotations

import json
from typing import Any

from shared.cluster.engine import DISABLED, SENT, UNREACHABLE, ClusterNode
from shared.rpc.jsonrpc import BAD_REQUEST, INVALID_PARAMS, NOT_FOUND, MiError, int_param
from shared.service.runtime import ServiceRuntime

STATS = ("relayed", "sent", "received", "auth_refused", "replay_refused", "mac_refused",
         "unsigned_refused", "malformed_refused", "ae_rounds", "ae_records_sent",
         "ae_records_received")


def _params(value: Any) -> list[Any] | None:
    """``cmd_params``: an array, as OpenSIPS takes them (None: no params)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise MiError(INVALID_PARAMS, "Invalid params", "cmd_params must be an array")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise MiError(INVALID_PARAMS, "Invalid params", "cmd_name must be a string")
    return value


def register_mi(runtime: ServiceRuntime, node: ClusterNode) -> None:
    """Declares the clusterer MI commands of ``node`` on ``runtime`` (a ServiceRuntime)."""
    runtime.declare_events("clusterer.#")  # a node raises E_CLUSTERER_* (events_list)
    cid = node.cluster_id

    def cluster(value: Any) -> None:
        if int_param(value, "cluster_id") != cid:
            raise MiError(NOT_FOUND, "Cluster id not found")

    me = node.id

    @runtime.command("clusterer_list", fanout=True,
                     doc="the nodes of each cluster and their link states")
    async def clusterer_list() -> Any:
        nodes = []
        for n in sorted(set(node.peers) | set(node.views)):
            peer = node.peers.get(n)
            view = node.views.get(n)
            nodes.append({
                "node_id": n, "db_id": -1,
                "url": f"grpc:{(peer.url if peer else view.url if view else '')}",
                "link_state": node.link_state(n),
                "next_hop": str(node.next_hop[n]) if n in node.next_hop else "none",
                "description": (view.description if view and view.description else "none"),
            })
        return {"Clusters": [{"cluster_id": cid, "local_node_id": me, "Nodes": nodes}]}

    @runtime.command("clusterer_list_topology", fanout=True,
                     doc="the adjacency list of each cluster")
    async def clusterer_list_topology() -> Any:
        return {"Clusters": [{"cluster_id": cid, "local_node_id": me, "Nodes": [
            {"node_id": n, "Neighbours": up} for n, up in node.topology().items()]}]}

    @runtime.command("clusterer_list_cap", fanout=True, doc="capabilities and their sync states")
    async def clusterer_list_cap() -> Any:
        return {"Clusters": [{"cluster_id": cid, "local_node_id": me, "Capabilities": [
            {"name": c.name, "state": c.machine.state.value}
            for c in node.capabilities.values()]}]}

    @runtime.command("clusterer_list_sync", fanout=True,
                     doc="progress of each capability's data sync")
    async def clusterer_list_sync() -> Any:
        now = node.clock()
        return {"Clusters": [{"cluster_id": cid, "local_node_id": me, "Capabilities": [
            c.machine.progress(now) for c in node.capabilities.values()]}]}

    @runtime.command("clusterer_set_status", (("cluster_id", "status"),),
                     doc="enable (1) or disable (0) this node in the cluster")
    async def clusterer_set_status(cluster_id: Any, status: Any) -> Any:
        cluster(cluster_id)
        value = int_param(status, "status")
        if value not in (0, 1):
            raise MiError(BAD_REQUEST, "Bad status")
        node.set_enabled(bool(value))
        return "OK"

    @runtime.command("clusterer_shtag_set_active", (("tag",),),
                     doc="make this node the active holder of tag name/cluster_id")
    async def clusterer_shtag_set_active(tag: Any) -> Any:
        name, sep, c = str(tag).partition("/")
        if not sep:
            raise MiError(BAD_REQUEST, "Bad tag, expected name/cluster_id")
        cluster(c)
        if name not in node.shtags.tags:
            raise MiError(NOT_FOUND, "Sharing tag not found")
        await node.shtag_set_active(name)
        return "OK"

    @runtime.command("clusterer_list_shtags", fanout=True, doc="the sharing tags of this node")
    async def clusterer_list_shtags() -> Any:
        return [{"Tag": t, "Cluster": cid,
                 "State": "active" if node.shtags.is_active(t) else "backup", "Node": me}
                for t in sorted(node.shtags.tags)]

    @runtime.command("cluster_send_mi", (("cluster_id", "destination", "cmd_name"),
                                         ("cluster_id", "destination", "cmd_name",
                                          "cmd_params")),
                     doc="run an MI command on another node (asynchronous)")
    async def cluster_send_mi(cluster_id: Any, destination: Any, cmd_name: Any,
                              cmd_params: Any = None) -> Any:
        cluster(cluster_id)
        dst = int_param(destination, "destination")
        if dst == node.id:
            raise MiError(BAD_REQUEST, "Local node specified as destination")
        code = node.send_mi(dst, _name(cmd_name), _params(cmd_params))
        if code == SENT:
            return "OK"
        if code == DISABLED:
            return "Local node disabled"
        if code == UNREACHABLE:
            raise MiError(BAD_REQUEST, "Destination down")
        raise MiError(BAD_REQUEST, "Send error")

    @runtime.command("cluster_broadcast_mi", (("cluster_id", "cmd_name"),
                                              ("cluster_id", "cmd_name", "cmd_params")),
                     doc="run an MI command on every node of the cluster, this one included")
    async def cluster_broadcast_mi(cluster_id: Any, cmd_name: Any, cmd_params: Any = None) -> Any:
        cluster(cluster_id)
        name, params = _name(cmd_name), _params(cmd_params)
        node.broadcast_mi(name, params, local=False)
        # As OpenSIPS: sent to the others whatever happens, then the answer is the local run's.
        answer = json.loads(await run_local_mi(runtime, name, params) or "{}")
        if "error" in answer:
            err = answer["error"]
            raise MiError(int(err.get("code", 500)), str(err.get("message", "error")),
                          err.get("data"))
        return answer.get("result")

    stats = runtime.stats
    stats.group("clusterer", lambda: {
        "clusterer_nodes": len(set(node.peers) | set(node.views)),
        "clusterer_nodes_up": len(node.alive),
        "clusterer_nodes_down": len((set(node.peers) | set(node.views)) - node.alive),
        **{name: node.stats.get(name, 0) for name in STATS},
    })


async def run_local_mi(runtime: ServiceRuntime, cmd: str, params: Any) -> Any:
    """Runs an MI command received over the cluster on this process's dispatcher."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": cmd, "id": 1}
    if params not in (None, [], {}):
        request["params"] = params
    return await runtime.mi.dispatch(json.dumps(request))
