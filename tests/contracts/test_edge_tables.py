"""One contract suite over both backends of SipMesh's address and dispatcher tables
(shared/store/edge_tables.py): SQLite and the real PostgreSQL of this machine. Also the
guard every SQL store has: an OpenSIPS 2.4 table (or a MySQL URL) given as SipMesh's
store is refused with one line naming `sipmesh import opensips`, never a driver error."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.registrar.persistence import SQLiteLocationTable
from services.registrar.subscribers import PostgresSubscribers, SQLiteSubscribers
from shared.config import ConfigError
from shared.store.edge_tables import (
    Address,
    Destination,
    PostgresAddresses,
    PostgresDispatcher,
    SQLiteAddresses,
    SQLiteDispatcher,
)
from shared.store.opensips import OpenSIPSTableError

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def tables(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    suffix = uuid.uuid4().hex[:10]
    addresses: Any
    dispatcher: Any
    if request.param == "sqlite":
        addresses = SQLiteAddresses(str(tmp_path / "s.sqlite"), table=f"address_{suffix}")
        dispatcher = SQLiteDispatcher(str(tmp_path / "s.sqlite"), table=f"dispatcher_{suffix}")
    else:
        addresses = PostgresAddresses(PG_DSN, table=f"address_{suffix}")
        dispatcher = PostgresDispatcher(PG_DSN, table=f"dispatcher_{suffix}")
    await addresses.open()
    await dispatcher.open()
    yield addresses, dispatcher
    for t in (addresses, dispatcher):
        if isinstance(t, PostgresAddresses | PostgresDispatcher):
            await t.pool.execute(f"DROP TABLE {t.table}")
        await t.close()


async def test_addresses_are_kept_by_their_key(tables: Any) -> None:
    addresses, _ = tables
    rows = [Address(1, "10.0.0.0", 8, 0, "any", "", "office"),
            Address(1, "192.0.2.7", 32, 5060, "udp", "^sip:.*@example.com$", ""),
            Address(2, "2001:db8::", 32, 0, "tcp")]
    assert await addresses.put(rows) == 3
    assert await addresses.all() == sorted(rows, key=lambda a: (a.grp, a.ip))
    # The same key again replaces the row (an import run twice adds nothing).
    await addresses.put([Address(1, "10.0.0.0", 8, 0, "any", "", "hq")])
    got = await addresses.all()
    assert len(got) == 3 and got[0].context_info == "hq"


async def test_an_address_is_removed_by_its_key(tables: Any) -> None:
    addresses, _ = tables
    await addresses.put([Address(1, "10.0.0.0", 8), Address(1, "10.0.0.0", 16),
                         Address(2, "10.0.0.0", 8)])
    assert await addresses.delete(1, "10.0.0.0", 8, 0, "any") == 1
    assert await addresses.delete(1, "10.0.0.0", 8, 0, "any") == 0  # gone already
    assert await addresses.delete(1, "10.0.0.0", 8, 5060, "any") == 0  # another key
    assert [(a.grp, a.mask) for a in await addresses.all()] == [(1, 16), (2, 8)]


async def test_a_destination_is_removed_from_its_set(tables: Any) -> None:
    _, dispatcher = tables
    await dispatcher.put([Destination(1, "sip:a.example.com"), Destination(2, "sip:a.example.com")])
    assert await dispatcher.delete(1, "sip:a.example.com") == 1
    assert await dispatcher.delete(1, "sip:a.example.com") == 0
    assert [d.setid for d in await dispatcher.all()] == [2]


async def test_destinations_by_set_highest_priority_first(tables: Any) -> None:
    _, dispatcher = tables
    rows = [Destination(1, "sip:gw1.example.com", weight=1, priority=0),
            Destination(1, "sip:gw2.example.com:5080", socket="udp:192.0.2.1:5060", weight=3,
                        priority=5, attrs="carrier=b", description="backup"),
            Destination(2, "sip:10.0.0.9", state=1)]
    await dispatcher.put(rows)
    assert [d.destination for d in await dispatcher.all()] == [
        "sip:gw2.example.com:5080", "sip:gw1.example.com", "sip:10.0.0.9"]
    await dispatcher.put([Destination(2, "sip:10.0.0.9", state=0)])
    assert [d.state for d in await dispatcher.all() if d.setid == 2] == [0]


OPENSIPS_SUBSCRIBER = (
    "CREATE TABLE {t} (id INTEGER PRIMARY KEY, username CHAR(64) DEFAULT '' NOT NULL, "
    "domain CHAR(64) DEFAULT '' NOT NULL, password CHAR(25) DEFAULT '' NOT NULL, "
    "email_address CHAR(64) DEFAULT '' NOT NULL, ha1 CHAR(64) DEFAULT '' NOT NULL, "
    "ha1b CHAR(64) DEFAULT '' NOT NULL, rpid CHAR(64) DEFAULT NULL)")


async def test_an_opensips_subscriber_table_is_refused_with_the_import_command(
        tmp_path: Path) -> None:
    path = tmp_path / "opensips.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(OPENSIPS_SUBSCRIBER.format(t="subscriber"))
    with pytest.raises(OpenSIPSTableError) as err:
        await SQLiteSubscribers(path).open()
    assert isinstance(err.value, ConfigError)
    assert "OpenSIPS subscriber table" in str(err.value)
    assert "sipmesh import opensips --db URL" in str(err.value)
    assert "ha1_sha256" in str(err.value)


async def test_an_opensips_table_in_postgresql_is_refused_too() -> None:
    table = f"subscriber_os{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(OPENSIPS_SUBSCRIBER.format(t=table))
        with pytest.raises(OpenSIPSTableError, match="sipmesh import opensips"):
            await PostgresSubscribers(PG_DSN, table=table).open()
    finally:
        await conn.execute(f"DROP TABLE {table}")
        await conn.close()


async def test_an_opensips_location_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "opensips.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE location (contact_id INTEGER PRIMARY KEY, username TEXT, "
                   "domain TEXT, contact TEXT, expires INTEGER, callid TEXT, cseq INTEGER)")
    with pytest.raises(OpenSIPSTableError, match="OpenSIPS location table"):
        await SQLiteLocationTable(path).open()


async def test_a_mysql_url_as_a_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OpenSIPSTableError) as err:
        await SQLiteSubscribers("mysql://root:pw@db.example.com/opensips").open()
    assert "sipmesh import opensips" in str(err.value) and "pw" not in str(err.value)


async def test_a_table_of_another_kind_is_left_alone(tmp_path: Path) -> None:
    """Only OpenSIPS's shapes are refused: a table SipMesh does not recognise goes on
    to fail (or not) as before, so a future migration is never blocked by this guard."""
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE subscriber (username TEXT, domain TEXT, ha1 TEXT)")
    store = SQLiteSubscribers(path)
    await store.open()
    await store.close()
