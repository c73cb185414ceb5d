"""The replicating cluster modes in process: two user locations, each on a real
ClusterNode over loopback gRPC. A REGISTER is answered 200 only once the other node holds
it; a node not synced yet, or whose only peer stopped answering and is not yet declared
failed, answers 503 with Retry-After; and anti-entropy with tombstones repairs both ways
without bringing a deleted binding back."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.registrar.location import Location, Origin
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import CAPABILITY, UserLocation
from shared.cluster import ClusterConfig, ClusterNode, antientropy
from shared.sip import parse_message

HERE = Origin("10.0.0.5", 5060, "udp")
CFG = ClusterConfig(secret="s", members="1-3", ping_interval=0.2, ping_timeout=0.2,
                    ping_retries=2, node_timeout=1.0, seed_fallback_interval=0.2,
                    ack_timeout=0.3)


def register(user: str, expires: int = 600, cseq: int = 1) -> Any:
    return parse_message((
        f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:{user}@example.com>;tag=1\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: c-{user}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@10.0.0.5>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
    ).encode())


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.02)


@dataclasses.dataclass
class Member:
    node: ClusterNode
    ul: UserLocation

    def aors(self) -> set[str]:
        return set(self.ul.location.records)


async def member(node_id: int, store: SQLiteSubscribers, **cfg: Any) -> Member:
    node = ClusterNode(dataclasses.replace(CFG, node_id=node_id, **cfg))
    ul = UserLocation(Location(), store, cluster=node)
    node.register_capability(CAPABILITY, produce=ul.produce, apply_sync=ul.apply_sync,
                             apply_update=ul.apply_update, summary=ul.summary,
                             records_for=ul.records_for)
    await node.start()
    return Member(node, ul)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteSubscribers]:
    s = SQLiteSubscribers(tmp_path / "s.sqlite")
    await s.open()
    yield s
    await s.close()


async def test_a_200_means_the_other_node_holds_it(store: SQLiteSubscribers) -> None:
    a = await member(1, store, seed=True)
    b = await member(2, store, seeds=(f"1@{a.node.url}",))
    try:
        await wait_for(lambda: a.node.synced(CAPABILITY) and b.node.synced(CAPABILITY)
                       and a.node.alive == {2})
        result = await a.ul.save_async(register("alice"), HERE)
        assert result.status == 200
        assert "alice@example.com" in b.aors()  # before the answer, not eventually
        # The peer stops answering: until it is declared failed nothing is acknowledged.
        await b.node.stop()
        result = await a.ul.save_async(register("bob"), HERE)
        assert result.status == 503 and ("Retry-After", "1") in result.headers
        assert "bob@example.com" in a.aors()  # applied here, repaired later
        await wait_for(lambda: not a.node.alive, 5)
        assert (await a.ul.save_async(register("carol"), HERE)).status == 200  # alone now
        assert a.ul.stats["unreplicated_refused"] == 1
    finally:
        await a.node.stop()
        await b.node.stop()


async def test_a_peer_that_left_discovery_is_not_waited_for(store: SQLiteSubscribers) -> None:
    """A draining node leaves discovery first (rolling restart): the survivor answers 200
    at once instead of 503 until the link times out (a peer still registered that stops
    answering is refused as before: the test above)."""
    a = await member(1, store, seed=True)
    b = await member(2, store, seeds=(f"1@{a.node.url}",))
    try:
        await wait_for(lambda: a.node.synced(CAPABILITY) and b.node.synced(CAPABILITY)
                       and a.node.alive == {2})
        a.ul.nodes_in_discovery = {1}  # b deregistered (drained, or removed when dead)
        await b.node.stop()  # and is gone, not declared failed yet (that takes ~1 s)
        assert (await a.ul.save_async(register("carol"), HERE)).status == 200
        assert a.ul.stats["replicated_peer_departed"] == 1
        assert "unreplicated_refused" not in a.ul.stats
        assert a.ul.departed({2, 3}) == {2, 3} and a.ul.departed({1}) == set()
        a.ul.nodes_in_discovery = None  # discovery unknown: nobody counts as departed
        assert a.ul.departed({2}) == set()
    finally:
        await a.node.stop()
        await b.node.stop()


async def test_a_node_not_synced_refuses_without_changing_anything(
        store: SQLiteSubscribers) -> None:
    lonely = await member(2, store, seeds=("1@127.0.0.1:9",))  # its donor never answers
    try:
        result = await lonely.ul.save_async(register("alice"), HERE)
        assert result.status == 503 and dict(result.headers)["Retry-After"] == "1"
        assert lonely.aors() == set() and lonely.ul.stats["unsynced_refused"] == 1
    finally:
        await lonely.node.stop()


async def test_anti_entropy_repairs_both_ways_and_keeps_deletions(
        store: SQLiteSubscribers) -> None:
    # Two tables that diverged (a partition): anti-entropy's round, as the engine runs
    # it, leaves both with the newer of everything and no deleted binding revived.
    now = [1_800_000_000.0]
    left = UserLocation(Location(), store, clock=lambda: now[0], cluster=object())
    right = UserLocation(Location(), store, clock=lambda: now[0], cluster=object())
    left.save(register("shared"), HERE, replicate=False)
    [shared] = left.location.bindings()
    right.apply_update(1, next(left.produce()))  # the same version on both
    now[0] += 1
    left.save(register("only-left"), HERE, replicate=False)
    right.save(register("only-right"), HERE, replicate=False)
    now[0] += 1
    # Unregistered on the left during the partition: a tombstone, not a resurrection.
    assert left.save(register("shared", expires=0, cseq=2), HERE,
                     replicate=False).status == 200
    records, want = antientropy.answer_digest(right.summary, right.records_for,
                                              antientropy.Digest.of(left.summary()).to_bytes())
    left.apply_sync(records)
    right.apply_sync(antientropy.answer_want(left.summary, left.records_for, want))
    for ul in (left, right):
        assert set(ul.location.records) == {"only-left@example.com", "only-right@example.com"}
        assert (shared.aor, shared.key) in ul.tombstones
    assert antientropy.Digest.of(left.summary()).differing(
        antientropy.Digest.of(right.summary()).to_bytes()) == []
    # Registered again later: the binding wins over the older tombstone, everywhere.
    now[0] += 1
    right.save(register("shared", cseq=3), HERE, replicate=False)
    assert (shared.aor, shared.key) not in right.tombstones
    records, want = antientropy.answer_digest(left.summary, left.records_for,
                                              antientropy.Digest.of(right.summary()).to_bytes())
    right.apply_sync(records)
    left.apply_sync(antientropy.answer_want(right.summary, right.records_for, want))
    assert "shared@example.com" in left.location.records
    assert (shared.aor, shared.key) not in left.tombstones
