"""Presence in the shared database: the node that takes a dead holder's sharing tag redoes
the NOTIFYs the dead node had started and never seen answered, once, and not those it saw
answered (their answers are in the store's 'notified' rows). Two services on one SQLite
store; the cluster is a stand-in whose tag moves by hand (the tests of the real engine's
takeover: tests/cluster/test_presence_tag_takeover_redo.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from services.presence.app import PresenceService
from services.presence.config import PresenceConfig
from services.presence.core import Meta
from services.presence.store import open_store
from services.presence.subscriptions import Notify
from tests.support.waiting import eventually
from tests.unit.presence.test_core import publish, subscribe

TAG = "presence"
pytestmark = pytest.mark.timeout(20)


def meta(to_tag: str) -> Meta:
    return Meta(source="sip:192.0.2.7:5062;transport=udp",
                local_contact="sip:10.0.0.1:5060;transport=udp", edge_uac="127.0.0.1:9000",
                to_tag=to_tag)


class Shtags:
    def __init__(self, active: bool) -> None:
        self.tags = {TAG: None}
        self.active = active

    def is_active(self, tag: str) -> bool:
        return self.active and tag == TAG


class Cluster:
    """A stand-in cluster node: its hints go nowhere (each test says what it reads)."""

    def __init__(self, active: bool) -> None:
        self.shtags = Shtags(active)

    def broadcast(self, cap: str, payload: bytes) -> int:
        return 0


class Uac:
    """Answers 200, except the NOTIFYs of the watchers in `hold`: never answered (the
    node dies with them in flight)."""

    def __init__(self) -> None:
        self.sent: list[Notify] = []
        self.hold: set[str] = set()

    async def send(self, notify: Notify) -> tuple[int, str]:
        self.sent.append(notify)
        if notify.call_id in self.hold:
            await asyncio.Event().wait()
        return 200, "OK"

    async def close(self) -> None:
        return None


async def node(db: Path, node_id: int, active: bool) -> tuple[PresenceService, Uac]:
    store = open_store(str(db))
    await store.open()
    uac = Uac()
    svc = PresenceService(PresenceConfig(cluster=True, sharing_tag=TAG), store=store,
                          uac=uac, node_id=node_id,  # type: ignore[arg-type]
                          cluster=Cluster(active))
    svc.catch_up()
    await eventually(lambda: svc.caught_up, 5, "the first read of the store")
    return svc, uac


def cseqs(uac: Uac, call_id: str) -> list[int]:
    return [n.cseq for n in uac.sent if n.call_id == call_id]


async def test_the_node_taking_the_tag_redoes_only_the_unanswered_notifies(
        tmp_path: Path) -> None:
    db = tmp_path / "presence.sqlite"
    one, uac1 = await node(db, 1, active=True)
    two, uac2 = await node(db, 2, active=False)
    try:
        # Two watchers of bob on node 1, each NOTIFY answered (and recorded).
        for call_id, tag in (("answered", "t1"), ("lost", "t2")):
            assert (await one.handle(subscribe(call_id=call_id), meta(tag)))[0] == 200
        await eventually(lambda: not one._in_flight, 5, "the immediate NOTIFYs answered")
        # bob publishes: the NOTIFY to "lost" is never answered before node 1 dies.
        uac1.hold.add("lost")
        assert (await one.handle(publish("open"), meta("p")))[0] == 200
        await eventually(lambda: len(uac1.sent) == 4, 5, "the PUBLISH's NOTIFYs started")
        await eventually(lambda: not one._confirms and one._confirming is not None
                         and one._confirming.done(), 5, "the answers recorded")

        # Node 2 had node 1's hint (it re-read bob); then node 1 dies with the NOTIFY in
        # flight, and node 2 takes the tag.
        two.apply_update(1, json.dumps({"presentity": "bob@example.com"}).encode())
        await eventually(lambda: two.core.pubs.compose("bob@example.com"), 5, "the hint")
        two.cluster.shtags.active = True
        two.tag_changed(TAG, True, "takeover")
        await eventually(lambda: cseqs(uac2, "lost") == [3], 5, "the redo of the lost one")
        (redo,) = uac2.sent
        assert b"<basic>open</basic>" in redo.body
        assert dict(redo.headers)["Subscription-State"].startswith("active;expires=")
        # Once: its answer is recorded, and taking the tag again redoes nothing.
        await eventually(lambda: not two._in_flight and not two._confirms
                         and two._confirming is not None and two._confirming.done(), 5,
                         "the redo answered and recorded")
        two.tag_changed(TAG, True, "takeover")
        await eventually(lambda: two._reading is not None and two._reading.done(), 5,
                         "the second read")
        assert [n.call_id for n in uac2.sent] == ["lost"]
    finally:
        for svc in (one, two):
            await svc.stop()
            assert svc.store is not None
            await svc.store.close()


async def test_a_tag_moved_by_mi_redoes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "presence.sqlite"
    one, uac1 = await node(db, 1, active=True)
    two, uac2 = await node(db, 2, active=False)
    try:
        uac1.hold.add("c1")  # in flight on a node that still runs: its answer comes there
        assert (await one.handle(subscribe(), meta("t1")))[0] == 200
        await eventually(lambda: len(uac1.sent) == 1, 5, "the immediate NOTIFY")
        two.cluster.shtags.active = True
        two.tag_changed(TAG, True, "MI command")
        two.tag_changed(TAG, False, "node 1 is active")
        assert not two._redo_tags and uac2.sent == []
    finally:
        for svc in (one, two):
            await svc.stop()
            assert svc.store is not None
            await svc.store.close()
