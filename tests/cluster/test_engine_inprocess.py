"""Two engines in one process, each inside a real ServiceRuntime with an embedded EventBus:
every clusterer MI answer matches its JSON Schema (contracts/mi), bad input gets a clear
error, and the two clusterer events are published with their contract's shape."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared.cluster import ClusterConfig, ClusterNode, register_mi, run_local_mi
from shared.discovery.memory import MemoryRegistry
from shared.events.bus import EmbeddedEventBus
from shared.events.schema import EventCatalog
from shared.service import RuntimeConfig, ServiceRuntime
from tests.support.waiting import eventually

MI = Path(__file__).resolve().parents[2] / "contracts" / "mi"
BASE = ClusterConfig(ping_interval=0.1, ping_timeout=0.2, ping_retries=2, node_timeout=0.5,
                     seed_fallback_interval=0.2, secret="s", members="1-3",
                     sharing_tags=("vip/1=backup",))


@dataclasses.dataclass
class Member:
    node: ClusterNode
    runtime: ServiceRuntime
    bus: EmbeddedEventBus
    events: list[tuple[str, dict[str, Any]]]
    data: dict[bytes, bytes]

    async def mi(self, method: str, params: Any = None) -> Any:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        answer = json.loads(await self.runtime.mi.dispatch(json.dumps(body)))
        if "error" in answer:
            raise LookupError(answer["error"])
        return answer["result"]


async def member(node_id: int, **cfg: Any) -> Member:
    config = dataclasses.replace(BASE, node_id=node_id, **cfg)
    runtime = ServiceRuntime(f"cl-{node_id}", config=RuntimeConfig(), registry=MemoryRegistry())
    bus = EmbeddedEventBus(EventCatalog.load(), service="cl", node=str(node_id), strict=True)
    events: list[tuple[str, dict[str, Any]]] = []

    async def listen(event: Any) -> None:
        events.append((event.name, dict(event.params)))

    bus.add_listener(listen)
    data: dict[bytes, bytes] = {}
    node = ClusterNode(config, events=bus,
                       mi_runner=lambda cmd, params: run_local_mi(runtime, cmd, params))
    node.register_capability(
        "kv", produce=lambda: [k + b"\0" + v for k, v in data.items()],
        apply_sync=lambda recs: data.update(r.split(b"\0", 1) for r in recs),  # type: ignore[misc]
        apply_update=lambda src, p: data.update([p.split(b"\0", 1)]))  # type: ignore[list-item]
    register_mi(runtime, node)

    @runtime.command("put", (("key", "value"),))
    async def put(key: str, value: str) -> Any:
        data[key.encode()] = value.encode()
        return "OK"

    await bus.start()
    await node.start()
    await runtime.start()
    return Member(node, runtime, bus, events, data)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Member, Member]]:
    a = await member(1, seed=True)
    b = await member(2, seeds=(f"1@{a.node.url}",))
    try:
        await eventually(lambda: a.node.reachable == {2} and b.node.reachable == {1})
        yield a, b
    finally:
        for m in (b, a):
            await m.runtime.stop()
            await m.node.stop()
            await m.bus.close(1.0)


def schema(name: str) -> dict[str, Any]:
    return dict(json.loads((MI / f"{name}.json").read_text()))


CALLS: dict[str, list[Any]] = {
    "clusterer_list": [None, []],
    "clusterer_list_topology": [None],
    "clusterer_list_cap": [None],
    "clusterer_list_sync": [None],
    "clusterer_list_shtags": [None],
    "clusterer_set_status": [{"cluster_id": 1, "status": 1}, [1, "1"]],
    "clusterer_shtag_set_active": [{"tag": "vip/1"}],
    "cluster_send_mi": [[1, 2, "put", ["a", "1"]],
                        {"cluster_id": 1, "destination": 2, "cmd_name": "put",
                         "cmd_params": ["b", "2"]}],
    "cluster_broadcast_mi": [[1, "put", ["c", "3"]]],
}


async def test_mi_answers_match_their_schemas(pair: tuple[Member, Member]) -> None:
    a, b = pair
    await eventually(lambda: a.node.capabilities["kv"].machine.synced and
                   b.node.capabilities["kv"].machine.synced)
    for name, calls in CALLS.items():
        doc = schema(name)
        for params in calls:
            jsonschema.validate(params, doc["params"])
            jsonschema.validate(await a.mi(name, params), doc["result"])
    # The remote MI commands ran on node 2 (and the broadcast on node 1 too).
    await eventually(lambda: b.data.get(b"a") == b"1" and b.data.get(b"b") == b"2"
                   and b.data.get(b"c") == b"3" and a.data.get(b"c") == b"3")
    assert await a.mi("cluster_broadcast_mi", [1, "put", ["d", "4"]]) == "OK"
    await eventually(lambda: b.data.get(b"d") == b"4" and a.data.get(b"d") == b"4")
    nodes = (await a.mi("clusterer_list"))["Clusters"][0]["Nodes"]
    assert [(n["node_id"], n["link_state"], n["next_hop"]) for n in nodes] == [(2, "Up", "2")]
    assert await a.mi("clusterer_list_shtags") == [{"Tag": "vip", "Cluster": 1,
                                                    "State": "active", "Node": 1}]
    await eventually(lambda: not b.node.shtags.is_active("vip"))


@pytest.mark.parametrize(("method", "params", "code"), [
    ("clusterer_set_status", [1, 5], 400),
    ("clusterer_set_status", [9, 0], 404),
    ("clusterer_set_status", ["x", 0], 400),
    ("clusterer_shtag_set_active", ["nope/1"], 404),
    ("clusterer_shtag_set_active", ["vip"], 400),
    ("cluster_send_mi", [1, 3, "uptime"], 400),  # Destination down
    ("cluster_send_mi", [1, 2, "uptime", "not-an-array"], -32602),
    ("cluster_send_mi", [1, 1, "uptime"], 400),
    ("cluster_send_mi", [1], -32602),
    ("cluster_broadcast_mi", [1, "no_such_command"], -32601),  # the local run's answer
])
async def test_bad_input_gets_a_clear_error(pair: tuple[Member, Member], method: str,
                                            params: Any, code: int) -> None:
    a, _ = pair
    with pytest.raises(LookupError) as info:
        await a.mi(method, params)
    assert info.value.args[0]["code"] == code


async def test_events_on_node_down_and_tag_takeover(pair: tuple[Member, Member]) -> None:
    a, b = pair
    await eventually(lambda: a.node.shtags.is_active("vip"))
    assert ("E_CLUSTERER_NODE_STATE_CHANGED",
            {"cluster_id": 1, "node_id": 2, "new_state": 1}) in a.events
    await a.mi("clusterer_set_status", [1, 0])
    await eventually(lambda: b.node.shtags.is_active("vip") and not b.node.reachable)
    await eventually(lambda: ("E_CLUSTERER_NODE_STATE_CHANGED",
                            {"cluster_id": 1, "node_id": 1, "new_state": 0}) in b.events)
    changed = [p for n, p in b.events if n == "E_CLUSTERER_SHARING_TAG_CHANGED"]
    assert changed[-1] == {"name": "vip", "cluster_id": 1, "node_id": 2, "state": 1,
                           "reason": "takeover"}
    assert [p["state"] for n, p in a.events if n == "E_CLUSTERER_SHARING_TAG_CHANGED"] == [1, 0]
    assert b.node.send("kv", 1, b"x\0y") == -2  # unreachable
    assert a.node.send("kv", 2, b"x\0y") == -1  # disabled


async def test_seeds_and_admission_from_discovery() -> None:
    from shared.discovery import Instance

    registry = MemoryRegistry()
    cfg = dataclasses.replace(BASE, members="", discovery_service="regsvc", sharing_tags=())
    nodes = [ClusterNode(dataclasses.replace(cfg, node_id=i, members=str(i)), registry=registry)
             for i in (1, 2)]  # members: only itself -- node 2 is known through discovery
    try:
        for n in nodes:
            await n.start()
            await registry.register(Instance("regsvc", f"r{n.id}", "127.0.0.1", 1,
                                             meta=n.meta()), 30)
        await eventually(lambda: nodes[0].reachable == {2} and nodes[1].reachable == {1}, 8)
        assert nodes[0].discovered == {2}
    finally:
        for n in nodes:
            await n.stop()


async def test_consul_sharing_tags_through_the_engine() -> None:
    from shared.discovery.testing.fake_consul import FakeConsul

    consul = FakeConsul()
    addr = await consul.start()
    cfg = dataclasses.replace(BASE, shtag_backend="consul", consul_addr=addr,
                              shtag_lock_delay=0)
    a = ClusterNode(dataclasses.replace(cfg, node_id=1, seed=True))
    await a.start()
    b = ClusterNode(dataclasses.replace(cfg, node_id=2, seeds=(f"1@{a.url}",)))
    await b.start()
    try:
        await eventually(lambda: a.shtags.is_active("vip") != b.shtags.is_active("vip"), 8)
        holder, other = (a, b) if a.shtags.is_active("vip") else (b, a)
        key = consul.kv["sipmesh/cluster/1/shtag/vip"]
        assert key.session is not None and key.value == str(holder.id).encode()
        # Forced move: the holder is asked over the cluster to release, then it is taken.
        await other.shtag_set_active("vip")
        await eventually(lambda: other.shtags.is_active("vip") and
                       not holder.shtags.is_active("vip"), 8)
        assert consul.kv["sipmesh/cluster/1/shtag/vip"].value == str(other.id).encode()
    finally:
        await b.stop()
        await a.stop()
        await consul.stop()
