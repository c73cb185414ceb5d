"""One contract suite over both FreeSWITCH box tables: SQLite (embedded default) and the
real PostgreSQL of this machine (127.0.0.1:5432, database `test`); and an OpenSIPS 2.4
`freeswitch` table read as it is."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.freeswitch.boxes import BoxSpec
from services.freeswitch.store import (
    BoxStore,
    BoxStoreError,
    PostgresBoxes,
    SQLiteBoxes,
    open_box_store,
)

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
# OpenSIPS 2.4's scripts/postgres/freeswitch_scripting-create.sql, as created there.
OPENSIPS_DDL = ("CREATE TABLE {t} (id SERIAL PRIMARY KEY NOT NULL, username VARCHAR(64), "
                "password VARCHAR(64) NOT NULL, ip VARCHAR(20) NOT NULL, port INTEGER "
                "DEFAULT 8021 NOT NULL, events_csv VARCHAR(255))")


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BoxStore]:
    table = f"freeswitch_t{uuid.uuid4().hex[:10]}"  # parallel runs never share a table
    s: BoxStore
    if request.param == "sqlite":
        s = SQLiteBoxes(tmp_path / "fs.sqlite", table=table)
    else:
        s = PostgresBoxes(PG_DSN, table=table)
    await s.open()
    yield s
    if isinstance(s, PostgresBoxes):
        await s.pool.execute(f"DROP TABLE {table}")
    await s.close()


A = BoxSpec("10.0.0.10", 8021, "ClueCon", "", ("CHANNEL_STATE", "CUSTOM sofia::register"),
            "media", "sip:10.0.0.10:5080", source="db")
B = BoxSpec("10.0.0.11", 8022, "s3cret", "ops", (), "default", "", source="db")


async def test_put_list_replace_remove(store: BoxStore) -> None:
    assert await store.boxes() == []
    await store.put(B)
    await store.put(A)
    assert await store.boxes() == [A, B]  # ordered by address
    moved = BoxSpec("10.0.0.10", 8021, "new", "", ("DTMF",), "other", "sip:10.0.0.10:5090",
                    source="db")
    await store.put(moved)  # same (ip, port): replaced, not added
    assert await store.boxes() == [moved, B]
    assert await store.remove("10.0.0.10", 8021)
    assert not await store.remove("10.0.0.10", 8021)
    assert await store.boxes() == [B]


async def test_reopening_keeps_the_boxes(store: BoxStore, tmp_path: Path) -> None:
    await store.put(A)
    again = open_box_store(store.path if isinstance(store, SQLiteBoxes) else PG_DSN,
                           table=store.table)  # type: ignore[attr-defined]
    await again.open()
    try:
        assert await again.boxes() == [A]
    finally:
        await again.close()


async def test_an_opensips_table_is_read_as_it_is_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "opensips.sqlite"
    db = sqlite3.connect(path)
    db.execute(OPENSIPS_DDL.format(t="freeswitch").replace("SERIAL PRIMARY KEY",
                                                           "INTEGER PRIMARY KEY"))
    db.execute("INSERT INTO freeswitch (username, password, ip, port, events_csv) VALUES "
               "(NULL, 'ClueCon', '10.0.0.10', 8021, 'CHANNEL_STATE,DTMF')")
    db.commit()
    db.close()
    s = SQLiteBoxes(path)
    await s.open()
    try:
        [box] = await s.boxes()
        assert (box.host, box.port, box.password, box.events, box.group, box.sip_uri) == (
            "10.0.0.10", 8021, "ClueCon", ("CHANNEL_STATE", "DTMF"), "default", "")
        await s.put(BoxSpec("10.0.0.12", 8021, "x", source="db"))  # no group/sip: fits
        with pytest.raises(BoxStoreError, match="grp"):
            await s.put(BoxSpec("10.0.0.13", 8021, "x", group="media", source="db"))
        assert len(await s.boxes()) == 2
    finally:
        await s.close()


async def test_an_opensips_table_is_read_as_it_is_postgresql() -> None:
    table = f"fs_opensips_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(OPENSIPS_DDL.format(t=table))
        await conn.execute(f"INSERT INTO {table} (password, ip, events_csv) VALUES "
                           "('ClueCon', '10.0.0.20', 'HEARTBEAT')")
        s = PostgresBoxes(PG_DSN, table=table)
        await s.open()
        try:
            [box] = await s.boxes()
            assert (box.host, box.port, box.events, box.sip_uri) == (
                "10.0.0.20", 8021, ("HEARTBEAT",), "")
            with pytest.raises(BoxStoreError, match="sip_uri"):
                await s.put(BoxSpec("10.0.0.21", 8021, "x", sip_uri="sip:a", source="db"))
        finally:
            await s.close()
    finally:
        await conn.execute(f"DROP TABLE {table}")
        await conn.close()


async def test_a_bad_table_name_is_refused() -> None:
    with pytest.raises(ValueError):
        SQLiteBoxes("/tmp/x.sqlite", table="fs; DROP TABLE x")
