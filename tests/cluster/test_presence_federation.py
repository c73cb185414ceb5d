"""Federation (OpenSIPS 2.4 cluster_federation_mode=1): two presence nodes, each with its
own store and its own watchers (`sipmesh up --nodes 2`, `[presence] cluster_mode =
"federation"`), and two edges: the mesh's (which hands presence requests to one node) and
a second one pointed at the other node, as two points of presence would be. A PUBLISH
taken by node A reaches a watcher subscribed on node B (CL_PRESENCE_PUBLISH); a watcher
subscribing on B to a presentity only A knows gets its state by B's query (PRES_QUERY).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.test_presence_cluster import node_mi, nodes
from tests.integration.edge.edge_harness import Edge, start_edge
from tests.integration.presence.harness import PresenceMesh, sipp_failure, wait_for

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def pops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PresenceMesh, Edge,
                                                                     int, int]]:
    m = PresenceMesh(
        tmp_path_factory.mktemp("presence-federation"), SIPMESH_MESH_NODES="2",
        SIPMESH_MESH_SERVICES="gateway,edge,presence",
        SIPMESH_PRESENCE_CLUSTER_MODE="federation",
        SIPMESH_PRESENCE_CLUSTER_PING_INTERVAL="0.2",
        SIPMESH_PRESENCE_CLUSTER_PING_TIMEOUT="0.3",
        SIPMESH_PRESENCE_CLUSTER_PING_RETRIES="2")
    edge = None
    try:
        wait_for(lambda: len(nodes(m)) == 2, 20, "two presence nodes in discovery")
        found = nodes(m)
        # The mesh's edge asks the first node by address; the second edge the other one.
        by_addr = sorted(found, key=lambda n: found[n]["grpc"])
        a, b = by_addr[0], by_addr[1]
        edge = start_edge({"SIPMESH_EDGE_PRESENCE": found[b]["grpc"],
                           "SIPMESH_EDGE_LOCAL_DOMAINS": "127.0.0.1"})
        wait_for(lambda: all(node_mi(found[n], "clusterer_list") for n in (a, b)), 20,
                 "the nodes linked")
        yield m, edge, a, b
    finally:
        if edge is not None:
            edge.stop()
        m.stop()


def node_subs(mesh: PresenceMesh, node: int, user: str) -> list[object]:
    subs = node_mi(nodes(mesh)[node], "subs_phtable_list")["Subscriptions"]
    return [s for s in subs if s["to_user"] == user]


def node_pubs(mesh: PresenceMesh, node: int, user: str) -> list[object]:
    pubs = node_mi(nodes(mesh)[node], "pres_phtable_list")["Presentities"]
    return [p for p in pubs if p["pres_uri"] == f"sip:{user}@127.0.0.1"]


def test_a_publish_on_node_a_reaches_a_watcher_on_node_b(
        pops: tuple[PresenceMesh, Edge, int, int]) -> None:
    mesh, edge_b, a, b = pops
    watcher = mesh.sipp_run("watcher.xml", "judy", background=True, edge=edge_b.address)
    wait_for(lambda: node_subs(mesh, b, "judy"), 20, "judy's watcher on node B")
    assert node_subs(mesh, a, "judy") == []  # each node keeps its own watchers
    publisher = mesh.sipp_run("publisher.xml", "judy", keys=[("basic", "open"),
                                                            ("expires", "60")])
    assert publisher.returncode == 0, sipp_failure(mesh, publisher)
    assert node_pubs(mesh, a, "judy")
    assert watcher.wait(60) == 0, sipp_failure(mesh, watcher)
    # B kept a copy while it had a watcher; A took the PUBLISH.
    assert node_pubs(mesh, b, "judy")


def test_a_watcher_on_node_b_gets_what_only_node_a_knows(
        pops: tuple[PresenceMesh, Edge, int, int]) -> None:
    mesh, edge_b, a, b = pops
    publisher = mesh.sipp_run("publisher.xml", "kate", keys=[("basic", "open"),
                                                            ("expires", "60")])
    assert publisher.returncode == 0, sipp_failure(mesh, publisher)
    assert node_pubs(mesh, a, "kate") and node_pubs(mesh, b, "kate") == []  # no watcher on B
    watcher = mesh.sipp_run("watcher.xml", "kate", background=True, edge=edge_b.address)
    # The first NOTIFY is empty (B knew nothing); B's query brings A's publication and the
    # NOTIFY with <basic>open</basic> that the watcher waits for.
    assert watcher.wait(60) == 0, sipp_failure(mesh, watcher)
