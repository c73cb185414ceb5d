"""Node targeting: which instance of a clustered service runs an MI command.

In OpenSIPS every MI call goes to one opensips instance -- one cluster node. Behind the
gateway the nodes of a cluster are instances of one service, each announcing its node in
its discovery metadata (``cluster_id``, ``cluster_node_id``: ``ClusterNode.meta()``), so the
gateway picks the instance from two things:

* the optional targeting param ``node_id`` (named params only: ``clusterer_set_status
  cluster_id=2 status=0 node_id=3``), which the gateway strips before forwarding: the
  command runs on that node only (a cluster-wide, fan-out command then answers that node's
  view alone);
* the cluster the command names -- its own ``cluster_id`` param, or the ``/<cluster>``
  suffix of a sharing tag (``tag=vip/2``) -- which keeps the command inside that cluster
  when several clustered services declare it (each service is its own cluster). Positional
  params are matched to names with the command's parameter sets (``which``). A
  ``cluster_id`` given to a command that takes none (``clusterer_list cluster_id=2``) is a
  targeting param too, and stripped.

Without ``node_id`` a command goes where it went before: every node of the cluster for a
fan-out command, one node round-robin otherwise. The functions here are pure; the router
does the I/O (:mod:`gateway.router`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.discovery import Instance
from shared.rpc import INVALID_PARAMS, NOT_FOUND, MiError

NODE_PARAM = "node_id"
CLUSTER_PARAM = "cluster_id"


def is_clustered(inst: Instance) -> bool:
    return "cluster_node_id" in inst.meta and "cluster_id" in inst.meta


def pop_node(params: Any) -> tuple[int | None, Any]:
    """``(node_id, params without it)``; a malformed node_id is the client's error."""
    if not isinstance(params, dict) or NODE_PARAM not in params:
        return None, params
    rest = {k: v for k, v in params.items() if k != NODE_PARAM}
    value = params[NODE_PARAM]
    try:
        if isinstance(value, bool):
            raise ValueError
        node = int(value)
        if node <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise MiError(INVALID_PARAMS, "Invalid params",
                      "node_id must be a positive integer (the target cluster node)") from None
    return node, rest


def named_view(params: Any, recipes: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The params as ``name -> value`` (positional ones through the recipe of that length)."""
    if isinstance(params, dict):
        return dict(params)
    if isinstance(params, list):
        for recipe in recipes:
            if len(recipe) == len(params):
                return dict(zip(recipe, params, strict=True))
    return {}


def named_cluster(named: Mapping[str, Any]) -> str | None:
    """The cluster a command's params name: ``cluster_id``, else a ``tag`` ``name/cluster``."""
    value = named.get(CLUSTER_PARAM)
    if value is None and isinstance(named.get("tag"), str) and "/" in named["tag"]:
        value = named["tag"].rpartition("/")[2]
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text if text.isdigit() else None


def takes(recipes: Sequence[Sequence[str]], param: str) -> bool:
    return any(param in recipe for recipe in recipes)


def select(instances: Sequence[Instance], node: int | None,
           cluster: str | None) -> list[Instance]:
    """The instances a command may go to (raises the client's error when none fits)."""
    chosen = list(instances)
    if cluster is not None:
        chosen = [i for i in chosen if i.meta.get("cluster_id") == cluster]
        if not chosen:
            raise MiError(NOT_FOUND, "Cluster id not found")
    if node is None:
        return chosen
    chosen = [i for i in chosen if i.meta.get("cluster_node_id") == str(node)]
    if not chosen:
        where = f" in cluster {cluster}" if cluster is not None else ""
        raise MiError(NOT_FOUND, f"Node {node} not found{where}")
    clusters = sorted({i.meta.get("cluster_id", "") for i in chosen})
    if len(clusters) > 1:
        raise MiError(INVALID_PARAMS, "Invalid params",
                      f"node_id {node} is a node of clusters {', '.join(clusters)}: "
                      f"add cluster_id")
    return chosen[:1]


__all__ = ["CLUSTER_PARAM", "NODE_PARAM", "is_clustered", "named_cluster", "named_view",
           "pop_node", "select", "takes"]
