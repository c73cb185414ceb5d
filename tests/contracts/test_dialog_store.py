"""One contract suite over the dialog store and the CDR store: SQLite (the embedded
default) and the real PostgreSQL at 127.0.0.1:5432/test."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dialog.cdr import Cdr
from services.dialog.store import (
    CdrStore,
    DialogStore,
    PostgresCdrStore,
    PostgresDialogStore,
    SQLiteCdrStore,
    SQLiteDialogStore,
)

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
T0 = 1_800_000_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
async def dialogs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DialogStore]:
    name = f"dialog_t{uuid.uuid4().hex[:10]}"
    store: DialogStore
    if request.param == "sqlite":
        store = SQLiteDialogStore(tmp_path / "d.sqlite", table=name)
    else:
        store = PostgresDialogStore(PG_DSN, table=name)
    await store.open()
    yield store
    if isinstance(store, PostgresDialogStore):
        await store.pool.execute(f"DROP TABLE {name}")
    await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def cdrs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CdrStore]:
    name = f"acc_t{uuid.uuid4().hex[:10]}"
    store: CdrStore
    if request.param == "sqlite":
        store = SQLiteCdrStore(tmp_path / "c.sqlite", table=name)
    else:
        store = PostgresCdrStore(PG_DSN, table=name)
    await store.open()
    yield store
    if isinstance(store, PostgresCdrStore):
        await store.pool.execute(f"DROP TABLE {name}")
    await store.close()


def cdr(callid: str, *, at: int = T0, node: int = 1, missed: bool = False) -> Cdr:
    return Cdr(cdr_id=f"{callid};ft", method="INVITE", from_tag="ft", to_tag="tt",
               callid=callid, sip_code=486 if missed else 200,
               sip_reason="Busy Here" if missed else "OK", time_ms=at,
               duration=0 if missed else 5, ms_duration=0 if missed else 5020, setuptime=1,
               created_ms=at, caller="alice@a", callee="bob@b", source_ip="192.0.2.1",
               destination="sip:bob@192.0.2.2", end_reason="failed" if missed else "caller-bye",
               extra={"account": "42"}, missed=missed, node=node)


async def test_dialog_rows_upsert_delete_and_load(dialogs: DialogStore) -> None:
    await dialogs.write([("c1", "a", 1, b"one"), ("c2", "b", 4, b"two")], [])
    await dialogs.write([("c1", "a", 4, b"one-v2")], [("c2", "b")])
    assert sorted(await dialogs.load()) == [b"one-v2"]
    await dialogs.write([], [("c1", "a"), ("nope", "x")])
    assert await dialogs.load() == []


async def test_binary_records_survive(dialogs: DialogStore) -> None:
    blob = bytes(range(256))
    await dialogs.write([("c", "t", 3, blob)], [])
    assert await dialogs.load() == [blob]


async def test_a_cdr_is_inserted_once_whoever_writes_it(cdrs: CdrStore) -> None:
    assert await cdrs.insert(cdr("call-1")) is True
    assert await cdrs.insert(cdr("call-1", node=2)) is False  # a failed-over retry
    row = await cdrs.get("call-1;ft")
    assert row is not None and row["node"] == 1 and row["extra"] == {"account": "42"}
    assert (row["sip_code"], row["duration"], row["ms_duration"]) == ("200", 5, 5020)
    assert row["time"].startswith("2027-01-15T") and row["time"].endswith("Z")
    assert not row["missed"] and not row["event_sent"]
    assert await cdrs.get("nope") is None


async def test_concurrent_inserts_make_one_row(cdrs: CdrStore) -> None:
    made = await asyncio.gather(*(cdrs.insert(cdr("race", node=n)) for n in range(8)))
    assert made.count(True) == 1
    assert len(await cdrs.export()) == 1


async def test_outbox_marks_and_lists_unsent_rows_per_writer(cdrs: CdrStore) -> None:
    for i in range(3):
        await cdrs.insert(cdr(f"o{i}", node=1))
    await cdrs.insert(cdr("other", node=2))
    await cdrs.mark_sent(["o1;ft"])
    assert [r["cdr_id"] for r in await cdrs.unsent(1)] == ["o0;ft", "o2;ft"]
    assert [r["cdr_id"] for r in await cdrs.unsent(2)] == ["other;ft"]


async def test_export_by_time_window(cdrs: CdrStore) -> None:
    for i in range(5):
        await cdrs.insert(cdr(f"t{i}", at=T0 + i * 60_000, missed=i == 2))
    since = dt.datetime.fromtimestamp((T0 + 60_000) / 1000, tz=dt.UTC)
    until = dt.datetime.fromtimestamp((T0 + 180_000) / 1000, tz=dt.UTC)
    rows = await cdrs.export(since, until)
    assert [r["callid"] for r in rows] == ["t1", "t2"]
    assert rows[1]["missed"] and rows[1]["sip_code"] == "486"
    assert len(await cdrs.export()) == 5


async def test_a_batch_insert_says_which_rows_it_made(cdrs: CdrStore) -> None:
    assert await cdrs.insert(cdr("old"))
    made = await cdrs.insert_many([cdr("old"), cdr("new1"), cdr("new2"), cdr("new1", node=2)])
    assert made == {"new1;ft", "new2;ft"}
    assert {r["cdr_id"] for r in await cdrs.export()} == {"old;ft", "new1;ft", "new2;ft"}
    assert (await cdrs.get("new1;ft"))["node"] == 1  # type: ignore[index]
    assert await cdrs.insert_many([]) == set()
