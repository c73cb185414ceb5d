"""Nodes with no static seeds find each other through the mesh's discovery registry
(the embedded registry `sipmesh up` runs), as `sipmesh up --nodes N` would start them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.discovery.embedded import RegistryServer
from tests.cluster.harness import Node, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def registry_url() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    server = RegistryServer()
    ready = threading.Event()
    url: list[str] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        url.append(loop.run_until_complete(server.start()))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield url[0]
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_three_nodes_join_through_discovery(tmp_path: Path, registry_url: str) -> None:
    env = {"SIPMESH_DISCOVERY_URL": registry_url, "SIPMESH_DISCOVERY_TTL": "5",
           "SIPMESH_DEMO_CLUSTER_DISCOVERY_SERVICE": "cluster-demo"}
    nodes = [Node(i, tmp_path, seed=(i == 1), members="1", env=env) for i in (1, 2, 3)]
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            wait_until(lambda: n.all_up([o.node_id for o in nodes if o is not n]), 15,
                       f"node {n.node_id} Up with everyone")
        nodes[1].mi("kv_put", ["k", "v"])
        for n in (nodes[0], nodes[2]):
            wait_until(lambda: n.mi("kv_get", ["k"])["value"] == "v", 5, "replicated")
    finally:
        for n in nodes:
            n.kill9()
