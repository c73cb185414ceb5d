"""Presence in the shared database: a hint lost while a link is down (the seed that came
back alone, synced by ``seed_fallback_interval`` before its links are up; a partition)
is repaired when the other node becomes reachable: the node reads the store again and
NOTIFYs its own watchers of what changed. Two services on one SQLite store; the cluster
is a stand-in whose links drop every hint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.presence.app import PresenceService
from services.presence.config import PresenceConfig
from services.presence.core import Meta
from services.presence.publications import Publication
from services.presence.store import open_store
from services.presence.subscriptions import Notify, Subscription
from shared.cluster.state import SEND_ERROR, SENT
from tests.support.waiting import eventually
from tests.unit.presence.test_core import publish, subscribe

META = Meta(source="sip:192.0.2.7:5062;transport=udp",
            local_contact="sip:10.0.0.1:5060;transport=udp", edge_uac="127.0.0.1:9000",
            to_tag="ourtag")
pytestmark = pytest.mark.timeout(20)


class Shtags:
    def __init__(self, active: str) -> None:
        self.tags = {"tag-1": None, "tag-2": None}
        self.active = active

    def is_active(self, tag: str) -> bool:
        return tag == self.active


class LinksDown:
    """A cluster node whose links are down: every hint it is asked to send is lost."""

    def __init__(self, active: str) -> None:
        self.shtags = Shtags(active)
        self.lost: list[bytes] = []

    def broadcast(self, cap: str, payload: bytes) -> int:
        self.lost.append(payload)
        return 0


class Uac:
    def __init__(self) -> None:
        self.sent: list[Notify] = []

    async def send(self, notify: Notify) -> tuple[int, str]:
        self.sent.append(notify)
        return 200, "OK"

    async def close(self) -> None:
        return None


async def node(db: Path, tag: str, node_id: int) -> tuple[PresenceService, Uac]:
    store = open_store(str(db))
    await store.open()
    uac = Uac()
    svc = PresenceService(PresenceConfig(cluster=True, sharing_tag=tag), store=store,
                          uac=uac, node_id=node_id,  # type: ignore[arg-type]
                          cluster=LinksDown(active=tag))
    svc.catch_up()  # its sync is done (the seed's fallback): ready
    await eventually(lambda: svc.caught_up, 5, "the first read of the store")
    return svc, uac


def basics(uac: Uac) -> list[bytes]:
    return [n.body for n in uac.sent]


async def test_a_hint_lost_while_the_link_was_down_is_repaired_once_it_is_up(
        tmp_path: Path) -> None:
    db = tmp_path / "presence.sqlite"
    one, uac1 = await node(db, "tag-1", 1)
    two, _ = await node(db, "tag-2", 2)
    try:
        assert (await one.handle(subscribe(), META))[0] == 200  # alice watches bob, on 1
        await eventually(lambda: len(uac1.sent) == 1, 5, "the immediate NOTIFY")
        assert (await two.handle(publish("open"), META))[0] == 200  # bob publishes, on 2
        assert two.cluster.lost  # its hint to node 1 is gone with the link
        assert len(uac1.sent) == 1 and b"open" not in uac1.sent[0].body
        one.peer_up(2, True)  # the link to node 2 is up
        await eventually(lambda: len(uac1.sent) == 2, 5, "alice's NOTIFY of bob's open")
        assert b"<basic>open</basic>" in uac1.sent[1].body
        assert uac1.sent[1].presentity == "bob@example.com"
        # A link going down, or coming up with nothing changed, sends nothing more.
        one.peer_up(2, False)
        one.peer_up(2, True)
        await eventually(lambda: one._reading is not None and one._reading.done(), 5,
                         "the second read")
        assert len(uac1.sent) == 2
    finally:
        for svc in (one, two):
            await svc.stop()
            assert svc.store is not None
            await svc.store.close()


async def test_a_read_for_a_peer_does_not_make_the_node_ready_before_its_sync(
        tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "p.sqlite"))
    await store.open()
    svc = PresenceService(PresenceConfig(cluster=True), store=store, uac=Uac(),  # type: ignore[arg-type]
                          cluster=LinksDown(active="presence"))
    try:
        assert not svc.caught_up
        svc.peer_up(2, True)
        await eventually(lambda: svc._reading is not None and svc._reading.done(), 5,
                         "the read for the peer")
        assert not svc.caught_up  # ready only once its sync is done
        svc.catch_up()
        await eventually(lambda: svc.caught_up, 5, "ready after the sync's read")
    finally:
        await svc.stop()
        await store.close()




async def test_a_publish_of_ours_during_a_whole_store_read_is_kept(tmp_path: Path) -> None:
    """The whole-store read's snapshot is taken before a PUBLISH of this node is written
    and put in place after: the node reads that presentity again, so its publication
    stays listed (pres_phtable_list answers from memory) rather than vanishing until the
    next request on it."""
    one, _ = await node(tmp_path / "presence.sqlite", "tag-1", 1)
    assert one.store is not None
    real_load = one.store.load
    snapshot_taken, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> tuple[list[Publication], list[Subscription]]:
        rows = await real_load()  # (before the PUBLISH below is written)
        snapshot_taken.set()
        await release.wait()
        return rows

    one.store.load = slow_load  # type: ignore[method-assign]
    try:
        one.peer_up(2, True)  # a whole-store read starts
        await asyncio.wait_for(snapshot_taken.wait(), 5)
        assert (await one.handle(publish("open"), META))[0] == 200
        assert one.core.pubs.of("bob@example.com")
        release.set()
        await eventually(lambda: one._reading is not None and one._reading.done(), 5,
                         "the whole-store read")
        await eventually(lambda: len(one.core.pubs.of("bob@example.com")) == 1, 5,
                         "bob's publication read again after the snapshot")
    finally:
        await one.stop()
        await one.store.close()


class HalfLink:
    """A cluster node with one peer: a hint reaches it while `up`, and is refused for the
    link (SEND_ERROR, the peer still counted as reachable) while not."""

    def __init__(self, active: str, node_id: int) -> None:
        self.shtags = Shtags(active)
        self.node_id = node_id
        self.peer: PresenceService | None = None
        self.up = True

    def broadcast(self, cap: str, payload: bytes) -> int:
        if not self.up or self.peer is None:
            return SEND_ERROR
        self.peer.apply_update(self.node_id, payload)
        return SENT


async def test_a_hint_refused_for_a_link_being_made_again_is_sent_at_the_next_tick(
        tmp_path: Path) -> None:
    """The restarted node read the store when its own link came up; the other node's link
    to it comes up a redial later, and the hint of a change made meanwhile is refused for
    it: sent again at the next tick, the restarted node reads that presentity."""
    db = tmp_path / "presence.sqlite"
    one, _ = await node(db, "tag-1", 1)
    two, uac2 = await node(db, "tag-2", 2)
    link = HalfLink("tag-1", 1)
    one.cluster = link
    link.peer = two
    try:
        assert (await two.handle(subscribe(), META))[0] == 200  # alice watches bob, on 2
        await eventually(lambda: len(uac2.sent) == 1, 5, "the immediate NOTIFY")
        link.up = False
        assert (await one.handle(publish("open"), META))[0] == 200  # bob publishes, on 1
        assert not two.core.pubs.of("bob@example.com")
        link.up = True
        await one.tick()
        await eventually(lambda: len(uac2.sent) == 2, 5, "alice's NOTIFY of bob's open")
        assert b"<basic>open</basic>" in uac2.sent[1].body
        assert two.core.pubs.of("bob@example.com")
        await one.tick()  # sent once: nothing more
        assert len(uac2.sent) == 2
    finally:
        for svc in (one, two):
            await svc.stop()
            assert svc.store is not None
            await svc.store.close()
