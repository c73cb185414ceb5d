"""`sipmesh up --nodes 3` for real: three cluster-demo nodes (cluster 2, sharing tag vip/2)
and three registrar nodes (cluster 1, full sharing) under the supervisor, watched and driven
only through the gateway's MI over HTTP (and opensips-cli), as a user would on a laptop.

Kill -9 of the node holding the tag: a backup takes it, the supervisor restarts the node,
which comes back Up and resynced (data written while it was down included); a node disabled
with clusterer_set_status is seen Down by its peers. Every answer is validated against its
contracts/mi schema."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest

from tests.integration.spine.meshproc import ROOT, MeshProcess
from tests.support import opensips_cli
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(150)
MI = ROOT / "contracts" / "mi"
DEMO = 2  # cluster ids from sipmesh/catalog.py
REGISTRAR = 1
TIMERS = {"PING_INTERVAL": "0.5", "PING_TIMEOUT": "0.3", "SEED_FALLBACK_INTERVAL": "1"}


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls ``check`` (each poll is an MI round trip) until it is truthy."""
    return eventually_sync(check, timeout, what, interval=0.1)


class Gateway:
    def __init__(self, url: str) -> None:
        self.url = url
        self.schemas: dict[str, Any] = {}

    def raw(self, method: str, params: Any = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        req = urllib.request.Request(self.url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def __call__(self, method: str, params: Any = None) -> Any:
        answer = self.raw(method, params)
        assert "result" in answer, answer
        path = MI / f"{method}.json"
        if path.exists():
            schema = self.schemas.setdefault(method, json.loads(path.read_text()))
            jsonschema.validate(answer["result"], schema["result"])
        return answer["result"]

    # -- views -----------------------------------------------------------------------
    def views(self, cluster: int, **target: Any) -> dict[int, dict[int, str]]:
        """``answering node -> {peer: link state}`` from clusterer_list."""
        out = {}
        for c in self("clusterer_list", {"cluster_id": cluster, **target})["Clusters"]:
            assert c["cluster_id"] == cluster
            out[c["local_node_id"]] = {n["node_id"]: n["link_state"] for n in c["Nodes"]}
        return out

    def all_up(self, cluster: int, nodes: set[int]) -> bool:
        if "result" not in self.raw("clusterer_list", {"cluster_id": cluster}):
            return False  # no node of that cluster registered yet
        views = self.views(cluster)
        return set(views) == nodes and all(
            view == {n: "Up" for n in nodes - {me}} for me, view in views.items())

    def holders(self) -> list[int]:
        return [t["Node"] for t in self("clusterer_list_shtags", {"cluster_id": DEMO})
                if t["Tag"] == "vip" and t["State"] == "active"]

    def sole_holder(self, besides: int = 0) -> int | None:
        """The node holding vip/2 when exactly one does (and it is not ``besides``)."""
        holders = self.holders()
        return holders[0] if len(holders) == 1 and holders[0] != besides else None

    def pid(self, cluster: int, node: int) -> int:
        for proc in self("ps")["Processes"]:
            if proc["Type"].endswith(f" cluster {cluster} node {node}"):
                return int(proc["PID"])
        raise AssertionError(f"no process for node {node} of cluster {cluster}")

    def cap_ok(self, node: int) -> bool:
        [c] = self("clusterer_list_cap", {"cluster_id": DEMO, "node_id": node})["Clusters"]
        return c["local_node_id"] == node and all(
            cap["state"] == "Ok" for cap in c["Capabilities"])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    tmp = tmp_path_factory.mktemp("mesh-nodes")
    # SIPMESH_MESH_NODES=3 is `sipmesh up --nodes 3` (the flag: test_nodes_flag below).
    env = {"SIPMESH_MESH_SERVICES": "gateway,registrar,cluster-demo", "SIPMESH_MESH_NODES": "3",
           # Long enough that the peers declare a killed node Down before it is back.
           "SIPMESH_MESH_BACKOFF_INITIAL": "4",
           "SIPMESH_REGISTRAR_STORE": str(tmp / "subscribers.sqlite")}
    for section in ("DEMO", "REGISTRAR"):
        env.update({f"SIPMESH_{section}_CLUSTER_{k}": v for k, v in TIMERS.items()})
    m = MeshProcess(tmp, **env)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mesh: MeshProcess) -> Gateway:
    return Gateway(mesh.gateway_url)


def test_three_nodes_per_clustered_service_all_up(mesh: MeshProcess, gw: Gateway) -> None:
    for service in ("cluster-demo", "registrar"):
        for node in (1, 2, 3):
            mesh.line(rf"^started {service}\.{node} pid \d+")
    wait_until(lambda: gw.all_up(DEMO, {1, 2, 3}), 30, "3 demo nodes Up")
    wait_until(lambda: gw.all_up(REGISTRAR, {1, 2, 3}), 30, "3 registrar nodes Up")
    # Untargeted, the fan-out answer holds both clusters, each node's view once.
    clusters = gw("clusterer_list")["Clusters"]
    assert sorted((c["cluster_id"], c["local_node_id"]) for c in clusters) == [
        (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    # node_id targets one node; a node id present in both clusters needs the cluster.
    assert set(gw.views(DEMO, node_id=2)) == {2}
    ambiguous = gw.raw("clusterer_list", {"node_id": 2})["error"]
    assert ambiguous["code"] == -32602 and "add cluster_id" in ambiguous["data"]
    assert gw.raw("clusterer_list", {"cluster_id": DEMO, "node_id": 7})["error"] == {
        "code": 404, "message": "Node 7 not found in cluster 2"}
    assert gw.raw("clusterer_list", {"node_id": "x"})["error"]["code"] == -32602
    # A positional cluster_id keeps the command in its cluster (registrar nodes would
    # answer "Cluster id not found"): every round-robin pick lands on a demo node.
    for _ in range(4):
        assert gw("clusterer_set_status", [DEMO, 1]) == "OK"
    assert gw.raw("clusterer_set_status", [9, 1])["error"]["code"] == 404
    # The registrar nodes run user location replication, synced on every node.
    wait_until(lambda: all(
        [cap["name"] for cap in c["Capabilities"] if cap["state"] == "Ok"]
        == ["usrloc-contact-repl"]
        for c in gw("clusterer_list_cap", {"cluster_id": REGISTRAR})["Clusters"]), 20,
        "usrloc-contact-repl Ok on the registrar nodes")


def test_sipmesh_rpc_targets_a_node(mesh: MeshProcess, gw: Gateway) -> None:
    wait_until(lambda: gw.sole_holder(), 20, "exactly one active vip/2")
    done = mesh.cli("rpc", "--url", mesh.gateway_url, "--json", "clusterer_list_shtags",
                    "cluster_id=2", "node_id=2")
    assert done.returncode == 0, done.stderr
    [tag] = json.loads(done.stdout)
    assert (tag["Tag"], tag["Cluster"], tag["Node"]) == ("vip", DEMO, 2)


def receive_events(sock: socket.socket, want: Callable[[list[dict[str, Any]]], bool],
                   timeout: float) -> list[dict[str, Any]]:
    """Event notifications (JSON-RPC datagrams) read until ``want`` holds for them."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not want(got):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"events seen: {got}"
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        note = json.loads(data)
        got.append({"event": note["method"], **note["params"]})
    return got


def test_kill_9_of_the_tag_holder_fails_over_restarts_and_resyncs(
        mesh: MeshProcess, gw: Gateway) -> None:
    wait_until(lambda: gw.all_up(DEMO, {1, 2, 3}), 30, "3 demo nodes Up")
    holder = wait_until(lambda: gw.sole_holder(), 20, "exactly one active vip/2")
    others = sorted({1, 2, 3} - {holder})
    assert gw("kv_put", {"key": "before", "value": "1", "node_id": others[0],
                         "cluster_id": DEMO}) == {"sent": 1}
    pid = gw.pid(DEMO, holder)
    events = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    events.bind(("127.0.0.1", 0))
    sink = f"udp:127.0.0.1:{events.getsockname()[1]}"
    for name in ("E_CLUSTERER_NODE_STATE_CHANGED", "E_CLUSTERER_SHARING_TAG_CHANGED"):
        assert gw("event_subscribe", [name, sink, 120]) == "OK"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    new_holder = wait_until(lambda: gw.sole_holder(besides=holder), 10,
                            "a backup taking vip/2")
    assert new_holder in others
    takeover = time.monotonic() - killed
    # The events reach a subscriber at the gateway (OpenSIPS event interface): the new
    # holder's tag change, and each survivor's "node down".
    seen = receive_events(events, lambda got: any(
        e["event"] == "E_CLUSTERER_SHARING_TAG_CHANGED" and e["node_id"] == new_holder
        and e["state"] == 1 and e["cluster_id"] == DEMO for e in got) and sum(
            e["event"] == "E_CLUSTERER_NODE_STATE_CHANGED" and e["node_id"] == holder
            and e["new_state"] == 0 and e["cluster_id"] == DEMO for e in got) >= 2, 10)
    assert {e["name"] for e in seen if "name" in e} <= {"vip"}
    events.close()
    for node in others:
        assert gw.views(DEMO, node_id=node)[node][holder] in ("Down", "Probe")
    # Written while the old holder is down: it must come back with it (full sync).
    gw("kv_put", {"key": "while-down", "value": "2", "node_id": new_holder,
                  "cluster_id": DEMO})
    mesh.expect(rf"^exited cluster-demo\.{holder} pid {pid} rc -9; restart in 4s", 10)
    mesh.expect(rf"^started cluster-demo\.{holder} pid (?!{pid}\b)\d+", 15)
    wait_until(lambda: gw.all_up(DEMO, {1, 2, 3}), 30, "restarted node Up again")
    wait_until(lambda: gw.cap_ok(holder), 20, "restarted node synced")
    [sync] = gw("clusterer_list_sync", {"cluster_id": DEMO, "node_id": holder}
                )["Clusters"][0]["Capabilities"]
    assert sync["name"] == "demo-kv-repl" and sync["state"] == "Ok"
    assert sync["donor"] in others and sync["records"] == 2
    for key, value in (("before", "1"), ("while-down", "2")):
        assert gw("kv_get", {"key": key, "node_id": holder, "cluster_id": DEMO}) == {
            "key": key, "value": value}
    # Sticky: the returning node does not take the tag back.
    assert gw.holders() == [new_holder]
    print(f"takeover {takeover:.2f}s after kill -9")


def test_disabled_node_is_seen_down_by_its_peers(gw: Gateway) -> None:
    wait_until(lambda: gw.all_up(DEMO, {1, 2, 3}), 30, "3 demo nodes Up")
    assert gw("clusterer_set_status", {"cluster_id": DEMO, "status": 0, "node_id": 3}) == "OK"
    try:
        wait_until(lambda: all(gw.views(DEMO, node_id=n)[n][3] == "Down" for n in (1, 2)),
                   15, "node 3 Down for nodes 1 and 2")
        assert gw("cluster_send_mi", {"cluster_id": DEMO, "destination": 1,
                                      "cmd_name": "uptime", "node_id": 3}
                  ) == "Local node disabled"
    finally:
        gw("clusterer_set_status", {"cluster_id": DEMO, "status": 1, "node_id": 3})
    wait_until(lambda: gw.all_up(DEMO, {1, 2, 3}), 20, "node 3 Up again")


def _opensips_cli(url: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return opensips_cli.mi(url, *cmd)


def test_opensips_cli_clusterer_list(mesh: MeshProcess, gw: Gateway) -> None:
    wait_until(lambda: gw.all_up(DEMO, {1, 2, 3}), 30, "3 demo nodes Up")
    every = _opensips_cli(mesh.gateway_url, "clusterer_list")
    assert every.returncode == 0, every.stderr
    assert len(json.loads(every.stdout)["Clusters"]) == 6
    one = _opensips_cli(mesh.gateway_url, "clusterer_list", "cluster_id=2", "node_id=1")
    assert one.returncode == 0, one.stderr
    [cluster] = json.loads(one.stdout)["Clusters"]
    assert cluster["local_node_id"] == 1
    assert {n["node_id"]: n["link_state"] for n in cluster["Nodes"]} == {2: "Up", 3: "Up"}
    assert re.search(r"cluster-demo node 2", one.stdout)


def test_ps_names_each_node(gw: Gateway) -> None:
    kinds = [p["Type"] for p in gw("ps")["Processes"]]
    for cluster, service in ((REGISTRAR, "registrar"), (DEMO, "cluster-demo")):
        assert sorted(k.split()[-1] for k in kinds if k.startswith(f"{service} ")
                      and k.endswith(tuple(f"cluster {cluster} node {n}" for n in (1, 2, 3)))
                      ) == ["1", "2", "3"]



def test_nodes_flag_is_validated(mesh: MeshProcess) -> None:
    bad = mesh.cli("up", "--nodes", "65")
    assert bad.returncode == 2 and "[mesh] nodes must be between 0 and 64" in bad.stderr


def test_every_clusterer_command_through_the_gateway(gw: Gateway) -> None:
    wait_until(lambda: gw.all_up(DEMO, {1, 2, 3}), 30, "3 demo nodes Up")
    [topology] = gw("clusterer_list_topology", {"cluster_id": DEMO, "node_id": 1})["Clusters"]
    assert {n["node_id"]: sorted(n["Neighbours"]) for n in topology["Nodes"]} == {
        1: [2, 3], 2: [1, 3], 3: [1, 2]}
    # Moving the tag: the node asked becomes the only holder.
    target = next(n for n in (1, 2, 3) if n != gw.sole_holder())
    assert gw("clusterer_shtag_set_active", {"tag": "vip/2", "node_id": target}) == "OK"
    wait_until(lambda: gw.sole_holder() == target, 10, f"vip/2 moved to node {target}")
    # MI over the cluster: from node 1 to node 2 only, then from node 3 to all.
    assert gw("cluster_send_mi", {"cluster_id": DEMO, "destination": 2, "cmd_name": "kv_put",
                                  "cmd_params": ["sent", "x"], "node_id": 1}) == "OK"
    wait_until(lambda: gw("kv_get", {"key": "sent", "cluster_id": DEMO, "node_id": 2}
                          )["value"] == "x", 10, "cluster_send_mi ran on node 2")
    # The answer is the local run's (kv_fill answers the store's size on node 3).
    answer = gw("cluster_broadcast_mi", {"cluster_id": DEMO, "cmd_name": "kv_fill",
                                         "cmd_params": [5, 20, "b"], "node_id": 3})
    assert answer == {"count": gw("kv_count", {"cluster_id": DEMO, "node_id": 3})["count"]}
    assert answer["count"] >= 5
    wait_until(lambda: all(
        gw("kv_get", {"key": "b000000000004", "cluster_id": DEMO, "node_id": n})["value"]
        for n in (1, 2, 3)), 10, "cluster_broadcast_mi ran on every node")
