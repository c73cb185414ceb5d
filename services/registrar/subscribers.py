"""The subscriber store: who may register, kept as digest HA1 hashes, never passwords.

A port (`SubscriberStore`) with two backends that pass one contract suite
(tests/contracts/test_subscriber_store.py): `SQLiteSubscribers` (a file, the embedded
default, on aiosqlite's thread so the event loop never waits on the file; the lookups of
one loop turn share one statement) and `PostgresSubscribers` (asyncpg pool; every
registrar node and the CLI may share it).  Both create their table when missing.  The
realm of a subscriber is its domain, as OpenSIPS's `subscriber` table with
`calculate_ha1 = 0`: `ha1 = MD5(user:domain:password)` and
`ha1_sha256 = SHA-256(user:domain:password)` (RFC 7616 §3.4.2, RFC 8760).

`open_store(location)` picks the backend: a `postgresql://` DSN or a file path.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shared.store import PostgresPool, SQLiteFile, is_postgres_dsn

DEFAULT_TABLE = "subscriber"


@dataclass(frozen=True, slots=True)
class Subscriber:
    username: str
    domain: str
    ha1: str
    ha1_sha256: str


class SubscriberExists(Exception):
    """`add` of a user that is already there."""


def ha1_hashes(username: str, domain: str, password: str) -> tuple[str, str]:
    """(MD5, SHA-256) of `username:realm:password` with realm = domain."""
    text = f"{username}:{domain}:{password}".encode()
    return hashlib.md5(text).hexdigest(), hashlib.sha256(text).hexdigest()


class SubscriberStore(Protocol):
    async def open(self) -> None: ...

    async def add(self, username: str, domain: str, password: str) -> None: ...

    async def set_password(self, username: str, domain: str, password: str) -> bool: ...

    async def remove(self, username: str, domain: str) -> bool: ...

    async def get(self, username: str, domain: str) -> Subscriber | None: ...

    async def get_many(self, keys: Sequence[tuple[str, str]]) -> list[Subscriber | None]:
        """`get` of each (username, domain), in order, in one trip to the database."""
        ...

    async def count(self) -> int: ...

    async def put_hashes(self, subscribers: Iterable[Subscriber]) -> int: ...

    async def close(self) -> None: ...


_DDL = ("CREATE TABLE IF NOT EXISTS {t} (username TEXT NOT NULL, "
        "domain TEXT NOT NULL, ha1 TEXT NOT NULL, ha1_sha256 TEXT NOT NULL, "
        "PRIMARY KEY (username, domain))")


def default_location() -> str:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return str(base / "sipmesh" / "subscribers.sqlite")


def select_many(table: str, pairs: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """The SQLite statement and parameters reading the subscribers among `pairs` (rows
    username, domain, ha1, ha1_sha256).  CROSS JOIN keeps the wanted pairs as the outer
    loop: one primary-key search each (`(username, domain) IN (VALUES ...)` would scan the
    whole table)."""
    marks = ", ".join("(?, ?)" for _ in pairs)
    return (f"WITH wanted(u, d) AS (VALUES {marks}) "
            f"SELECT s.username, s.domain, s.ha1, s.ha1_sha256 FROM wanted "
            f"CROSS JOIN {table} AS s ON s.username = wanted.u AND s.domain = wanted.d",
            [value for pair in pairs for value in pair])


class SQLiteSubscribers(SQLiteFile):
    """Subscribers in a SQLite file, on aiosqlite's thread (shared.store.SQLiteFile).

    A trip to that thread costs more than the lookup itself, so the lookups asked in one
    turn of the event loop (the credentials calls of one gRPC Session message, typically)
    share one trip: one `SELECT ... IN (...)` for all of them (`get` -> `_lookup_batch`);
    measured, that is what made the registrar's share of a REGISTER small."""

    not_open = "subscriber store is not open"
    ddl = _DDL
    batch_limit = 400  # (user, domain) pairs per statement: 800 of SQLite's 32766 variables

    def __init__(self, path: str | Path, *, table: str = DEFAULT_TABLE) -> None:
        super().__init__(path, table=table)
        # Lookups waiting for the next trip to the thread, and the task making it.
        self._wanted: list[tuple[str, str, asyncio.Future[Subscriber | None]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    async def add(self, username: str, domain: str, password: str) -> None:
        md5, sha = ha1_hashes(username, domain, password)
        try:
            await self.db.execute(f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)",
                                  (username, domain, md5, sha))
        except sqlite3.IntegrityError:
            raise SubscriberExists(f"{username}@{domain}") from None

    async def set_password(self, username: str, domain: str, password: str) -> bool:
        md5, sha = ha1_hashes(username, domain, password)
        cur = await self.db.execute(
            f"UPDATE {self.table} SET ha1 = ?, ha1_sha256 = ? "
            "WHERE username = ? AND domain = ?", (md5, sha, username, domain))
        return cur.rowcount > 0

    async def remove(self, username: str, domain: str) -> bool:
        cur = await self.db.execute(
            f"DELETE FROM {self.table} WHERE username = ? AND domain = ?", (username, domain))
        return cur.rowcount > 0

    async def get(self, username: str, domain: str) -> Subscriber | None:
        self.db  # noqa: B018 -- RuntimeError now when not open, not later in the batch
        fut: asyncio.Future[Subscriber | None] = asyncio.get_running_loop().create_future()
        if not self._wanted:
            # The batch task's first step runs after what this turn of the loop already
            # queued: every lookup asked meanwhile joins it.
            task = asyncio.create_task(self._lookup_batch())
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        self._wanted.append((username, domain, fut))
        return await fut

    async def get_many(self, keys: Sequence[tuple[str, str]]) -> list[Subscriber | None]:
        # The same trip as `get`'s (lookups asked in this loop turn join it), without a
        # coroutine per key: the registrar's SaveWithDigest path asks for a whole message.
        self.db  # noqa: B018 -- RuntimeError now when not open, not later in the batch
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Subscriber | None]] = []
        if keys and not self._wanted:
            task = asyncio.create_task(self._lookup_batch())
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        for username, domain in keys:
            fut: asyncio.Future[Subscriber | None] = loop.create_future()
            self._wanted.append((username, domain, fut))
            futures.append(fut)
        return [await fut for fut in futures]

    async def _lookup_batch(self) -> None:
        wanted, self._wanted = self._wanted, []
        for i in range(0, len(wanted), self.batch_limit):
            part = wanted[i:i + self.batch_limit]
            try:
                found = await self._select(sorted({(u, d) for u, d, _ in part}))
            except Exception as exc:  # closed meanwhile, a locked file past the busy timeout
                for *_, fut in part:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for user, domain, fut in part:
                if not fut.done():
                    fut.set_result(found.get((user, domain)))

    async def _select(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Subscriber]:
        """The subscribers among `pairs`, in one statement (one trip to the thread)."""
        rows = await self.db.execute_fetchall(*select_many(self.table, pairs))
        return {(row[0], row[1]): Subscriber(*row) for row in rows}

    async def count(self) -> int:
        rows = list(await self.db.execute_fetchall(f"SELECT count(*) FROM {self.table}"))
        return int(rows[0][0])

    async def put_hashes(self, subscribers: Iterable[Subscriber]) -> int:
        """Writes subscribers with their hashes as given (`sipmesh import opensips`); one
        already there is replaced. The count written."""
        rows = [(s.username, s.domain, s.ha1, s.ha1_sha256) for s in subscribers]
        await self.db.execute("BEGIN")
        try:
            await self.db.executemany(
                f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?)", rows)
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        await self.db.execute("COMMIT")
        return len(rows)


class PostgresSubscribers(PostgresPool):
    ddl = _DDL
    max_size = 4
    not_open = "subscriber store is not open"

    def __init__(self, dsn: str, *, table: str = DEFAULT_TABLE, timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def add(self, username: str, domain: str, password: str) -> None:
        import asyncpg

        md5, sha = ha1_hashes(username, domain, password)
        try:
            await self.pool.execute(f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4)",
                                    username, domain, md5, sha)
        except asyncpg.UniqueViolationError:
            raise SubscriberExists(f"{username}@{domain}") from None

    async def set_password(self, username: str, domain: str, password: str) -> bool:
        md5, sha = ha1_hashes(username, domain, password)
        status = await self.pool.execute(
            f"UPDATE {self.table} SET ha1 = $1, ha1_sha256 = $2 "
            "WHERE username = $3 AND domain = $4", md5, sha, username, domain)
        return bool(status.endswith(" 1"))

    async def remove(self, username: str, domain: str) -> bool:
        status = await self.pool.execute(
            f"DELETE FROM {self.table} WHERE username = $1 AND domain = $2", username, domain)
        return bool(status.endswith(" 1"))

    async def get(self, username: str, domain: str) -> Subscriber | None:
        row = await self.pool.fetchrow(
            f"SELECT username, domain, ha1, ha1_sha256 FROM {self.table} "
            "WHERE username = $1 AND domain = $2", username, domain)
        return Subscriber(*row) if row else None

    async def get_many(self, keys: Sequence[tuple[str, str]]) -> list[Subscriber | None]:
        if not keys:
            return []
        rows = await self.pool.fetch(
            f"SELECT s.username, s.domain, s.ha1, s.ha1_sha256 "
            f"FROM unnest($1::text[], $2::text[]) AS w(u, d) "
            f"JOIN {self.table} AS s ON s.username = w.u AND s.domain = w.d",
            [u for u, _ in keys], [d for _, d in keys])
        found = {(r[0], r[1]): Subscriber(*r) for r in rows}
        return [found.get(key) for key in keys]

    async def count(self) -> int:
        return int(await self.pool.fetchval(f"SELECT count(*) FROM {self.table}"))

    async def put_hashes(self, subscribers: Iterable[Subscriber]) -> int:
        rows = [(s.username, s.domain, s.ha1, s.ha1_sha256) for s in subscribers]
        await self.pool.executemany(
            f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4) ON CONFLICT (username, domain) "
            "DO UPDATE SET ha1 = EXCLUDED.ha1, ha1_sha256 = EXCLUDED.ha1_sha256", rows)
        return len(rows)


def open_store(location: str, *, table: str = DEFAULT_TABLE) -> SubscriberStore:
    """A store for `location`: `postgresql://...` DSN, else a SQLite file path."""
    if is_postgres_dsn(location):
        return PostgresSubscribers(location, table=table)
    return SQLiteSubscribers(location or default_location(), table=table)
