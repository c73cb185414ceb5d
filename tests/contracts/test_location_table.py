"""One contract suite over every location table (SQLite, the real PostgreSQL at
127.0.0.1:5432/test, the real Redis at 127.0.0.1:6379 for full-sharing-cachedb), and the
write-back/write-through writer on top of them (group commit, a waiter released only once
its changes are stored, failed writes retried)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.registrar.cachedb import RedisLocationTable
from services.registrar.location import Binding
from services.registrar.persistence import (
    LocationTable,
    LocationWriter,
    PostgresLocationTable,
    SQLiteLocationTable,
    WriteFailed,
)

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def table(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LocationTable]:
    name = f"location_t{uuid.uuid4().hex[:10]}"
    t: LocationTable
    if request.param == "sqlite":
        t = SQLiteLocationTable(tmp_path / "loc.sqlite", table=name)
    elif request.param == "redis":  # a prefix of its own: parallel runs never collide
        t = RedisLocationTable("redis://127.0.0.1:6379/0", prefix=f"test:{name}:")
    else:
        t = PostgresLocationTable(PG_DSN, table=name)
    await t.open()
    yield t
    if isinstance(t, PostgresLocationTable):
        await t.pool.execute(f"DROP TABLE {name}")
    if isinstance(t, RedisLocationTable):
        await t.clear()
    await t.close()


def binding(uri: str, expires: float = T0 + 600, **kw: object) -> Binding:
    return Binding(aor="alice@example.com", uri=uri, expires=int(expires), callid="c",
                   cseq=3, path=("<sip:p;lr>",), last_modified=T0, **kw)  # type: ignore[arg-type]


async def test_bindings_round_trip_and_expired_ones_are_not_loaded(table: LocationTable) -> None:
    a = binding("sip:a@10.0.0.1", received="sip:1.2.3.4:5")
    b = binding("sip:b@10.0.0.2", expires=T0 - 1)
    c = binding("sip:c@10.0.0.3", expires=0)  # permanent
    await table.write([a, b, c], [])
    loaded = {x.uri: x for x in await table.load(T0)}
    assert set(loaded) == {"sip:a@10.0.0.1", "sip:c@10.0.0.3"}
    assert loaded["sip:a@10.0.0.1"] == a  # every field survives, path included


async def test_upsert_replaces_and_delete_removes(table: LocationTable) -> None:
    a = binding("sip:a@10.0.0.1")
    await table.write([a], [])
    a2 = binding("sip:a@10.0.0.1", expires=T0 + 900)
    await table.write([a2], [])
    assert [x.expires for x in await table.load(T0)] == [int(T0 + 900)]
    await table.write([], [(a.aor, a.key)])
    assert await table.load(T0) == []


async def test_replace_all_rewrites_the_table(table: LocationTable) -> None:
    await table.write([binding("sip:old@10.0.0.9")], [])
    await table.replace_all([binding("sip:new@10.0.0.8")])
    assert [x.uri for x in await table.load(T0)] == ["sip:new@10.0.0.8"]


async def test_writer_coalesces_and_writes_on_flush(table: LocationTable) -> None:
    writer = LocationWriter(table, write_through=False, interval=3600)
    a = binding("sip:a@10.0.0.1")
    writer.upsert(a)
    writer.upsert(binding("sip:a@10.0.0.1", expires=T0 + 50))
    writer.upsert(binding("sip:gone@10.0.0.1"))
    writer.delete(binding("sip:gone@10.0.0.1"))
    assert len(writer.pending) == 2
    assert await table.load(T0) == []  # write-back: nothing before the flush
    await writer.flush()
    assert [(x.uri, x.expires) for x in await table.load(T0)] == [("sip:a@10.0.0.1",
                                                                    int(T0 + 50))]


async def test_one_aor_is_loaded_alone_and_purge_removes_expired_rows(
        table: LocationTable) -> None:
    other = Binding(aor="bob@example.com", uri="sip:b@10.0.0.2", expires=int(T0 + 600))
    await table.write([binding("sip:a@10.0.0.1"), binding("sip:old@10.0.0.1", T0 - 5),
                       binding("sip:forever@10.0.0.1", 0), other], [])
    assert sorted(b.uri for b in await table.load_aor("alice@example.com", T0)) == [
        "sip:a@10.0.0.1", "sip:forever@10.0.0.1"]
    assert await table.purge(T0) == 1
    assert len(await table.load(0)) == 3


async def test_write_through_stores_everything_before_the_ticket_in_one_transaction(
        table: LocationTable) -> None:
    writer = LocationWriter(table, write_through=True)
    writer.start()
    try:
        assert writer.ticket().done()  # nothing noted: nothing to wait for
        for i in range(50):  # noted in one turn of the loop: one transaction
            writer.upsert(binding(f"sip:{i}@10.0.0.1"))
        await writer.ticket()
        assert len(await table.load(T0)) == 50
        assert writer.writes == 1 and writer.settled
        writer.delete(binding("sip:0@10.0.0.1"))
        await writer.flush()
        assert len(await table.load(T0)) == 49
    finally:
        await writer.stop()


class FailingTable:
    """Delegates to a real table; its next `fail` writes raise."""

    def __init__(self, table: LocationTable, fail: int) -> None:
        self.table, self.fail = table, fail

    def __getattr__(self, name: str) -> object:
        return getattr(self.table, name)

    async def write(self, upserts: object, deletes: object) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database away")
        await self.table.write(upserts, deletes)  # type: ignore[arg-type]


async def test_a_failed_write_fails_its_waiters_and_is_retried(table: LocationTable) -> None:
    flaky = FailingTable(table, fail=1)
    writer = LocationWriter(flaky, write_through=True, retry=0.01)  # type: ignore[arg-type]
    writer.start()
    try:
        writer.upsert(binding("sip:a@10.0.0.1"))
        with pytest.raises(WriteFailed):
            await writer.ticket()  # its answer must not say "stored"
        assert writer.failures == 1 and not writer.settled
        writer.upsert(binding("sip:b@10.0.0.2"))
        await writer.ticket()  # the retry stores both
        assert sorted(b.uri for b in await table.load(T0)) == ["sip:a@10.0.0.1",
                                                              "sip:b@10.0.0.2"]
        assert writer.failures == 1 and writer.settled
    finally:
        await writer.stop()


async def test_write_back_writes_nothing_before_its_interval_or_a_flush(
        table: LocationTable) -> None:
    writer = LocationWriter(table, write_through=False, interval=3600)
    writer.start()
    try:
        writer.upsert(binding("sip:a@10.0.0.1"))
        assert not writer.settled
        await writer.flush()  # ul_flush
        assert [b.uri for b in await table.load(T0)] == ["sip:a@10.0.0.1"]
        writer.upsert(binding("sip:b@10.0.0.2"))
    finally:
        await writer.stop()  # at stop: what is pending goes out
    assert len(await table.load(T0)) == 2


@pytest.mark.parametrize(("asked", "pragma"), [("normal", 1), ("full", 2)])
async def test_sqlite_commits_with_the_synchronous_level_asked(
        tmp_path: Path, asked: str, pragma: int) -> None:
    """NORMAL by default (a commit survives a killed process, in WAL mode), FULL on demand;
    the file stays in WAL mode either way."""
    t = SQLiteLocationTable(tmp_path / "loc.sqlite", synchronous=asked)
    await t.open()
    try:
        rows = await t.db.execute_fetchall("PRAGMA synchronous")
        mode = await t.db.execute_fetchall("PRAGMA journal_mode")
        assert [tuple(r) for r in [*rows, *mode]] == [(pragma,), ("wal",)]
    finally:
        await t.close()
    assert SQLiteLocationTable(tmp_path / "x.sqlite").synchronous == "normal"
    with pytest.raises(ValueError, match="normal or full"):
        SQLiteLocationTable(tmp_path / "x.sqlite", synchronous="off")
