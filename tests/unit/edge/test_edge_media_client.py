"""The edge's media client across a broker restart (issue 20): once a broker was seen in
discovery, a call that finds none, or reaches none of those listed, waits for discovery
to list one within its deadline; a mesh that never had a broker, fixed addresses and a
call that reached a broker and failed are not retried."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest

from services.edge.media_anchor import policy
from services.edge.media_client import MediaClient, MediaUnavailable


@dataclass
class Instance:
    meta: dict[str, str]


@dataclass
class Broker:
    """A stub: answers Offer, or fails it with `code` (UNAVAILABLE: nothing was sent)."""

    name: str
    code: grpc.StatusCode | None = None
    calls: list[str] = field(default_factory=list)

    async def Offer(self, request: Any, timeout: float) -> str:  # the gRPC method's name
        self.calls.append(request.call_id)
        if self.code is not None:
            raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata())
        return f"answer from {self.name}"


class Stubs:
    def __init__(self, brokers: dict[str, Broker]) -> None:
        self.brokers = brokers

    def get(self, target: str) -> Broker:
        return self.brokers[target]

    async def close(self) -> None:
        return None


class Registry:
    """Discovery as the client's watch sees it: healthy() now, watch() never changes
    (the tests drive updates through _set, as the watch task does)."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances

    async def healthy(self, service: str) -> list[Instance]:
        return list(self.instances)


def client(brokers: dict[str, Broker], *, registry: Any = None, addresses: tuple[str, ...] = (),
           timeout: float = 5.0) -> MediaClient:
    made = MediaClient(addresses=addresses, registry=registry, timeout=timeout, anchor=True)
    made.stubs = Stubs(brokers)  # type: ignore[assignment]
    made._ensure_watch = lambda: None  # type: ignore[method-assign]  # updates: by hand
    return made


def offer(call_id: str = "c1") -> Any:
    return MediaClient.request(call_id=call_id, from_tag="a", sdp=b"v=0\r\n")


async def test_a_call_waits_for_the_next_broker_while_one_restarts() -> None:
    old, new = Broker("old"), Broker("new")
    media = client({"old:1": old, "new:1": new}, registry=Registry([]))
    media._set([Instance({"grpc": "old:1"})])
    assert await media.call("Offer", offer("before")) == "answer from old"
    media._set([])  # the old broker left discovery (draining)
    assert policy(cast(Any, Ctx(media))) is media  # still anchored: a broker is expected
    pending = asyncio.ensure_future(media.call("Offer", offer("during")))
    await asyncio.sleep(0)  # the call is now waiting for discovery (not a timing)
    assert not pending.done()
    media._set([Instance({"grpc": "new:1"})])  # the new one registered
    assert await pending == "answer from new"
    assert new.calls == ["during"]


async def test_a_broker_that_cannot_be_reached_is_retried_once_discovery_changes() -> None:
    gone, new = Broker("gone", grpc.StatusCode.UNAVAILABLE), Broker("new")
    media = client({"gone:1": gone, "new:1": new}, registry=Registry([]))
    media._set([Instance({"grpc": "gone:1"})])
    pending = asyncio.ensure_future(media.call("Offer", offer()))
    await asyncio.sleep(0)
    assert gone.calls == ["c1"] and not pending.done()
    media._set([Instance({"grpc": "new:1"})])
    assert await pending == "answer from new"


async def test_no_broker_within_the_deadline_is_unavailable() -> None:
    media = client({}, registry=Registry([]), timeout=0.05)
    media._set([Instance({"grpc": "old:1"})])
    media._set([])
    with pytest.raises(MediaUnavailable, match="no media broker known"):
        await media.call("Offer", offer())


async def test_a_mesh_that_never_had_a_broker_neither_waits_nor_anchors() -> None:
    media = client({}, registry=Registry([]))
    assert policy(cast(Any, Ctx(media))) is None
    with pytest.raises(MediaUnavailable, match="no media broker known"):
        await media.call("Offer", offer())


async def test_fixed_addresses_are_not_waited_for() -> None:
    down = Broker("down", grpc.StatusCode.UNAVAILABLE)
    media = client({"down:1": down}, addresses=("down:1",))
    with pytest.raises(MediaUnavailable):
        await media.call("Offer", offer())
    assert down.calls == ["c1"]


async def test_a_broker_that_failed_the_call_is_not_retried() -> None:
    failing, other = Broker("failing", grpc.StatusCode.DEADLINE_EXCEEDED), Broker("other")
    media = client({"failing:1": failing, "other:1": other}, registry=Registry([]))
    media._set([Instance({"grpc": "failing:1"})])
    with pytest.raises(MediaUnavailable):
        await media.call("Offer", offer())  # an offer may have created the call leg
    assert other.calls == []


@dataclass
class Ctx:
    media: MediaClient

    @property
    def services(self) -> dict[str, Any]:
        return {"media": self.media}
