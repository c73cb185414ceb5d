"""`sipmesh up --edges 2`, the way an operator runs an anycast edge cluster: two edge nodes
of one cluster on one SIP address, sipp calling through it, statistics through the gateway.

The supervisor starts both nodes on the same `[edge] listen` address (SO_REUSEPORT). Real
anycast would let the network pick the node of each datagram; here the test plays the
network with the harness of tests/support/anycast.py: its control socket binds the
address first and its reuseport program sends every datagram to a random node, so the
replies of one node's transactions keep landing on the other one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dialog.harness import rpc
from tests.integration.edge.test_edge_anycast import sipp_calls
from tests.integration.spine.meshproc import MeshProcess
from tests.support.anycast import CLUSTER_TIMERS, AnycastGroup
from tests.support.ports import reserve_port
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.skipif(os.system("command -v sipp >/dev/null") != 0,
                                reason="sipp is installed by tests/peers/ensure.sh")

ANYCAST = "127.0.0.101"
CONTRACT = Path(__file__).resolve().parents[3] / "contracts" / "mi" / "tm_anycast.json"


class EdgesUp(MeshProcess):
    up_args = ("--edges", "2")  # what the operator types


class Up:
    def __init__(self, tmp: Path, group: AnycastGroup) -> None:
        env = {
            "SIPMESH_MESH_SERVICES": "gateway,edge",
            "SIPMESH_EDGE_LISTEN": f"udp:{group.host}:{group.port}",
            "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        }
        env.update({f"SIPMESH_EDGE_CLUSTER_{k}": v for k, v in CLUSTER_TIMERS.items()})
        self.mesh = EdgesUp(tmp, **env)

    def mi(self, method: str, params: Any = None) -> Any:
        answer = rpc(self.mesh.gateway_url, method, params)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def tm(self) -> dict[int, dict[str, int]]:
        """`tm_anycast` through the gateway (checked against contracts/mi): every node's
        counters, by node id."""
        import jsonschema

        result = self.mi("tm_anycast")
        jsonschema.validate(result, json.loads(CONTRACT.read_text())["result"])
        return {n["node_id"]: n for n in result["Nodes"]}

    def links_up(self) -> bool:
        clusters = self.mi("clusterer_list")["Clusters"]
        views = {c["local_node_id"]: {n["node_id"]: n["link_state"] for n in c["Nodes"]}
                 for c in clusters}
        return views == {1: {2: "Up"}, 2: {1: "Up"}}


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Up, AnycastGroup]]:
    group = AnycastGroup(ANYCAST, reserve_port())
    mesh: Up | None = None
    try:
        mesh = Up(tmp_path, group)
        mesh.mesh.line(r"^sipmesh modes: .*edges=2 anycast", 10)
        for node in (1, 2):
            mesh.mesh.line(rf"^endpoint edge cluster 5/{node} ", 30)
        eventually_sync(mesh.links_up, 30, "both edge nodes see each other Up",
                        ignore=(OSError, RuntimeError, KeyError))
        group.joined(1)  # two edge sockets joined the group: random over both of them
        group.joined(2)
        group.steer({})
        yield mesh, group
        assert group.strays() == [], "a datagram reached no edge node"
    finally:
        if mesh is not None:
            mesh.mesh.stop()
        group.close()


def test_sipmesh_up_with_two_anycast_edges_carries_calls_through_the_shared_address(
        up: tuple[Up, AnycastGroup], tmp_path: Path) -> None:
    mesh, group = up
    assert set(mesh.tm()) == {1, 2}
    sipp_calls(f"{ANYCAST}:{group.port}", tmp_path, calls=200, rate=40)
    nodes = mesh.tm()
    for node in (1, 2):
        # Each node owned transactions whose replies reached the other node, and handled
        # replies of the other node's transactions: replies landed on both nodes.
        assert nodes[node]["replies_out"] > 0, nodes
        assert nodes[node]["replies_in"] > 0, nodes
        assert nodes[node]["keys_announced"] > 0 and nodes[node]["keys_learned"] > 0, nodes
        assert nodes[node]["replication_failed"] == 0, nodes
    # The mesh-wide tm: statistics are the nodes' sum (counters may still move while the
    # last retransmissions settle: compared once both reads agree).
    def summed() -> bool:
        per_node = mesh.tm()
        total = mesh.mi("get_statistics", [["tm:replicated_in"]])["tm:replicated_in"]
        return bool(total == sum(n["replicated_in"] for n in per_node.values()))

    eventually_sync(summed, 10, "get_statistics tm: is the sum of the nodes")
