"""federation-cachedb's directory ({prefix}fed:{aor} in the real Redis at 127.0.0.1:6379)
stays true when a point of presence restarts empty or goes away (issue 11).

PoP A = registrar 1 behind edge A, PoP B = registrar 2 behind edge B.  alice registers in
PoP A.  Registrar 1 is killed with SIGKILL and started again: it comes back with nothing
(restart persistence in this mode is a sync from its PoP, which has no other node), so
once synced it withdraws PoP A from alice's entry, and a call for alice sent to edge B is
no longer forked to edge A (480 at once, nothing reaches edge A).  Then PoP A goes away
for good with an entry still listed (a stale one planted in Redis): once its liveness
expires (`cachedb_home_ttl`), edge B gives it no branch either.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from pathlib import Path

import redis

from tests.cluster.registrar_nodes import cluster_url, mi, stop_all, synced
from tests.cluster.test_registrar_cachedb import REDIS, env, prefix, store
from tests.integration.edge.edge_harness import (
    Sipp,
    free_port,
    start_edge,
    summary,
    wait_until,
    worker_statistic,
)
from tests.integration.registrar.harness import SCENARIOS, start_registrar

__all__ = ["prefix", "store"]  # fixtures shared with test_registrar_cachedb
MODE = "federation-cachedb"


def expect(tmp_path: Path, status: int) -> str:
    text = (SCENARIOS / "call_expect.xml").read_text().replace("[expect]", str(status))
    path = tmp_path / f"call_expect_{status}.xml"
    path.write_text(text)
    return str(path)


def test_a_pop_restarted_empty_or_gone_gets_no_federated_calls(
        store: Path, prefix: str, tmp_path: Path) -> None:
    grpc = [free_port(), free_port()]
    local = {"SIPMESH_EDGE_LOCAL_DOMAINS": "127.0.0.1"}
    edge_a = start_edge({"SIPMESH_EDGE_REGISTRAR": f"127.0.0.1:{grpc[0]}", **local})
    edge_b = start_edge({"SIPMESH_EDGE_REGISTRAR": f"127.0.0.1:{grpc[1]}", **local})
    home_a, home_b = f"sip:{edge_a.address}", f"sip:{edge_b.address}"
    ttl = {"cachedb_home_ttl": "1.5"}
    node_a = env(MODE, prefix, 1, sip_addr=home_a, grpc_port=str(grpc[0]), **ttl)
    first = start_registrar(store, node_a)
    second = start_registrar(store, {**env(MODE, prefix, 2, sip_addr=home_b,
                                           grpc_port=str(grpc[1]), **ttl),
                                     "SIPMESH_REGISTRAR_CLUSTER_SEEDS": f"1@{cluster_url(first)}"})
    sipp = Sipp(tmp_path)
    client = redis.Redis.from_url(REDIS)
    fed = f"{prefix}fed:alice@127.0.0.1"
    try:
        # A node answers 503 until its point of presence's data is synced (it must not
        # acknowledge what it cannot replicate): wait, as a phone would retry.
        for reg in (first, second):
            wait_until(functools.partial(synced, reg), 15, "registrar synced")
        phone = free_port()
        cmd = ["sipp", "-sf", str(SCENARIOS / "register_auth.xml"), "-i", "127.0.0.1", "-p",
               str(phone), edge_a.address, "-s", "alice", "-au", "alice", "-ap", "alice-pw",
               "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error"]
        result = subprocess.run(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=45)
        assert result.returncode == 0, summary(result)
        wait_until(lambda: client.smembers(fed) == {home_a.encode()}, 10, "alice -> home A")
        sipp.uas("uas", phone)
        # Edge B forks to PoP A, which delivers: once registrar 2 has read that PoP A is
        # alive (it reads the liveness every cachedb_home_ttl / 3).
        wait_until(lambda: sipp.uac("uac", edge_b, edge_b.address, calls=1,
                                    service="alice", timeout=5).returncode == 0, 15,
                   "a call through edge B delivered in PoP A", interval=0.1)

        # PoP A's registrar restarts empty: once synced it withdraws its stale entry.
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        first = start_registrar(store, node_a)
        wait_until(lambda: not client.smembers(fed), 15, "stale entry withdrawn")
        invites = worker_statistic([edge_a.http], "core:rcv_requests_invite")[0]
        gone = sipp.uac(expect(tmp_path, 480), edge_b, edge_b.address, service="alice")
        assert gone.returncode == 0, summary(gone)  # 480 from PoP B, nothing forked to A
        assert worker_statistic([edge_a.http], "core:rcv_requests_invite")[0] == invites

        # PoP A goes away for good while the directory still names it for alice (planted:
        # a registrar killed before it could withdraw anything): no branch once A's
        # liveness has run out.
        client.sadd(fed, home_a)
        first.proc.kill()
        first.proc.wait(10)
        wait_until(lambda: home_a.encode() not in _alive(client, prefix), 10,
                   "PoP A no longer alive")
        wait_until(lambda: mi(second, "get_statistics", [["usrloc:federation_homes_alive"]])[
            "result"]["usrloc:federation_homes_alive"] == 1, 10, "registrar 2 sees only B")
        away = sipp.uac(expect(tmp_path, 480), edge_b, edge_b.address, service="alice")
        assert away.returncode == 0, summary(away)
        assert worker_statistic([edge_a.http], "core:rcv_requests_invite")[0] == invites
    finally:
        client.close()
        sipp.stop()
        stop_all(edge_a, edge_b, second, first)


def _alive(client: redis.Redis, prefix: str) -> set[bytes]:
    """The homes whose liveness has not run out, by the Redis clock."""
    seconds, micros = client.time()  # type: ignore[misc]  # redis-py types sync|async as one
    now = seconds * 1000 + micros // 1000
    homes: dict[bytes, bytes] = client.hgetall(f"{prefix}homes")  # type: ignore[assignment]
    return {h for h, until in homes.items() if int(until) > now}
