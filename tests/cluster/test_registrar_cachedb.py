"""Registrar processes in the two cachedb cluster modes against the real Redis at
127.0.0.1:6379 (OpenSIPS usrloc cluster_mode federation-cachedb / full-sharing-cachedb).

full-sharing-cachedb: every binding lives in Redis, so every node's ul_dump is the same
table -- also for a node killed with SIGKILL under registration load and restarted; the
cluster only splits the pinging (each natted binding pinged by exactly one node).

federation-cachedb: two points of presence (PoP A = registrars 1 and 2 behind edge A, PoP B
= registrar 3 behind edge B).  Bindings replicate only inside a PoP (same SIP address);
Redis holds AOR -> home SIP address, so a call for a user registered in PoP A, sent to
edge B, is forked by edge B to edge A, which delivers it to the phone.

Each test uses a Redis key prefix of its own and deletes its keys afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster.registrar_nodes import (
    aors,
    assert_pinged_once_per_round,
    cluster_url,
    linked,
    mi,
    register_natted,
    start_pair,
    stop_all,
    synced,
)
from tests.integration.edge.edge_harness import (
    Edge,
    Sipp,
    free_port,
    start_edge,
    summary,
    wait_until,
)
from tests.integration.registrar.harness import (
    SCENARIOS,
    Registrar,
    add_user,
    add_users,
    start_registrar,
)

pytestmark = pytest.mark.peers
SECRET = "cachedb-test"
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test:ul{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=f"{name}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.sqlite"
    add_user(path, "alice@127.0.0.1", "alice-pw")
    return path


def env(mode: str, prefix: str, node_id: int, seeds: str = "", sip_addr: str = "",
        **extra: str) -> dict[str, str]:
    out = {"SIPMESH_REGISTRAR_CLUSTER_MODE": mode,
           "SIPMESH_REGISTRAR_CACHEDB_URL": REDIS,
           "SIPMESH_REGISTRAR_CACHEDB_PREFIX": prefix,
           "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": str(node_id),
           "SIPMESH_REGISTRAR_CLUSTER_SECRET": SECRET,
           "SIPMESH_REGISTRAR_CLUSTER_PING_INTERVAL": "0.5",
           "SIPMESH_REGISTRAR_CLUSTER_PING_TIMEOUT": "0.3",
           "SIPMESH_REGISTRAR_CLUSTER_SEED_FALLBACK_INTERVAL": "1"}
    if seeds:
        out["SIPMESH_REGISTRAR_CLUSTER_SEEDS"] = seeds
    else:
        out["SIPMESH_REGISTRAR_CLUSTER_SEED"] = "true"
    if sip_addr:
        out["SIPMESH_REGISTRAR_CLUSTER_SIP_ADDR"] = sip_addr
    out.update({f"SIPMESH_REGISTRAR_{k.upper()}": v for k, v in extra.items()})
    return out


def load(tmp_path: Path, edge: Edge, count: int, rate: int) -> subprocess.Popen[bytes]:
    users = tmp_path / "users.csv"
    users.write_text("SEQUENTIAL\n" + "".join(f"load{i}\n" for i in range(count)))
    return subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "register_csv.xml"), "-inf", str(users), "-i",
         "127.0.0.1", "-p", str(free_port()), edge.address, "-m", str(count), "-r", str(rate),
         "-nostdin", "-timeout", "30s", "-timeout_error"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def acked_load(tmp_path: Path, edge: Edge, count: int, rate: int) -> subprocess.Popen[bytes]:
    """As `load`, each 200 logged in acked.log (tests/cluster/scenarios)."""
    users = tmp_path / "users.csv"
    users.write_text("SEQUENTIAL\n" + "".join(f"load{i}\n" for i in range(count)))
    scenario = Path(__file__).resolve().parent / "scenarios" / "register_csv_acked.xml"
    return subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-inf", str(users), "-i", "127.0.0.1", "-p",
         str(free_port()), edge.address, "-m", str(count), "-r", str(rate), "-trace_logs",
         "-log_file", str(tmp_path / "acked.log"), "-nostdin", "-timeout", "30s"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- full-sharing-cachedb ------------------------------------------------------------------

def test_full_sharing_cachedb_kill_9_under_load_every_node_dumps_every_binding(
        store: Path, prefix: str, tmp_path: Path) -> None:
    # 300 users register through an edge into node 1 at 60/s; node 2 is killed with
    # SIGKILL and restarted meanwhile. Every node (3 of them) dumps the same 300 AORs.
    mode = "full-sharing-cachedb"
    first = start_registrar(store, env(mode, prefix, 1))
    seeds = f"1@{cluster_url(first)}"
    second = start_registrar(store, env(mode, prefix, 2, seeds))
    third = start_registrar(store, env(mode, prefix, 3, seeds))
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": first.grpc,
                       "SIPMESH_EDGE_REGISTER_AUTH": "false"})
    running = None
    try:
        running = load(tmp_path, edge, 300, 60)
        wait_until(lambda: len(aors(second)) >= 60, 15, "load visible on node 2")
        os.kill(second.proc.pid, signal.SIGKILL)
        second.proc.wait(10)
        wait_until(lambda: len(aors(first)) >= 150, 15, "load going on without node 2")
        second = start_registrar(store, env(mode, prefix, 2, seeds))
        assert running.wait(60) == 0, "every registration got its 200"
        expected = {f"load{i}@127.0.0.1" for i in range(300)}
        for reg in (first, second, third):
            assert aors(reg) == expected
        # A removal on one node is gone on every node at once (one shared table).
        assert mi(third, "ul_rm", ["location", "load7@127.0.0.1"])["result"] == "OK"
        for reg in (first, second, third):
            assert "load7@127.0.0.1" not in aors(reg)
        [contact] = mi(second, "ul_show_contact", ["location", "load8@127.0.0.1"]
                       )["result"]["Contacts"]
        assert contact["Callid"]
    finally:
        stop_all(running, edge, third, second, first)


def pinging_pair(store: Path, prefix: str,
                 users: list[str]) -> tuple[Registrar, Registrar, Edge]:
    """Subscribers `users`, two full-sharing-cachedb nodes pinging every 0.3 s (node 2
    joining node 1) and an edge saving into node 1."""
    ping = {"natping_interval": "0.3", "ping_threshold": "0.25",
            "max_pings_lost": "100000"}
    add_users(store, {f"{user}@127.0.0.1": "pw" for user in users})
    mode = "full-sharing-cachedb"
    first = start_registrar(store, env(mode, prefix, 1, **ping))
    second, edge = start_pair(
        lambda: start_registrar(store, env(mode, prefix, 2, f"1@{cluster_url(first)}", **ping)),
        lambda: start_edge({"SIPMESH_EDGE_REGISTRAR": first.grpc}))
    return first, second, edge


def test_full_sharing_cachedb_each_natted_binding_pinged_by_exactly_one_node(
        store: Path, prefix: str, tmp_path: Path) -> None:
    # Both nodes ping every 0.3 s; each pings only the AORs of its crc32(aor) % 2 share.
    users = [f"nat{i}" for i in range(8)]
    first, second, edge = pinging_pair(store, prefix, users)
    try:
        wait_until(lambda: synced(first) and synced(second) and linked(first, second), 20,
                   "both nodes synced and linked")
        register_natted(tmp_path, edge, users, "pw")
        assert len(aors(second)) == len(users)

        assert_pinged_once_per_round(first, second, len(users))
    finally:
        stop_all(edge, second, first)


def test_full_sharing_cachedb_ping_rounds_read_only_the_nodes_own_partitions(
        store: Path, prefix: str, tmp_path: Path) -> None:
    # Redis MONITOR over 3 s of pinging (each node's connection named after its pid):
    # node 1 (index 0 of 2) reads the ping index partitions 0, 2, ..., 62 and node 2 the
    # odd ones, one HVALS each per round; neither reads the whole table (the AOR set or
    # any AOR's bindings) -- and still every natted binding is pinged once per round.
    users = [f"part{i}" for i in range(12)]
    first, second, edge = pinging_pair(store, prefix, users)
    client = redis.Redis.from_url(REDIS)
    log = tmp_path / "monitor.log"
    watcher = None
    try:
        wait_until(lambda: synced(first) and synced(second) and linked(first, second), 20,
                   "both nodes synced and linked")
        register_natted(tmp_path, edge, users, "pw")
        assert len(aors(second)) == len(users)
        with log.open("w") as out:
            watcher = subprocess.Popen(["redis-cli", "-u", REDIS, "monitor"], stdout=out)
            wait_until(lambda: log.read_text().startswith("OK"), 10, "MONITOR running")
            assert_pinged_once_per_round(first, second, len(users))
            names = {c["addr"]: c["name"]
                     for c in client.client_list()}  # type: ignore[union-attr]  # sync client
            watcher.terminate()
            watcher.wait(10)
        node_of = {f"sipmesh-registrar-{r.proc.pid}": n for n, r in ((1, first), (2, second))}
        reads: dict[int, set[int]] = {1: set(), 2: set()}
        rounds: dict[int, int] = {1: 0, 2: 0}
        for line in log.read_text().splitlines():
            if prefix not in line:
                continue
            addr = line.split("[", 1)[1].split("]", 1)[0].split()[1]
            node = node_of[names[addr]]
            command, *args = line.split('"')[1::2]
            assert command.upper() not in ("SMEMBERS", "SCAN", "KEYS"), line
            assert not (command.upper() in ("HVALS", "HGETALL", "HGET")
                        and args[0].startswith(f"{prefix}loc:")), line
            if command.upper() == "HVALS":
                reads[node].add(int(args[0].removeprefix(f"{prefix}ping:")))
                rounds[node] += args[0] == f"{prefix}ping:{node - 1}"
        assert reads == {1: set(range(0, 64, 2)), 2: set(range(1, 64, 2))}
        assert rounds[1] >= 5 and rounds[2] >= 5, rounds
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
            watcher.wait(5)
        client.close()
        stop_all(edge, second, first)


# -- federation-cachedb --------------------------------------------------------------------

def test_federation_replicates_inside_a_pop_and_routes_calls_across_pops(
        store: Path, prefix: str, tmp_path: Path) -> None:
    mode = "federation-cachedb"
    grpc = [free_port() for _ in range(3)]
    local = {"SIPMESH_EDGE_LOCAL_DOMAINS": "127.0.0.1"}
    edge_a, edge_b = start_pair(
        lambda: start_edge({"SIPMESH_EDGE_REGISTRAR": f"127.0.0.1:{grpc[0]}", **local}),
        lambda: start_edge({"SIPMESH_EDGE_REGISTRAR": f"127.0.0.1:{grpc[2]}", **local}))
    home_a, home_b = f"sip:{edge_a.address}", f"sip:{edge_b.address}"
    first = start_registrar(store, env(mode, prefix, 1, sip_addr=home_a,
                                       grpc_port=str(grpc[0])))
    seeds = f"1@{cluster_url(first)}"
    # PoP B (third): a seed of its own (no donor shares its SIP address), knowing PoP A's
    # seed; it and node 2 only need node 1 up, so they start together.
    second, third = start_pair(
        lambda: start_registrar(store, env(mode, prefix, 2, seeds, sip_addr=home_a,
                                           grpc_port=str(grpc[1]))),
        lambda: start_registrar(store, {**env(mode, prefix, 3, sip_addr=home_b,
                                              grpc_port=str(grpc[2])),
                                        "SIPMESH_REGISTRAR_CLUSTER_SEEDS": seeds}))
    sipp = Sipp(tmp_path)
    running = None
    loader = None
    client = redis.Redis.from_url(REDIS)
    try:
        wait_until(lambda: all(synced(r) for r in (first, second, third)), 20, "all synced")
        # A phone registers in PoP A (edge A -> registrar 1) and listens there.
        phone = free_port()
        cmd = ["sipp", "-sf", str(SCENARIOS / "register_auth.xml"), "-i", "127.0.0.1", "-p",
               str(phone), edge_a.address, "-s", "alice", "-au", "alice", "-ap", "alice-pw",
               "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error"]
        result = subprocess.run(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=45)
        assert result.returncode == 0, summary(result)
        wait_until(lambda: "alice@127.0.0.1" in aors(second), 10, "replicated in PoP A")
        wait_until(lambda: client.smembers(f"{prefix}fed:alice@127.0.0.1") == {
            home_a.encode()}, 10, "AOR -> home A in Redis")
        assert aors(third) == set(), "PoP B holds no binding of PoP A"
        # A call for alice sent to edge B: registrar 3 has no binding but the directory
        # names PoP A; edge B forks to edge A, which delivers it to the phone.
        uas = sipp.uas("uas", phone)
        call = sipp.uac("uac", edge_b, edge_b.address, calls=2, service="alice")
        assert call.returncode == 0, summary(call)
        assert uas.poll() is None
        sipp.stop()

        # kill -9 registrar 2 under load in PoP A and restart it: it syncs everything back
        # from registrar 1 (same SIP address); PoP B still holds nothing of it. Until node
        # 2 is declared failed, node 1 cannot replicate and answers 503 (nothing is
        # acknowledged that only one node holds): the scenario logs which got a 200.
        loader = start_edge({"SIPMESH_EDGE_REGISTRAR": f"127.0.0.1:{grpc[0]}",
                             "SIPMESH_EDGE_REGISTER_AUTH": "false", **local})
        running = acked_load(tmp_path, loader, 200, 50)
        wait_until(lambda: len(aors(second)) >= 40, 15, "load replicating in PoP A")
        os.kill(second.proc.pid, signal.SIGKILL)
        second.proc.wait(10)
        wait_until(lambda: len(aors(first)) >= 100, 15, "load going on without node 2")
        second = start_registrar(store, env(mode, prefix, 2, seeds, sip_addr=home_a,
                                            grpc_port=str(grpc[1])))
        assert running.wait(60) == 0
        acked = {line.split()[1] + "@127.0.0.1" for line in
                 (tmp_path / "acked.log").read_text().splitlines() if line.startswith("ACKED")}
        assert len(acked) >= 100
        expected = acked | {"alice@127.0.0.1"}
        assert expected <= aors(first)
        wait_until(lambda: synced(second) and aors(second) == aors(first), 20,
                   "restarted node of PoP A has every AOR")
        assert aors(third) == set()
        homes = {k.decode().removeprefix(f"{prefix}fed:")
                 for k in client.scan_iter(match=f"{prefix}fed:*")
                 if client.smembers(k) == {home_a.encode()}}
        # Every AOR of PoP A (acknowledged ones, and those answered 503 but kept) is there.
        assert homes == aors(first) and expected <= homes, "PoP A's AORs in the directory"
    finally:
        client.close()
        sipp.stop()
        stop_all(running, loader, edge_a, edge_b, third, second, first)
