"""One contract suite over the media store backends (the rtpengine table and the records
of calls kept off their home instance): SQLite (embedded default) and the real PostgreSQL
of this machine (127.0.0.1:5432, database `test`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.media.store import MediaStore, PostgresMediaStore, SQLiteMediaStore

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaStore]:
    table = f"rtpengine_t{uuid.uuid4().hex[:10]}"  # parallel runs never share a table
    s: MediaStore
    if request.param == "sqlite":
        s = SQLiteMediaStore(tmp_path / "media.sqlite", table=table)
    else:
        s = PostgresMediaStore(PG_DSN, table=table)
    await s.open()
    yield s
    if isinstance(s, PostgresMediaStore):
        await s.pool.execute(f"DROP TABLE {table}")
        await s.pool.execute(f"DROP TABLE {table}_call")
    await s.close()


async def test_rows_as_opensips_table(store: MediaStore) -> None:
    assert await store.rows() == []
    first = await store.add("udp:127.0.0.1:2223", 0)
    second = await store.add("udp:127.0.0.1:2224=3 udp:127.0.0.1:2225", 1)
    rows = await store.rows()
    assert [(r.id, r.socket, r.set_id) for r in rows] == [
        (first, "udp:127.0.0.1:2223", 0), (second, "udp:127.0.0.1:2224=3 udp:127.0.0.1:2225", 1)]
    assert await store.remove("udp:127.0.0.1:2223", 1) == 0  # not in that set
    assert await store.remove("udp:127.0.0.1:2223") == 1
    assert [r.set_id for r in await store.rows()] == [1]


async def test_call_records(store: MediaStore) -> None:
    assert await store.find_call("c1") is None
    await store.record_call("c1", 0, "udp:127.0.0.1:2223", 100.0)
    await store.record_call("c1", 1, "udp:127.0.0.1:2224", 200.0)  # replaced
    await store.record_call("c2", 0, "udp:127.0.0.1:2223", 50.0)
    assert await store.find_call("c1") == (1, "udp:127.0.0.1:2224")
    assert await store.purge_calls(100.0) == 1  # c2 was older
    assert await store.find_call("c2") is None
    await store.forget_call("c1")
    assert await store.find_call("c1") is None
