"""Two registrar processes in `full-sharing` mode on loopback (OpenSIPS usrloc
cluster_mode full-sharing): a binding saved on one node -- by a real REGISTER through the
edge -- shows in ul_dump of the other; a node killed with SIGKILL and restarted pulls the
whole table again (full sync on join), including what was saved while it was down.
Kill -9 under registration load, in every cluster mode: test_registrar_chaos.py."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import EXIT_CONFIG
from tests.cluster.registrar_nodes import (
    aors,
    assert_pinged_once_per_round,
    cluster_url,
    mi,
    register_natted,
    start_pair,
    stop_all,
    synced,
)
from tests.integration.edge.edge_harness import Edge, free_port, start_edge, summary, wait_until
from tests.integration.registrar.harness import (
    SCENARIOS,
    Registrar,
    add_users,
    start_registrar,
)

pytestmark = pytest.mark.peers
SECRET = "full-sharing-test"


def node(store: Path, node_id: int, seeds: str = "") -> Registrar:
    return start_registrar(store, _cluster_env(node_id, seeds))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.sqlite"
    add_users(path, {"alice@127.0.0.1": "alice-pw", "bob@127.0.0.1": "bob-pw"})
    return path


@pytest.fixture
def nodes(store: Path) -> Iterator[list[Registrar]]:
    first = node(store, 1)
    second = node(store, 2, f"1@{cluster_url(first)}")
    running = [first, second]
    yield running
    stop_all(*running)


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
        # Until node 2 is declared failed, node 1 cannot replicate and answers 503 (the
        # acknowledgement rule); then it registers alone and node 2 syncs on its return.
        wait_until(lambda: link_state(first, 2) == "Down", 10, "node 2 declared down")
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


def link_state(reg: Registrar, node_id: int) -> str:
    nodes = mi(reg, "clusterer_list")["result"]["Clusters"][0]["Nodes"]
    return next((n["link_state"] for n in nodes if n["node_id"] == node_id), "absent")


def test_each_natted_binding_is_pinged_by_exactly_one_node(store: Path, tmp_path: Path) -> None:
    # Both nodes ping every 0.3 s; AORs are split by crc32(aor) % 2 over the synced nodes.
    # If both pinged everything, twice as many OPTIONS would leave per round.
    ping = {"SIPMESH_REGISTRAR_NATPING_INTERVAL": "0.3",
            "SIPMESH_REGISTRAR_PING_THRESHOLD": "0.25",
            "SIPMESH_REGISTRAR_MAX_PINGS_LOST": "100000"}
    users = [f"nat{i}" for i in range(8)]
    add_users(store, {f"{user}@127.0.0.1": "pw" for user in users})
    first = start_registrar(store, {**ping, **_cluster_env(1)})
    second, edge = start_pair(
        lambda: start_registrar(store, {**ping, **_cluster_env(2, f"1@{cluster_url(first)}")}),
        lambda: start_edge({"SIPMESH_EDGE_REGISTRAR": first.grpc}))
    try:
        wait_until(lambda: synced(first) and synced(second), 20, "both nodes synced")
        register_natted(tmp_path, edge, users, "pw")
        wait_until(lambda: len(aors(second)) == len(users), 10, "bindings replicated")

        assert_pinged_once_per_round(first, second, len(users))
    finally:
        stop_all(edge, second, first)


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


def test_no_secret_no_cluster(tmp_path: Path) -> None:
    # A clustered registrar without a secret refuses to start, with one clear line.
    import sys

    from tests.integration.registrar.harness import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPMESH_")}
    env.update({"SIPMESH_REGISTRAR_CLUSTER_MODE": "full-sharing",
                "SIPMESH_REGISTRAR_STORE": str(tmp_path / "s.sqlite")})
    out = subprocess.run([sys.executable, "-m", "services.registrar"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == EXIT_CONFIG  # a configuration error: no restart by sipmesh up
    assert out.stderr.strip().splitlines() == [
        "registrar: configuration error: [cluster] secret is empty: a cluster needs a shared "
        "secret (secret in [<service>.cluster], or SIPMESH_<SERVICE>_CLUSTER_SECRET)"]
