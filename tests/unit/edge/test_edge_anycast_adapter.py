"""The tm-repl adapter (services/edge/anycast_cluster.py) against a recording cluster node:
what it sends, batching of announcements, and a refused send handled locally + the event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from services.edge.anycast import (
    ANNOUNCE,
    REPLY,
    AnycastCore,
    ClusterSend,
    decode,
    decode_keys,
    encode,
    encode_keys,
)
from services.edge.anycast_cluster import CAPABILITY, AnycastCluster
from shared.cluster import SENT, UNREACHABLE
from tests.support.waiting import eventually


class Node:
    def __init__(self, result: int = SENT) -> None:
        self.result = result
        self.sent: list[tuple[int | None, bytes]] = []
        self.reachable = {2}
        self.caps: dict[str, Any] = {}

    def register_capability(self, name: str, **kw: Any) -> None:
        self.caps[name] = kw

    def send(self, cap: str, dst: int, payload: bytes) -> int:
        assert cap == CAPABILITY
        self.sent.append((dst, payload))
        return self.result

    def send_all(self, cap: str, payload: bytes) -> int:
        assert cap == CAPABILITY
        self.sent.append((None, payload))
        return self.result


class App:
    def __init__(self) -> None:
        self.fed: list[Callable[[Any, float], Sequence[Any]]] = []

    def feed(self, fn: Callable[[Any, float], Sequence[Any]]) -> None:
        self.fed.append(fn)


class Events:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, name: str, params: dict[str, Any]) -> None:
        self.published.append((name, params))


def _adapter(result: int = SENT) -> tuple[AnycastCluster, Node, App, Events]:
    node, app, events = Node(result), App(), Events()
    core = AnycastCore(1, lambda n: n in node.reachable)
    adapter = AnycastCluster(node, app, core, events=events)
    adapter.register()
    return adapter, node, app, events


def test_announcements_of_one_window_travel_in_one_message() -> None:
    async def run() -> None:
        adapter, node, _, _ = _adapter()
        for i in range(3):
            adapter.send(ClusterSend(ANNOUNCE, None, b"", keys=((f"b{i}", "h", "5060"),)))
        assert node.sent == []
        await eventually(lambda: len(node.sent) == 1, 2.0, "the batch sent")
        [(dst, payload)] = node.sent
        assert dst is None and decode(payload).kind == ANNOUNCE
        assert decode_keys(decode(payload).data) == [["b0", "h", "5060"], ["b1", "h", "5060"],
                                                     ["b2", "h", "5060"]]

    asyncio.run(run())


def test_a_refused_send_is_handled_here_and_raises_the_event() -> None:
    adapter, node, app, events = _adapter(UNREACHABLE)
    item = ClusterSend(REPLY, 2, b"SIP/2.0 200 OK\r\n\r\n", ("10.0.0.1", 5060),
                       "udp:10.0.0.100:5060", call_id="c1")
    adapter.send(item)
    assert [dst for dst, _ in node.sent] == [2]
    assert events.published == [("E_CORE_TM_REPLICATION_FAILED", {
        "node": 2, "kind": "reply", "callid": "c1", "reason": "unreachable"})]

    class Core:
        def replication_failed(self, got: ClusterSend, now: float) -> list[str]:
            return ["handled", got.call_id]

    assert app.fed[0](Core(), 0.0) == ["handled", "c1"]


def test_an_update_is_reinjected_and_garbage_is_dropped() -> None:
    async def run() -> None:
        adapter, node, app, _ = _adapter()
        item = ClusterSend(REPLY, 1, b"SIP/2.0 180 Ringing\r\n\r\n", ("10.0.0.1", 5060),
                           "udp:10.0.0.100:5060")
        node.caps[CAPABILITY]["apply_update"](2, encode(item, 1.0))

        class Core:
            def replicated(self, got: ClusterSend, src: int, now: float) -> list[Any]:
                return [got.data, src]

        assert app.fed[0](Core(), 0.0) == [item.data, 2]
        node.caps[CAPABILITY]["apply_update"](2, b"\x01garbage")
        assert len(app.fed) == 1
        keys = ClusterSend(ANNOUNCE, None, encode_keys([("b", "h", "5060", "INVITE")]))
        node.caps[CAPABILITY]["apply_update"](2, encode(keys))
        assert adapter.core.owner_of(("b", "h", "5060", "INVITE"),
                                     asyncio.get_running_loop().time()) == 2

    asyncio.run(run())
