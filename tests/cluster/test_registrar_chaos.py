"""Chaos on a 3-node registrar cluster under real REGISTER load (issue 12): nothing a
node acknowledged is ever lost.

sipp registers users through one edge that spreads the Saves over the three registrars
(round-robin, its default with a fixed list); the scenario logs every 200 it got, so the
test knows exactly which registrations were acknowledged (a 503 -- a node that cannot
replicate yet, or a registrar just killed -- is an honest refusal). Meanwhile each node in
turn is killed with SIGKILL and restarted on the same ports. Afterwards every acknowledged
binding is on every node where the mode promises it, proven by each node's own
`ul_dump`, asked through a real gateway with `node_id=N` (not only the merged dump).

* full-sharing: every node holds every binding (tracked replication, sync on restart,
  anti-entropy on reconnect);
* full-sharing-cachedb: every binding is in Redis before its 200; every node reads it;
* federation-cachedb: one point of presence of three nodes: all three hold them.

And a partition: node 3 of a full-sharing cluster is disabled (`clusterer_set_status`,
through the gateway) while registrations keep coming to all three; both sides acknowledge
what they can replicate on their side, and after healing anti-entropy makes every node
hold all of it. The time to recover from each kill and the time to converge are printed.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from tests.cluster.registrar_nodes import mi, stop_all, synced
from tests.cluster.test_registrar_gateway import Gateway, table
from tests.integration.edge.edge_harness import Edge, free_port, start_edge, wait_until
from tests.integration.registrar.harness import Registrar, start_registrar
from tests.integration.spine.meshproc import MeshProcess

pytestmark = [pytest.mark.peers, pytest.mark.timeout(240)]
REDIS = "redis://127.0.0.1:6379/0"
SCENARIO = Path(__file__).resolve().parent / "scenarios" / "register_csv_acked.xml"
SIZE = 3
RATE = 100


class RegistrarCluster:
    """Three registrar processes of one cluster on fixed ports (a restart reuses them)."""

    def __init__(self, mode: str, store: Path, registry_url: str, prefix: str) -> None:
        self.mode = mode
        self.store = store
        self.registry_url = registry_url
        self.prefix = prefix
        self.ports = {n: (free_port(), free_port()) for n in range(1, SIZE + 1)}
        self.nodes: dict[int, Registrar] = {}

    def env(self, node_id: int, seeds: list[int], seed: bool) -> dict[str, str]:
        grpc_port, cluster_port = self.ports[node_id]
        env = {
            "SIPMESH_DISCOVERY_URL": self.registry_url,
            "SIPMESH_DISCOVERY_TTL": "2",  # a killed node's registration lapses quickly
            "SIPMESH_REGISTRAR_CLUSTER_MODE": self.mode,
            "SIPMESH_REGISTRAR_GRPC_PORT": str(grpc_port),
            "SIPMESH_REGISTRAR_CACHEDB_URL": REDIS,
            "SIPMESH_REGISTRAR_CACHEDB_PREFIX": self.prefix,
            "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": str(node_id),
            "SIPMESH_REGISTRAR_CLUSTER_LISTEN": f"127.0.0.1:{cluster_port}",
            "SIPMESH_REGISTRAR_CLUSTER_SECRET": "chaos-" + self.prefix,
            "SIPMESH_REGISTRAR_CLUSTER_MEMBERS": f"1-{SIZE}",
            "SIPMESH_REGISTRAR_CLUSTER_PING_INTERVAL": "0.5",
            "SIPMESH_REGISTRAR_CLUSTER_PING_TIMEOUT": "0.3",
            "SIPMESH_REGISTRAR_CLUSTER_SEED_FALLBACK_INTERVAL": "1",
            "SIPMESH_REGISTRAR_CLUSTER_SYNC_TIMEOUT": "3",
            "SIPMESH_REGISTRAR_CLUSTER_SEED": "true" if seed else "false",
            "SIPMESH_REGISTRAR_CLUSTER_SEEDS": ",".join(
                f"{s}@127.0.0.1:{self.ports[s][1]}" for s in seeds),
        }
        if self.mode == "federation-cachedb":
            env["SIPMESH_REGISTRAR_CLUSTER_SIP_ADDR"] = "sip:127.0.0.1:5999"  # one PoP
        return env

    def start(self, node_id: int, seeds: list[int], seed: bool = False) -> Registrar:
        reg = self.nodes[node_id] = start_registrar(self.store, self.env(node_id, seeds, seed))
        return reg

    def kill9(self, node_id: int) -> None:
        reg = self.nodes[node_id]
        os.kill(reg.proc.pid, signal.SIGKILL)
        reg.proc.wait(10)

    def restart(self, node_id: int) -> Registrar:
        return self.start(node_id, [n for n in self.ports if n != node_id])

    @property
    def grpc(self) -> str:
        return ",".join(f"127.0.0.1:{g}" for g, _ in self.ports.values())

    def all_up(self) -> bool:
        for n, reg in self.nodes.items():
            nodes = mi(reg, "clusterer_list")["result"]["Clusters"][0]["Nodes"]
            states = {x["node_id"]: x["link_state"] for x in nodes}
            if any(states.get(o) != "Up" for o in self.nodes if o != n):
                return False
        return True

    def ready(self, node_id: int) -> bool:
        return synced(self.nodes[node_id]) and self.all_up()

    def stop(self) -> None:
        stop_all(*self.nodes.values())


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[MeshProcess]:
    m = MeshProcess(tmp_path)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test:chaos{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=f"{name}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, mesh: MeshProcess, prefix: str,
            tmp_path: Path) -> Iterator[RegistrarCluster]:
    store = tmp_path / "subscribers.sqlite"  # register_auth is off: no subscribers needed
    c = RegistrarCluster(request.param, store, mesh.registry_url, prefix)
    try:
        c.start(1, [], seed=True)
        # The others join through node 1, at the same time (each start-up is seconds of
        # imports on the shared box).
        with ThreadPoolExecutor(max_workers=SIZE) as pool:
            for started in [pool.submit(c.start, n, [1]) for n in range(2, SIZE + 1)]:
                started.result()
        wait_until(lambda: all(c.ready(n) for n in c.nodes), 30, "cluster Up and synced")
        yield c
    finally:
        c.stop()


class Load:
    """sipp registering ``count`` users at ``rate``/s; ``acked()`` reads its log of 200s."""

    def __init__(self, workdir: Path, edge: Edge, count: int, rate: int) -> None:
        users = workdir / "users.csv"
        users.write_text("SEQUENTIAL\n" + "".join(f"load{i}\n" for i in range(count)))
        self.log = workdir / "acked.log"
        self.proc = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIO), "-inf", str(users), "-i", "127.0.0.1",
             "-p", str(free_port()), edge.address, "-m", str(count), "-r", str(rate),
             "-trace_logs", "-log_file", str(self.log), "-nostdin", "-timeout", "60s"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def acked(self) -> set[str]:
        if not self.log.exists():
            return set()
        return {line.split()[1] + "@127.0.0.1" for line in self.log.read_text().splitlines()
                if line.startswith("ACKED ")}

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def per_node(gw: Gateway) -> dict[int, set[str]]:
    """Each node's own ul_dump (asked through the gateway with node_id): its AORs that
    have a contact."""
    return {n: {aor for aor, contacts in table(gw("ul_dump", {"node_id": n})).items()
                if contacts} for n in range(1, SIZE + 1)}


def converge(gw: Gateway, acked: set[str], since: float, what: str,
             cause: str = "the load ended") -> float:
    missing: dict[int, int] = {}

    def done() -> bool:
        dumps = per_node(gw)
        missing.update({n: len(acked - aors) for n, aors in dumps.items()})
        return not any(missing.values())

    try:
        wait_until(done, 30, what, interval=0.2)
    except AssertionError:
        raise AssertionError(f"acknowledged bindings missing per node: {missing}") from None
    took = time.monotonic() - since
    print(f"{what}: every node holds all {len(acked)} acknowledged bindings "
          f"{took:.2f} s after {cause}")
    return took


@pytest.mark.parametrize("cluster", ["full-sharing", "full-sharing-cachedb",
                                     "federation-cachedb"], indirect=True)
def test_kill_9_of_each_node_under_load_loses_no_acknowledged_binding(
        cluster: RegistrarCluster, mesh: MeshProcess, tmp_path: Path) -> None:
    gw = Gateway(mesh.gateway_url)
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": cluster.grpc,
                       "SIPMESH_EDGE_REGISTER_AUTH": "false"})
    load = Load(tmp_path, edge, 1500, RATE)
    try:
        for victim in range(1, SIZE + 1):
            before = len(load.acked())
            wait_until(functools.partial(lambda b: len(load.acked()) >= b + 100, before), 20,
                       "load going on")
            assert load.running(), "the load ended before every node was killed"
            cluster.kill9(victim)
            killed = time.monotonic()
            cluster.restart(victim)
            wait_until(functools.partial(cluster.ready, victim), 30, f"node {victim} back")
            print(f"{cluster.mode}: node {victim} killed with SIGKILL under load, back Up "
                  f"and synced {time.monotonic() - killed:.2f} s later")
        assert load.proc.wait(90) is not None
        ended = time.monotonic()
        acked = load.acked()
        print(f"{cluster.mode}: {len(acked)} of 1500 registrations acknowledged "
              f"(the rest got 503: no node could replicate them, or their node was killed)")
        assert len(acked) >= 1000, "the cluster should serve most of the load"
        wait_until(lambda: sum(p["Type"].startswith("registrar ")
                               for p in gw("ps")["Processes"]) == SIZE, 20,
                   "the gateway sees exactly the three live registrars")
        converge(gw, acked, ended, f"{cluster.mode} after kill -9 of each node")
    finally:
        load.stop()
        edge.stop()


@pytest.mark.parametrize("cluster", ["full-sharing"], indirect=True)
def test_a_partition_heals_and_both_sides_converge(cluster: RegistrarCluster,
                                                  mesh: MeshProcess, tmp_path: Path) -> None:
    gw = Gateway(mesh.gateway_url)
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": cluster.grpc,
                       "SIPMESH_EDGE_REGISTER_AUTH": "false"})
    load = Load(tmp_path, edge, 900, RATE)
    try:
        wait_until(lambda: len(load.acked()) >= 100, 20, "load going on")
        assert gw("clusterer_set_status", {"cluster_id": 1, "status": 0, "node_id": 3}) == "OK"
        wait_until(lambda: {mi(cluster.nodes[n], "clusterer_list")["result"]["Clusters"][0][
            "Nodes"][-1]["link_state"] for n in (1, 2)} == {"Down"}, 10, "node 3 cut off")
        before = len(load.acked())
        wait_until(lambda: len(load.acked()) >= before + 200, 20, "load on both sides")
        # Both sides took registrations the other does not have.
        dumps = per_node(gw)
        assert dumps[3] - dumps[1] and dumps[1] - dumps[3], "no divergence to repair"
        assert load.running()
        assert gw("clusterer_set_status", {"cluster_id": 1, "status": 1, "node_id": 3}) == "OK"
        healed = time.monotonic()
        wait_until(cluster.all_up, 15, "links Up again")
        converge(gw, load.acked(), healed, "full-sharing partition", "healing")
        assert load.proc.wait(90) is not None
        converge(gw, load.acked(), time.monotonic(), "full-sharing partition, load over")
        repaired = sum(int(mi(r, "get_statistics", [["clusterer:ae_records_received"]])[
            "result"]["clusterer:ae_records_received"]) for r in cluster.nodes.values())
        assert repaired > 0
        print(f"anti-entropy moved {repaired} records")
    finally:
        load.stop()
        edge.stop()
