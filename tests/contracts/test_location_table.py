"""One contract suite over every location table (SQLite, the real PostgreSQL at
127.0.0.1:5432/test, the real Redis at 127.0.0.1:6379 for full-sharing-cachedb), and the
write-back/write-through writer on top of them."""

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
