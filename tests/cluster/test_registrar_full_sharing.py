"""Two registrar processes in `full-sharing` mode on loopback (OpenSIPS usrloc
cluster_mode full-sharing): a binding saved on one node -- by a real REGISTER through the
edge -- shows in ul_dump of the other; a node killed with SIGKILL and restarted pulls the
whole table again (full sync on join), including what was saved while it was down."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.registrar_nodes import (
    aors,
    assert_pinged_once_per_round,
    cluster_url,
    mi,
    register_natted,
    synced,
)
from tests.integration.edge.edge_harness import Edge, free_port, start_edge, summary, wait_until
from tests.integration.registrar.harness import (
    SCENARIOS,
    Registrar,
    add_user,
    start_registrar,
)

pytestmark = pytest.mark.peers
SECRET = "full-sharing-test"


def node(store: Path, node_id: int, seeds: str = "") -> Registrar:
    return start_registrar(store, _cluster_env(node_id, seeds))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.sqlite"
    add_user(path, "alice@127.0.0.1", "alice-pw")
    add_user(path, "bob@127.0.0.1", "bob-pw")
    return path


@pytest.fixture
def nodes(store: Path) -> Iterator[list[Registrar]]:
    first = node(store, 1)
    second = node(store, 2, f"1@{cluster_url(first)}")
    running = [first, second]
    yield running
    for reg in running:
        reg.stop()


def sipp_register(workdir: Path, edge: Edge, user: str, password: str) -> int:
    cmd = ["sipp", "-sf", str(SCENARIOS / "register_auth.xml"), "-i", "127.0.0.1", "-p",
           str(free_port()), edge.address, "-s", user, "-au", user, "-ap", password, "-m", "1",
           "-nostdin", "-timeout", "15s", "-timeout_error"]
    result = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=45)
    assert result.returncode == 0, summary(result)
    return result.returncode


def test_binding_saved_on_one_node_shows_on_the_other_and_survives_kill_9(
        nodes: list[Registrar], store: Path, tmp_path: Path) -> None:
    first, second = nodes
    wait_until(lambda: synced(first) and synced(second), 20, "both nodes synced")
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": first.grpc})
    try:
        sipp_register(tmp_path, edge, "alice", "alice-pw")
        assert "alice@127.0.0.1" in aors(first)
        wait_until(lambda: "alice@127.0.0.1" in aors(second), 10, "alice replicated")
        [contact] = mi(second, "ul_show_contact", ["location", "alice@127.0.0.1"]
                       )["result"]["Contacts"]
        assert contact["Callid"] and contact["Cseq"] == 2

        os.kill(second.proc.pid, signal.SIGKILL)
        second.proc.wait(10)
        sipp_register(tmp_path, edge, "bob", "bob-pw")  # while node 2 is down
        restarted = node(store, 2, f"1@{cluster_url(first)}")
        nodes[1] = restarted
        wait_until(lambda: synced(restarted), 20, "restarted node synced")
        wait_until(lambda: aors(restarted) == {"alice@127.0.0.1", "bob@127.0.0.1"}, 10,
                   "full table on the restarted node")
        # And changes keep flowing both ways: a removal on the restarted node reaches node 1.
        assert mi(restarted, "ul_rm", ["location", "alice@127.0.0.1"])["result"] == "OK"
        wait_until(lambda: aors(first) == {"bob@127.0.0.1"}, 10, "removal replicated")
    finally:
        edge.stop()


def test_each_natted_binding_is_pinged_by_exactly_one_node(store: Path, tmp_path: Path) -> None:
    # Both nodes ping every 0.3 s; AORs are split by crc32(aor) % 2 over the synced nodes.
    # If both pinged everything, twice as many OPTIONS would leave per round.
    ping = {"SIPMESH_REGISTRAR_NATPING_INTERVAL": "0.3",
            "SIPMESH_REGISTRAR_PING_THRESHOLD": "0.25",
            "SIPMESH_REGISTRAR_MAX_PINGS_LOST": "100000"}
    users = [f"nat{i}" for i in range(8)]
    for user in users:
        add_user(store, f"{user}@127.0.0.1", "pw")
    first = start_registrar(store, {**ping, **_cluster_env(1)})
    second = start_registrar(store, {**ping, **_cluster_env(2, f"1@{cluster_url(first)}")})
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": first.grpc})
    try:
        wait_until(lambda: synced(first) and synced(second), 20, "both nodes synced")
        register_natted(tmp_path, edge, users, "pw")
        wait_until(lambda: len(aors(second)) == len(users), 10, "bindings replicated")

        assert_pinged_once_per_round(first, second, len(users))
    finally:
        edge.stop()
        second.stop()
        first.stop()


def _cluster_env(node_id: int, seeds: str = "") -> dict[str, str]:
    env = {"SIPMESH_REGISTRAR_CLUSTER_MODE": "full-sharing",
           "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": str(node_id),
           "SIPMESH_REGISTRAR_CLUSTER_SECRET": SECRET,
           "SIPMESH_REGISTRAR_CLUSTER_PING_INTERVAL": "0.5",
           "SIPMESH_REGISTRAR_CLUSTER_PING_TIMEOUT": "0.3",
           "SIPMESH_REGISTRAR_CLUSTER_SEED_FALLBACK_INTERVAL": "1"}
    if seeds:
        env["SIPMESH_REGISTRAR_CLUSTER_SEEDS"] = seeds
    else:
        env["SIPMESH_REGISTRAR_CLUSTER_SEED"] = "true"
    return env


def test_kill_9_under_registration_load_loses_no_binding(store: Path, tmp_path: Path) -> None:
    # 300 users register through an edge into node 1 at 60/s while node 2 is killed with
    # SIGKILL and restarted: afterwards both nodes hold all 300 AORs.
    users = tmp_path / "users.csv"
    users.write_text("SEQUENTIAL\n" + "".join(f"load{i}\n" for i in range(300)))
    first = node(store, 1)
    second = node(store, 2, f"1@{cluster_url(first)}")
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": first.grpc,
                       "SIPMESH_EDGE_REGISTER_AUTH": "false"})
    load = None
    try:
        wait_until(lambda: synced(first) and synced(second), 20, "both nodes synced")
        load = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIOS / "register_csv.xml"), "-inf", str(users), "-i",
             "127.0.0.1", "-p", str(free_port()), edge.address, "-m", "300", "-r", "60",
             "-nostdin", "-timeout", "30s", "-timeout_error"], cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: len(aors(second)) >= 60, 15, "load replicating")
        os.kill(second.proc.pid, signal.SIGKILL)
        second.proc.wait(10)
        wait_until(lambda: len(aors(first)) >= 150, 15, "load going on without node 2")
        second = node(store, 2, f"1@{cluster_url(first)}")
        assert load.wait(60) == 0, "every registration got its 200"
        expected = {f"load{i}@127.0.0.1" for i in range(300)}
        assert aors(first) == expected
        wait_until(lambda: aors(second) == expected, 20, "restarted node has every AOR")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(5)
        edge.stop()
        second.stop()
        first.stop()
