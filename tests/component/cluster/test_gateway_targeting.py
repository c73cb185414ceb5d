"""Node targeting at the gateway over real HTTP: service runtimes announcing cluster nodes
(the discovery metadata of ClusterNode.meta()) registered in a real registry, and a service
that is not clustered. What each instance ran is what it answered (``by``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.discovery import DiscoveryConfig
from shared.rpc import MiError, RpcError
from shared.service import ServiceRuntime
from tests.component.spine.helpers import running_mesh, service, started


def node(name: str, discovery: DiscoveryConfig, cluster: int, node_id: int) -> ServiceRuntime:
    rt = service(name, discovery)
    rt.instance_id = f"{name}-{node_id}"  # one process hosts them all: distinct ids
    rt.meta.update({"cluster_id": str(cluster), "cluster_node_id": str(node_id),
                    "cluster_url": f"127.0.0.1:{9000 + node_id}"})
    me = f"{cluster}/{node_id}"

    @rt.command("set_status", params=(("cluster_id", "status"),))
    async def set_status(cluster_id: Any, status: Any) -> Any:
        if str(cluster_id) != str(cluster):
            raise MiError(404, "Cluster id not found")
        return {"by": me, "status": status}

    @rt.command("show", fanout=True)
    async def show() -> Any:
        return [me]

    @rt.command("put", params=(("key",),))
    async def put(key: Any) -> Any:
        return {"by": me, "key": key}

    return rt


@contextlib.asynccontextmanager
async def all_started(*rts: ServiceRuntime) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for rt in rts:
            await stack.enter_async_context(started(rt))
        yield


async def test_node_id_and_cluster_pick_the_instance() -> None:
    async with running_mesh() as mesh:
        nodes = [node("alpha", mesh.discovery, 1, n) for n in (1, 2)] + [
            node("beta", mesh.discovery, 2, n) for n in (1, 2, 3)]
        plain = service("plain", mesh.discovery)

        @plain.command("tune", params=(("cluster_id",),))
        async def tune(cluster_id: Any) -> Any:
            return {"by": "plain", "cluster_id": cluster_id}

        async with all_started(*nodes, plain):
            call = mesh.client.call
            assert await call("set_status", {"cluster_id": 2, "status": 0, "node_id": 3}) == {
                "by": "2/3", "status": 0}
            assert await call("put", {"key": "k", "node_id": 3}) == {"by": "2/3", "key": "k"}
            # The cluster the command names keeps it there (positional or named), round-robin.
            bys = {(await call("set_status", [1, 1]))["by"] for _ in range(6)}
            assert bys == {"1/1", "1/2"}
            # A cluster_id the command does not take is a targeting param, stripped.
            assert await call("put", {"key": "k", "cluster_id": 1, "node_id": 2}) == {
                "by": "1/2", "key": "k"}
            # Fan-out: every node, or the nodes of one cluster, or one node.
            assert sorted(await call("show")) == ["1/1", "1/2", "2/1", "2/2", "2/3"]
            assert sorted(await call("show", {"cluster_id": 2})) == ["2/1", "2/2", "2/3"]
            assert await call("show", {"node_id": 2, "cluster_id": 1}) == ["1/2"]
            # Not clustered: cluster_id is the command's own param, untouched.
            assert await call("tune", {"cluster_id": 7}) == {"by": "plain", "cluster_id": 7}
            for params, code, text in (
                    ({"node_id": 2}, -32602, "add cluster_id"),
                    ({"node_id": 4, "cluster_id": 2}, 404, "Node 4 not found in cluster 2"),
                    ({"node_id": "two"}, -32602, "positive integer"),
                    ({"cluster_id": 5}, 404, "Cluster id not found")):
                with pytest.raises(RpcError) as err:
                    await call("show", params)
                assert err.value.code == code
                assert text in f"{err.value.message} {err.value.data}"
            with pytest.raises(RpcError) as err:
                await call("tune", {"cluster_id": 7, "node_id": 1})
            assert err.value.code == -32602 and "cluster nodes" in str(err.value.data)
            ps = (await call("ps"))["Processes"]
            assert sum(p["Type"].endswith("cluster 2 node 3") for p in ps) == 1
