"""The gateway's node targeting (gateway.targeting) and the supervisor's per-node cluster
environment (sipmesh.supervisor.node_env): pure functions, checked on their own."""

from __future__ import annotations

import pytest

from gateway.targeting import named_cluster, named_view, pop_node, select, takes
from shared.cluster import ClusterConfig
from shared.config import load_section
from shared.discovery import Instance
from shared.rpc import MiError
from sipmesh.catalog import SERVICES, ChildSpec
from sipmesh.supervisor import MeshConfig, node_env


def inst(service: str, cluster: int, node: int) -> Instance:
    return Instance(service, f"{service}-{node}", "127.0.0.1", 1000 + node, meta={
        "cluster_id": str(cluster), "cluster_node_id": str(node), "mi_url": "http://x/mi"})


MESH = [inst("registrar", 1, n) for n in (1, 2, 3)] + [inst("demo", 2, n) for n in (1, 2)]


def test_node_id_is_popped_from_named_params_only() -> None:
    assert pop_node({"cluster_id": 2, "node_id": "3"}) == (3, {"cluster_id": 2})
    assert pop_node([2, 0]) == (None, [2, 0])
    assert pop_node(None) == (None, None)
    for bad in ("x", 0, -1, True, None, [1]):
        with pytest.raises(MiError) as err:
            pop_node({"node_id": bad})
        assert err.value.code == -32602


def test_the_cluster_a_command_names() -> None:
    assert named_cluster(named_view([2, 0], [["cluster_id", "status"]])) == "2"
    assert named_cluster(named_view({"tag": "vip/7"}, [])) == "7"
    assert named_cluster(named_view(["vip/7"], [["tag"]])) == "7"
    assert named_cluster(named_view([2, 0], [["cluster_id"]])) is None  # no recipe fits
    assert named_cluster({"cluster_id": "two"}) is None
    assert named_cluster({"tag": "vip"}) is None
    assert takes([["cluster_id", "status"]], "cluster_id")
    assert not takes([[]], "cluster_id")


def test_select_pins_one_node_of_one_cluster() -> None:
    assert [i.id for i in select(MESH, 2, "2")] == ["demo-2"]
    assert [i.id for i in select(MESH, 3, None)] == ["registrar-3"]  # only cluster 1 has 3
    assert [i.id for i in select(MESH, None, "1")] == ["registrar-1", "registrar-2",
                                                        "registrar-3"]
    with pytest.raises(MiError) as ambiguous:
        select(MESH, 1, None)
    assert ambiguous.value.code == -32602 and "add cluster_id" in str(ambiguous.value.data)
    with pytest.raises(MiError, match="Node 3 not found in cluster 2") as err:
        select(MESH, 3, "2")
    assert err.value.code == 404
    with pytest.raises(MiError, match="Cluster id not found"):
        select(MESH, None, "9")


def test_node_env_makes_node_i_of_n() -> None:
    spec = ChildSpec("svc", "svc", cluster_id=4, cluster_section="svc.cluster",
                     cluster_env=(("SIPMESH_SVC_MODE", "on"),), sharing_tags=("vip/4",),
                     port_env=("SIPMESH_SVC_HTTP_PORT",), sip_port_env="SIPMESH_SVC_SIP_PORT")
    base = {"SIPMESH_SVC_HTTP_PORT": "8000", "SIPMESH_SVC_CLUSTER_NODE_ID": "9"}
    envs = [node_env(spec, i, 3, "s3cret", base) for i in (1, 2, 3)]
    configs = [load_section(ClusterConfig, "svc.cluster", environ={**base, **e})
               for e in envs]
    for i, (env, cfg) in enumerate(zip(envs, configs, strict=True), start=1):
        cfg.validate()
        assert (cfg.cluster_id, cfg.node_id, cfg.seed) == (4, i, i == 1)
        assert cfg.member_ids() == frozenset({1, 2, 3})
        assert cfg.discovery_service == "svc" and cfg.secret == "s3cret"
        assert cfg.listen == "127.0.0.1:0" and cfg.sharing_tags == ("vip/4",)
        assert env["SIPMESH_SVC_MODE"] == "on" and env["SIPMESH_SVC_HTTP_PORT"] == "0"
        assert cfg.sip_addr == f"sip:127.0.0.1:{env['SIPMESH_SVC_SIP_PORT']}"
    assert len({e["SIPMESH_SVC_SIP_PORT"] for e in envs}) == 3
    # A secret the user fixed is kept.
    kept = node_env(spec, 1, 3, "random", {"SIPMESH_SVC_CLUSTER_SECRET": "mine"})
    assert kept["SIPMESH_SVC_CLUSTER_SECRET"] == "mine"


def test_catalog_clusters_are_distinct_and_demo_only_with_nodes() -> None:
    clustered = [s for s in SERVICES if s.clustered]
    assert len({s.cluster_id for s in clustered}) == len(clustered)
    assert all(s.cluster_section.endswith(".cluster") for s in clustered)
    assert [s.name for s in SERVICES if s.nodes_only] == ["cluster-demo"]
    with pytest.raises(ValueError, match="nodes"):
        MeshConfig(nodes=-1).validate()


def _plan(cfg: MeshConfig, base: dict[str, str]) -> dict[str, dict[str, str]]:
    from sipmesh.supervisor import Supervisor

    edge = next(s for s in SERVICES if s.name == "edge")
    dialog = next(s for s in SERVICES if s.name == "dialog")
    sup = Supervisor([edge, dialog], cfg, env=base, out=lambda _line: None)
    return {name: child.env for name, child in sup.children.items()}


def test_nodes_keeps_one_edge_and_edges_makes_an_anycast_cluster() -> None:
    base = {"SIPMESH_EDGE_LISTEN": "udp:127.0.0.1:0,tcp:127.0.0.1:5999"}
    # --nodes 3 alone: one plain edge (the dialog cluster tests rely on it), 3 dialog nodes.
    plan = _plan(MeshConfig(nodes=3), base)
    assert sorted(plan) == ["dialog.1", "dialog.2", "dialog.3", "edge"]
    assert plan["edge"] == {}
    # --edges 1 is one plain edge as well: one anycast node would have nobody to hand to.
    assert sorted(_plan(MeshConfig(edges=1), base)) == ["dialog", "edge"]
    plan = _plan(MeshConfig(edges=3), {**base, "SIPMESH_EDGE_AUTH_SECRET": "users"})
    assert sorted(plan) == ["dialog", "edge.1", "edge.2", "edge.3"]
    envs = [plan[f"edge.{i}"] for i in (1, 2, 3)]
    configs = [load_section(ClusterConfig, "edge.cluster", environ={**base, **e})
               for e in envs]
    for i, (env, cfg) in enumerate(zip(envs, configs, strict=True), start=1):
        cfg.validate()
        assert (cfg.cluster_id, cfg.node_id, cfg.discovery_service) == (5, i, "edge")
        assert env["SIPMESH_EDGE_TM_REPLICATION_CLUSTER"] == "true"
        assert env["SIPMESH_EDGE_WORKERS"] == "1" and env["SIPMESH_EDGE_HTTP_PORT"] == "0"
    # One address for all nodes: the port 0 fixed once, UDP marked anycast, TCP shared too.
    listens = {e["SIPMESH_EDGE_LISTEN"] for e in envs}
    assert len(listens) == 1
    udp, tcp = listens.pop().split(",")
    assert udp.startswith("udp:127.0.0.1:") and udp.endswith(";anycast")
    assert int(udp.split(":")[2].split(";")[0]) > 0 and tcp == "tcp:127.0.0.1:5999"
    # Record-Route and nonce secrets shared by every node; a user's own is kept.
    assert len({e["SIPMESH_EDGE_RR_SECRET"] for e in envs}) == 1
    assert {e["SIPMESH_EDGE_AUTH_SECRET"] for e in envs} == {"users"}
    with pytest.raises(ValueError, match="edges"):
        MeshConfig(edges=65).validate()


def test_an_unshareable_edge_listen_is_a_configuration_error() -> None:
    from sipmesh.supervisor import anycast_listen

    with pytest.raises(ValueError, match="listen"):
        anycast_listen(["bogus"])
    assert anycast_listen(["udp:[::1]:5070"]) == "udp:[::1]:5070;anycast"
