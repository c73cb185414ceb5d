"""Two presence nodes (`sipmesh up --nodes 2`: gateway, one edge, presence.1-2) sharing
the real PostgreSQL, as OpenSIPS 2.4's non-federated cluster: the node holding sharing
tag `presence` sends the NOTIFYs of a change, the other none; kill -9 the holder and the
other node takes the tag and sends the next NOTIFY. sipp phones as watcher and publisher.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dialog.harness import PG_DSN, psql, rpc
from tests.integration.presence.harness import PresenceMesh, sipp_failure, wait_for

pytestmark = pytest.mark.peers


def two_nodes_on_postgresql(tmp: Path, backoff: str) -> Iterator[PresenceMesh]:
    """`sipmesh up` with two presence nodes sharing a fresh PostgreSQL table, quick pings
    (a dead node is declared in ~1 s); a killed node is started again after `backoff` s."""
    table = f"presence_t{uuid.uuid4().hex[:10]}"
    m = PresenceMesh(
        tmp, SIPMESH_MESH_NODES="2", SIPMESH_MESH_SERVICES="gateway,edge,presence",
        SIPMESH_PRESENCE_DB_URL=PG_DSN, SIPMESH_PRESENCE_TABLE=table,
        SIPMESH_MESH_BACKOFF_INITIAL=backoff,
        SIPMESH_PRESENCE_CLUSTER_PING_INTERVAL="0.2",
        SIPMESH_PRESENCE_CLUSTER_PING_TIMEOUT="0.3",
        SIPMESH_PRESENCE_CLUSTER_PING_RETRIES="2")
    try:
        yield m
    finally:
        m.stop()
        psql(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PresenceMesh]:
    # A killed node stays down a while: the survivor must do the work.
    yield from two_nodes_on_postgresql(tmp_path_factory.mktemp("presence-cluster"), "8")


def nodes(mesh: PresenceMesh) -> dict[int, dict[str, str]]:
    """Presence node id -> its registration metadata (MI URL...), from discovery."""
    with urllib.request.urlopen(f"{mesh.mesh.registry_url}/v1/instances", timeout=5) as r:
        instances = json.loads(r.read())
    items = instances if isinstance(instances, list) else instances.get("instances", [])
    out = {}
    for inst in items:
        meta = inst.get("meta", {})
        if inst.get("service") == "presence" and meta.get("cluster_node_id"):
            out[int(meta["cluster_node_id"])] = meta
    return out


def node_mi(meta: dict[str, str], method: str, params: Any = None) -> Any:
    answer = rpc(meta["mi_url"], method, params)
    assert "error" not in answer, answer
    return answer["result"]


def holder(mesh: PresenceMesh) -> int | None:
    for node, meta in nodes(mesh).items():
        try:
            tags = node_mi(meta, "clusterer_list_shtags")
        except OSError:
            continue
        if any(t["Tag"] == "presence" and t["State"] == "active" and t.get("Node", node) == node
               for t in tags):
            return node
    return None


def sent(meta: dict[str, str]) -> int:
    stats = node_mi(meta, "get_statistics", [["presence:notify_sent"]])
    return int(stats.get("presence:notify_sent", 0))


def publish(mesh: PresenceMesh, user: str) -> None:
    def answered() -> bool:
        proc = mesh.sipp_run("publisher.xml", user, keys=[("basic", "open"),
                                                          ("expires", "60")], timeout=5)
        return proc.returncode == 0

    wait_for(answered, 30, f"{user}'s PUBLISH answered 200")


def test_only_the_tag_holder_notifies_and_its_death_moves_the_tag(mesh: PresenceMesh) -> None:
    wait_for(lambda: len(nodes(mesh)) == 2, 20, "two presence nodes in discovery")
    first = wait_for(lambda: holder(mesh), 20, "a holder of sharing tag presence")
    other = next(n for n in nodes(mesh) if n != first)
    metas = nodes(mesh)

    watcher = mesh.sipp_run("watcher.xml", "erin", background=True)
    wait_for(lambda: mesh.subscriptions("erin@127.0.0.1"), 20, "erin's watcher")
    # Wait for the immediate NOTIFY (from whichever node took the SUBSCRIBE) to be counted.
    wait_for(lambda: sent(metas[first]) + sent(metas[other]) >= 1, 10, "the first NOTIFY")
    before = {n: sent(metas[n]) for n in (first, other)}
    publish(mesh, "erin")
    assert watcher.wait(60) == 0, sipp_failure(mesh, watcher)
    # The change was notified by the holder only (the final NOTIFY of the un-subscribe
    # comes from the node that took it, so count the PUBLISH's NOTIFY by the holder).
    wait_for(lambda: sent(metas[first]) > before[first], 10, "the holder's NOTIFY")
    # Exactly two NOTIFYs in all: the PUBLISH's (never doubled by the backup) and the
    # un-subscribe's final one.
    wait_for(lambda: sum(sent(metas[n]) - before[n] for n in (first, other)) >= 2, 10,
             "two NOTIFYs counted")
    assert sum(sent(metas[n]) - before[n] for n in (first, other)) == 2

    # kill -9 the holder: the other node takes the tag and notifies the next change.
    watcher2 = mesh.sipp_run("watcher.xml", "frank", background=True)
    wait_for(lambda: mesh.subscriptions("frank@127.0.0.1"), 20, "frank's watcher")
    pid = int(metas[first]["pid"]) if "pid" in metas[first] else _pid_of(mesh, first)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: holder(mesh) == other, 30, f"node {other} holding the tag")
    publish(mesh, "frank")
    assert watcher2.wait(60) == 0, sipp_failure(mesh, watcher2)
    assert sent(nodes(mesh)[other]) > 0


def _pid_of(mesh: PresenceMesh, node: int) -> int:
    found = mesh.mesh.line(rf"^started presence\.{node} pid (\d+)")
    return int(found.group(1))
