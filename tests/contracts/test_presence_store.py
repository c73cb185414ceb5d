"""One contract suite over the presence store: SQLite (the embedded default) and the real
PostgreSQL at 127.0.0.1:5432/test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.presence import pidf
from services.presence.publications import Publication
from services.presence.store import (
    PostgresPresenceStore,
    PresenceStore,
    SQLitePresenceStore,
    notified_row,
    pub_row,
    sub_row,
)
from services.presence.subscriptions import Subscription

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PresenceStore]:
    name = f"presence_t{uuid.uuid4().hex[:10]}"
    s: PresenceStore
    if request.param == "sqlite":
        s = SQLitePresenceStore(tmp_path / "p.sqlite", table=name)
    else:
        s = PostgresPresenceStore(PG_DSN, table=name)
    await s.open()
    yield s
    if isinstance(s, PostgresPresenceStore):
        await s.pool.execute(f"DROP TABLE {name}")
    await s.close()


def pub(etag: str, basic: str = "open") -> Publication:
    return Publication("bob@example.com", "presence", etag, 1_800_000_060.5,
                       pidf.document("sip:bob@example.com", basic), pidf.CONTENT_TYPE,
                       1_800_000_000.0, "sip:bob@example.com")


def sub(call_id: str, cseq: int = 1) -> Subscription:
    return Subscription(call_id, "wtag", "ourtag", "bob@example.com", "alice@example.com",
                        "<sip:alice@example.com>;tag=wtag",
                        "<sip:bob@example.com>;tag=ourtag", "sip:alice@192.0.2.7:5062",
                        "sip:10.0.0.1:5060", 1_800_000_600.0, route=("<sip:p1;lr>",),
                        next_hop="sip:192.0.2.7:5062;transport=udp", local_cseq=cseq)


async def test_rows_written_are_loaded_back_equal(store: PresenceStore) -> None:
    await store.write([pub_row(pub("e1")), sub_row(sub("c1"))], [])
    pubs, subs = await store.load()
    assert pubs == [pub("e1")] and subs == [sub("c1")]


async def test_an_upsert_replaces_and_a_delete_removes(store: PresenceStore) -> None:
    await store.write([pub_row(pub("e1")), sub_row(sub("c1")), sub_row(sub("c2"))], [])
    await store.write([sub_row(sub("c1", cseq=7)), pub_row(pub("e2", "closed"))],
                      [("pub", "e1"), ("sub", "c2;wtag;ourtag")])
    pubs, subs = await store.load()
    assert pubs == [pub("e2", "closed")] and subs == [sub("c1", cseq=7)]


async def test_deleting_what_is_not_there_is_no_error(store: PresenceStore) -> None:
    await store.write([], [("pub", "nothing"), ("sub", "nothing")])
    assert await store.load() == ([], [])


async def test_a_failed_write_leaves_nothing_half_done(store: PresenceStore) -> None:
    await store.write([pub_row(pub("e1"))], [])
    bad = ("pub", "e2", "bob@example.com", 1.0, None)  # NOT NULL record: the write fails
    with pytest.raises(Exception):  # noqa: B017 (each driver has its own error)
        await store.write([pub_row(pub("e3")), bad], [("pub", "e1")])  # type: ignore[list-item]
    pubs, _ = await store.load()
    assert [p.etag for p in pubs] == ["e1"]


async def test_one_presentity_and_the_due_ones(store: PresenceStore) -> None:
    other = Publication("carol@example.com", "presence", "c1", 1_800_000_010.0,
                        pidf.document("sip:carol@example.com", "open"), pidf.CONTENT_TYPE,
                        1_800_000_000.0)
    await store.write([pub_row(pub("e1")), sub_row(sub("c1")), pub_row(other)], [])
    pubs, subs = await store.load_presentity("bob@example.com")
    assert pubs == [pub("e1")] and subs == [sub("c1")]
    assert await store.load_presentity("nobody@example.com") == ([], [])
    assert await store.due(1_800_000_009.0) == []
    assert await store.due(1_800_000_010.0) == ["carol@example.com"]
    assert await store.due(1_800_001_000.0) == ["bob@example.com", "carol@example.com"]


async def test_a_notify_answered_is_kept_beside_its_subscription_only(
        store: PresenceStore) -> None:
    answered = sub("c1", cseq=3)
    answered.notified = 2
    gone = sub("c2")
    gone.notified = 1
    await store.write([sub_row(answered)], [])
    await store.confirm([notified_row(answered), notified_row(gone)])  # c2: no row, none
    (loaded,) = (await store.load())[1]
    assert loaded == answered and loaded.notified == 2 and loaded.pending
    (loaded,) = (await store.load_presentity("bob@example.com"))[1]
    assert loaded.notified == 2
    answered.notified = 3
    await store.confirm([notified_row(answered)])
    assert (await store.load())[1][0].notified == 3
    assert await store.due(1_800_001_000.0) == ["bob@example.com"]  # (its subscription)
    await store.write([], [("sub", answered.key), ("notified", answered.key)])
    assert await store.load() == ([], [])
    assert await store.due(1_800_001_000.0) == []  # nothing left behind
