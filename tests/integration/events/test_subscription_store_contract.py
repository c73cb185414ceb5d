"""One contract suite over both subscription stores: SQLite file and real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.events.store import (
    PostgresSubscriptionStore,
    SQLiteSubscriptionStore,
    StoredSubscription,
    SubscriptionStore,
)

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
StoreFactory = Callable[[], SubscriptionStore]


@pytest.fixture(params=["sqlite", "postgres"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    table = f"evsub_{uuid.uuid4().hex[:12]}"
    made: list[SubscriptionStore] = []

    def make() -> SubscriptionStore:
        s: SubscriptionStore
        if request.param == "sqlite":
            s = SQLiteSubscriptionStore(tmp_path / "subs.sqlite", table=table)
        else:
            s = PostgresSubscriptionStore(PG_DSN, table=table)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()
    if request.param == "postgres":
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_saved_rows_load_back(store_factory: StoreFactory) -> None:
    store = store_factory()
    await store.open()
    assert await store.load() == []
    await store.save(StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", 1800.5))
    await store.save(StoredSubscription("E_ACC_CDR", "jsonrpc:127.0.0.1:9001/cdr", None))
    rows = await store.load()
    assert rows == [
        StoredSubscription("E_ACC_CDR", "jsonrpc:127.0.0.1:9001/cdr", None),
        StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", 1800.5),
    ]


async def test_save_again_replaces_the_expiry(store_factory: StoreFactory) -> None:
    store = store_factory()
    await store.open()
    await store.save(StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", 100.0))
    await store.save(StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", 200.0))
    assert await store.load() == [
        StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", 200.0)]


async def test_delete_removes_only_that_row(store_factory: StoreFactory) -> None:
    store = store_factory()
    await store.open()
    await store.save(StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", None))
    await store.save(StoredSubscription("E_UL_AOR_INSERT", "tcp:127.0.0.1:9000", None))
    await store.delete("E_UL_AOR_INSERT", "udp:127.0.0.1:9000")
    await store.delete("E_UL_AOR_INSERT", "udp:127.0.0.1:1")  # absent: no error
    assert [r.socket for r in await store.load()] == ["tcp:127.0.0.1:9000"]


async def test_rows_survive_a_reopen(store_factory: StoreFactory) -> None:
    first = store_factory()
    await first.open()
    await first.save(StoredSubscription("E_DLG_STATE_CHANGED", "udp:127.0.0.1:9000", 5.0))
    await first.close()
    second = store_factory()
    await second.open()
    assert await second.load() == [
        StoredSubscription("E_DLG_STATE_CHANGED", "udp:127.0.0.1:9000", 5.0)]


def test_table_names_are_checked() -> None:
    with pytest.raises(ValueError, match="bad table name"):
        SQLiteSubscriptionStore(":memory:", table="x; DROP TABLE y")


async def test_manager_subscriptions_survive_a_gateway_restart(
    store_factory: StoreFactory,
) -> None:
    from gateway.events.subscriptions import SubscriptionManager
    from shared.events.schema import EventCatalog

    catalog = EventCatalog.load()
    t = [5_000.0]
    first = SubscriptionManager(catalog, store_factory(), now=lambda: t[0])
    await first.start()
    await first.subscribe("E_ACC_CDR", "jsonrpc:127.0.0.1:7000/cdr", 600)
    await first.subscribe("E_UL_AOR_INSERT", "udp:127.0.0.1:7001", 5)
    await first.subscribe("E_UL_AOR_DELETE", "tcp:127.0.0.1:7002", 600)
    await first.subscribe("E_UL_AOR_DELETE", "tcp:127.0.0.1:7002", 0)
    t[0] += 10  # the gateway was down for 10 s: the 5 s subscription expired meanwhile
    second = SubscriptionManager(catalog, store_factory(), now=lambda: t[0])
    await second.start()
    assert [(s.event, str(s.socket), s.remaining(t[0])) for s in second.subscribers()] == [
        ("E_ACC_CDR", "jsonrpc:127.0.0.1:7000/cdr", 590)]
