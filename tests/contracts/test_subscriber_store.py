"""One contract suite over every subscriber store backend: SQLite (embedded default) and
the real PostgreSQL of this machine (127.0.0.1:5432, database `test`). Only HA1 hashes
are stored; they are the RFC 7616 H(user:realm:password) with realm = domain."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.registrar.subscribers import (
    PostgresSubscribers,
    SQLiteSubscribers,
    SubscriberExists,
    SubscriberStore,
    open_store,
)

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SubscriberStore]:
    table = f"subscriber_t{uuid.uuid4().hex[:10]}"  # parallel runs never share a table
    s: SubscriberStore
    if request.param == "sqlite":
        s = SQLiteSubscribers(tmp_path / "subscribers.sqlite", table=table)
    else:
        s = PostgresSubscribers(PG_DSN, table=table)
    await s.open()
    yield s
    if isinstance(s, PostgresSubscribers):
        await s.pool.execute(f"DROP TABLE {table}")
    await s.close()


async def test_add_get_hashes_not_passwords(store: SubscriberStore) -> None:
    await store.add("alice", "example.com", "s3cret")
    sub = await store.get("alice", "example.com")
    assert sub is not None
    assert sub.ha1 == hashlib.md5(b"alice:example.com:s3cret").hexdigest()
    assert sub.ha1_sha256 == hashlib.sha256(b"alice:example.com:s3cret").hexdigest()
    assert "s3cret" not in repr(sub)
    assert await store.get("alice", "other.com") is None
    assert await store.count() == 1


async def test_duplicate_add_is_refused(store: SubscriberStore) -> None:
    await store.add("bob", "example.com", "a")
    with pytest.raises(SubscriberExists):
        await store.add("bob", "example.com", "b")


async def test_password_change_and_removal(store: SubscriberStore) -> None:
    await store.add("carol", "example.com", "old")
    assert await store.set_password("carol", "example.com", "new")
    sub = await store.get("carol", "example.com")
    assert sub is not None and sub.ha1 == hashlib.md5(b"carol:example.com:new").hexdigest()
    assert not await store.set_password("nobody", "example.com", "x")
    assert await store.remove("carol", "example.com")
    assert not await store.remove("carol", "example.com")
    assert await store.get("carol", "example.com") is None


async def test_concurrent_lookups_each_get_their_own_answer(store: SubscriberStore) -> None:
    # Many lookups in one turn of the event loop (SQLite answers them in one trip to its
    # thread): each caller gets its subscriber, or None, in any mix.
    for i in range(0, 40, 2):
        await store.add(f"u{i}", "example.com", f"pw{i}")
    found = await asyncio.gather(*(store.get(f"u{i}", "example.com") for i in range(40)))
    assert [sub.username if sub else None for sub in found] == \
        [f"u{i}" if i % 2 == 0 else None for i in range(40)]
    assert all(sub.ha1 == hashlib.md5(f"{sub.username}:example.com:pw{sub.username[1:]}"
                                      .encode()).hexdigest() for sub in found if sub)


async def test_get_many_answers_each_key_in_order(store: SubscriberStore) -> None:
    # The registrar's SaveWithDigest path: the subscribers of one gRPC message at once,
    # repeated and missing keys included, alongside single lookups of the same turn.
    for i in range(0, 10, 2):
        await store.add(f"m{i}", "example.com", f"pw{i}")
    keys = [(f"m{i}", "example.com") for i in (4, 1, 0, 4, 8)] + [("m0", "other.example")]
    many, one = await asyncio.gather(store.get_many(keys), store.get("m2", "example.com"))
    assert [sub.username if sub else None for sub in many] == \
        ["m4", None, "m0", "m4", "m8", None]
    assert one is not None and one.username == "m2"
    assert await store.get_many([]) == []


async def test_sqlite_lookups_on_a_closed_store_fail_clearly(tmp_path: Path) -> None:
    s = SQLiteSubscribers(tmp_path / "closed.sqlite")
    await s.open()
    await s.close()
    results = await asyncio.gather(s.get("a", "example.com"), s.get("b", "example.com"),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert "not open" in str(results[0])


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(PG_DSN), PostgresSubscribers)
    assert isinstance(open_store(str(tmp_path / "x.sqlite")), SQLiteSubscribers)


async def test_sqlite_store_waiting_on_a_locked_file_leaves_the_event_loop_running(
        tmp_path: Path) -> None:
    """Another process (`sipmesh user add`) holding the file's write lock does not hold up
    the registrar's lookups (WAL: readers never wait for a writer), and a write of this
    store waits for it (up to the busy timeout) with the event loop still running."""
    path = tmp_path / "subscribers.sqlite"
    store = SQLiteSubscribers(path)
    await store.open()
    try:
        await store.add("alice", "example.com", "pw")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        other.execute("INSERT INTO subscriber VALUES ('zed', 'example.com', 'x', 'y')")
        async with asyncio.timeout(2):  # the registrar's lookups go on meanwhile
            sub = await store.get("alice", "example.com")
        assert sub is not None and sub.username == "alice"
        assert await store.get("zed", "example.com") is None  # not committed yet
        write = asyncio.create_task(store.add("bob", "example.com", "pw"))
        turns = 0
        while turns < 100:  # the loop keeps turning: the write waits elsewhere
            await asyncio.sleep(0)
            turns += 1
        assert not write.done()
        other.execute("COMMIT")
        other.close()
        async with asyncio.timeout(5):
            await write
        assert [await store.get(u, "example.com") is not None for u in ("bob", "zed")] == \
            [True, True]
    finally:
        await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.get("alice", "example.com")


async def test_put_hashes_writes_and_replaces_as_given(store: SubscriberStore) -> None:
    """What `sipmesh import opensips` writes: hashes it did not compute from a password."""
    from services.registrar.subscribers import Subscriber

    md5 = hashlib.md5(b"dora:example.com:pw").hexdigest()
    assert await store.put_hashes([Subscriber("dora", "example.com", md5, "")]) == 1
    got = await store.get("dora", "example.com")
    assert got is not None and (got.ha1, got.ha1_sha256) == (md5, "")
    await store.put_hashes([Subscriber("dora", "example.com", "a" * 32, "b" * 64)])
    got = await store.get("dora", "example.com")
    assert got is not None and (got.ha1, got.ha1_sha256) == ("a" * 32, "b" * 64)
    assert await store.count() == 1
