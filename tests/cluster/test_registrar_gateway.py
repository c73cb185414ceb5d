"""Registrar nodes behind a real gateway (`sipmesh up`, gateway only; the registrars join
its discovery registry): `ul_dump` and `ul_show_contact` asked of the mesh.

Cluster mode `none`: two registrars, each with its own phones (real REGISTERs through an
edge per node, digest auth) and one AOR on both (`ul_add` sent through the gateway with
`node_id`): the gateway's `ul_dump` lists every AOR of both nodes, the shared AOR with its
contacts united; `node_id` shows one node's table; `ul_show_contact` answers from the node
holding the AOR. full-sharing-cachedb: two nodes over one Redis table list each contact
once. Every answer is validated against its contracts/mi schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.cluster.registrar_nodes import cluster_url, register_natted, stop_all, synced
from tests.cluster.test_mesh_nodes import Gateway as MeshGateway
from tests.integration.edge.edge_harness import start_edge, wait_until
from tests.integration.registrar.harness import add_users, start_registrar
from tests.integration.spine.meshproc import MeshProcess

pytestmark = [pytest.mark.peers, pytest.mark.timeout(180)]
REDIS = "redis://127.0.0.1:6379/0"


class Gateway(MeshGateway):
    """The mesh tests' MI client (answers checked against contracts/mi), plus:"""

    def registrars(self) -> int:
        return sum(p["Type"].startswith("registrar ") for p in self("ps")["Processes"])


def table(dump: dict[str, Any]) -> dict[str, list[str]]:
    """AOR -> its contact URIs, from a ul_dump answer with a single domain."""
    [domain] = dump["Domains"]
    assert domain["name"] == "location"
    return {a["AOR"]: sorted(c["Contact"] for c in a.get("Contacts", []))
            for a in domain["AORs"]}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[MeshProcess]:
    m = MeshProcess(tmp_path)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.sqlite"
    add_users(path, {f"{user}@127.0.0.1": "pw" for user in ("alice", "bob", "dave")})
    return path


def test_mode_none_ul_dump_through_the_gateway_lists_every_nodes_aors(
        mesh: MeshProcess, store: Path, tmp_path: Path) -> None:
    # Two independent registrars (mode none), each with its edge, started at once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        nodes = list(pool.map(lambda n: start_registrar(store, {
            "SIPMESH_DISCOVERY_URL": mesh.registry_url,
            "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": str(n)}), (1, 2)))
        edges = list(pool.map(lambda reg: start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc}),
                              nodes))
    gw = Gateway(mesh.gateway_url)
    try:
        wait_until(lambda: gw.registrars() == 2, 20, "both registrars in the mesh")
        register_natted(tmp_path, edges[0], ["alice", "dave"], "pw")  # node 1
        register_natted(tmp_path, edges[1], ["bob"], "pw")  # node 2
        # carol on both nodes, one contact the same (URI and Call-ID of ul_add), one not.
        for node_id, contacts in ((1, ["sip:carol@10.0.0.3"]),
                                  (2, ["sip:carol@10.0.0.3", "sip:carol@10.0.0.4"])):
            for contact in contacts:
                assert gw("ul_add", {
                    "table_name": "location", "aor": "carol@127.0.0.1", "contact": contact,
                    "expires": 600, "q": "", "flags": 0, "cflags": 0, "methods": 0,
                    "node_id": node_id}) == "OK"

        merged = table(gw("ul_dump"))
        assert set(merged) == {"alice@127.0.0.1", "dave@127.0.0.1", "bob@127.0.0.1",
                               "carol@127.0.0.1"}
        assert merged["carol@127.0.0.1"] == ["sip:carol@10.0.0.3", "sip:carol@10.0.0.4"]
        assert all(len(contacts) == 1 for aor, contacts in merged.items()
                   if aor != "carol@127.0.0.1")
        brief = gw("ul_dump", ["brief"])["Domains"][0]["AORs"]
        assert sorted(a["AOR"] for a in brief) == sorted(merged)
        assert set(table(gw("ul_dump", {"node_id": 1}))) == {
            "alice@127.0.0.1", "dave@127.0.0.1", "carol@127.0.0.1"}
        only_two = table(gw("ul_dump", {"node_id": 2}))
        assert set(only_two) == {"bob@127.0.0.1", "carol@127.0.0.1"}
        assert only_two["carol@127.0.0.1"] == ["sip:carol@10.0.0.3", "sip:carol@10.0.0.4"]

        # ul_show_contact answers from whichever node holds the AOR, every time.
        for _ in range(3):
            bob = gw("ul_show_contact", ["location", "bob@127.0.0.1"])
            assert bob["AOR"] == "bob@127.0.0.1" and len(bob["Contacts"]) == 1
            alice = gw("ul_show_contact", ["location", "alice@127.0.0.1"])
            assert len(alice["Contacts"]) == 1
        carol = gw("ul_show_contact", ["location", "carol@127.0.0.1"])
        assert sorted(c["Contact"] for c in carol["Contacts"]) == [
            "sip:carol@10.0.0.3", "sip:carol@10.0.0.4"]
        missing = gw.raw("ul_show_contact", ["location", "nobody@127.0.0.1"])
        assert missing["error"]["code"] == 404
        pinned = gw.raw("ul_show_contact", {"table_name": "location",
                                            "aor": "bob@127.0.0.1", "node_id": 1})
        assert pinned["error"]["message"] == "AOR not found"
        absent = gw.raw("ul_dump", {"node_id": 3})
        assert absent["error"]["code"] == 404
    finally:
        stop_all(*edges, *nodes)


def test_full_sharing_cachedb_ul_dump_through_the_gateway_lists_each_contact_once(
        mesh: MeshProcess, store: Path, tmp_path: Path) -> None:
    prefix = f"test:gw{uuid.uuid4().hex[:10]}:"
    common = {"SIPMESH_DISCOVERY_URL": mesh.registry_url,
              "SIPMESH_REGISTRAR_CLUSTER_MODE": "full-sharing-cachedb",
              "SIPMESH_REGISTRAR_CACHEDB_URL": REDIS,
              "SIPMESH_REGISTRAR_CACHEDB_PREFIX": prefix,
              "SIPMESH_REGISTRAR_CLUSTER_SECRET": "gw-test",
              "SIPMESH_REGISTRAR_CLUSTER_PING_INTERVAL": "0.5",
              "SIPMESH_REGISTRAR_CLUSTER_PING_TIMEOUT": "0.3"}
    first = start_registrar(store, {**common, "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": "1",
                                    "SIPMESH_REGISTRAR_CLUSTER_SEED": "true"})
    second = start_registrar(store, {**common, "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": "2",
                                     "SIPMESH_REGISTRAR_CLUSTER_SEEDS":
                                         f"1@{cluster_url(first)}"})
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": first.grpc})
    gw = Gateway(mesh.gateway_url)
    client = redis.Redis.from_url(REDIS)
    try:
        wait_until(lambda: synced(first) and synced(second), 20, "both nodes synced")
        wait_until(lambda: gw.registrars() == 2, 20, "both registrars in the mesh")
        register_natted(tmp_path, edge, ["alice", "bob"], "pw")
        expected = {"alice@127.0.0.1", "bob@127.0.0.1"}
        for params in (None, {"node_id": 1}, {"node_id": 2}):
            dump = table(gw("ul_dump", params))
            assert set(dump) == expected
            assert all(len(contacts) == 1 for contacts in dump.values()), dump
        assert len(gw("ul_show_contact", ["location", "bob@127.0.0.1"])["Contacts"]) == 1
    finally:
        stop_all(edge, second, first)
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()
