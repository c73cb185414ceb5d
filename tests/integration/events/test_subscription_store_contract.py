"""One contract suite over both subscription stores: SQLite file and real PostgreSQL."""

from __future__ import annotations

import asyncio
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


async def test_purge_deletes_only_rows_expired_in_the_store(
    store_factory: StoreFactory,
) -> None:
    """A replica whose memory holds an old expiry must not delete a row another replica
    refreshed: the purge looks at the store's expiry, not the caller's."""
    store = store_factory()
    await store.open()
    await store.save(StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", 100.0))
    await store.save(StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9001", 300.0))
    await store.save(StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9002", None))
    await store.purge(200.0)
    assert [r.socket for r in await store.load()] == [
        "udp:127.0.0.1:9001", "udp:127.0.0.1:9002"]


async def test_a_shared_store_tells_the_other_replicas(store_factory: StoreFactory) -> None:
    """PostgreSQL: each change wakes the other stores' watchers (the gateways reload);
    SQLite is one gateway's and says it has nothing to watch."""
    one, other = store_factory(), store_factory()
    await one.open()
    await other.open()
    woken = asyncio.Event()
    shared = await other.watch(woken.set)
    if not isinstance(other, PostgresSubscriptionStore):
        assert shared is False
        return
    assert shared is True
    await asyncio.wait_for(other.watching.wait(), 5)
    woken.clear()  # the watcher's own read at (re)connection
    await one.save(StoredSubscription("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", None))
    await asyncio.wait_for(woken.wait(), 5)
    woken.clear()
    await one.delete("E_UL_AOR_INSERT", "udp:127.0.0.1:9000")
    await asyncio.wait_for(woken.wait(), 5)


async def test_replicas_follow_each_other_through_the_store(
    store_factory: StoreFactory,
) -> None:
    """Two managers on one store, as two gateways: after ``reload`` each knows what the
    other subscribed and unsubscribed, and a purge by the one with a stale expiry keeps
    the row the other refreshed."""
    from gateway.events.subscriptions import SubscriptionManager
    from shared.events.schema import EventCatalog

    catalog = EventCatalog.load()
    t = [5_000.0]
    a = SubscriptionManager(catalog, store_factory(), now=lambda: t[0])
    b = SubscriptionManager(catalog, store_factory(), now=lambda: t[0])
    await a.start()
    await b.start()
    await a.subscribe("E_UL_AOR_INSERT", "udp:127.0.0.1:7001", 10)
    await b.reload()
    assert [str(s.socket) for s in b.subscribers("E_UL_AOR_INSERT")] == ["udp:127.0.0.1:7001"]
    await b.subscribe("E_UL_AOR_INSERT", "udp:127.0.0.1:7001", 600)  # refreshed via B
    t[0] += 20  # A never reloaded: its copy expired
    assert a.subscribers() == []
    await a.purge_expired()
    await a.reload()
    assert [s.remaining(t[0]) for s in a.subscribers()] == [580]
    await a.subscribe("E_UL_AOR_INSERT", "udp:127.0.0.1:7001", 0)  # unsubscribed via A
    await b.reload()
    assert b.subscribers() == []
