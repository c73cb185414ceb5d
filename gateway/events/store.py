"""Where subscriptions are kept so they survive a gateway restart.

A subscription row is (event, socket, expires): the event name, the canonical socket
string, and the absolute expiry as unix time (NULL: never expires). The port is four
calls; the manager keeps the live set in memory and writes through.

Backends: ``SQLiteSubscriptionStore`` (a file, the embedded default; aiosqlite runs
sqlite3 in its worker thread so the event loop never waits on disk) and
``PostgresSubscriptionStore`` (asyncpg pool; several gateways may share it). Both create
their table when missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from shared.store import PostgresPool, safe_table_name

DEFAULT_TABLE = "event_subscribers"


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    event: str
    socket: str
    expires: float | None


class SubscriptionStore(Protocol):
    async def open(self) -> None: ...

    async def load(self) -> list[StoredSubscription]: ...

    async def save(self, sub: StoredSubscription) -> None:
        """Insert or replace the row for (event, socket)."""
        ...

    async def delete(self, event: str, socket: str) -> None: ...

    async def close(self) -> None: ...


class SQLiteSubscriptionStore:
    """SQLite through aiosqlite (its one worker thread keeps sqlite3 off the event loop)."""

    def __init__(self, path: str | Path, *, table: str = DEFAULT_TABLE) -> None:
        self.path = str(path)
        self.table = safe_table_name(table)
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store not open")
        return self._db

    async def _write(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        db = self.db
        await db.execute(sql, args)
        await db.commit()  # each change is durable before the MI answer goes out

    async def open(self) -> None:
        if self._db is None:
            self._db = await aiosqlite.connect(self.path)
            await self._write(
                f"CREATE TABLE IF NOT EXISTS {self.table} (event TEXT NOT NULL, "
                "socket TEXT NOT NULL, expires REAL, PRIMARY KEY (event, socket))"
            )

    async def load(self) -> list[StoredSubscription]:
        async with self.db.execute(
            f"SELECT event, socket, expires FROM {self.table} ORDER BY event, socket"
        ) as cursor:
            rows = await cursor.fetchall()
        return [StoredSubscription(e, s, x) for e, s, x in rows]

    async def save(self, sub: StoredSubscription) -> None:
        await self._write(
            f"INSERT INTO {self.table} (event, socket, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (event, socket) DO UPDATE SET expires = excluded.expires",
            (sub.event, sub.socket, sub.expires),
        )

    async def delete(self, event: str, socket: str) -> None:
        await self._write(f"DELETE FROM {self.table} WHERE event = ? AND socket = ?",
                          (event, socket))

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()


class PostgresSubscriptionStore(PostgresPool):
    ddl = ("CREATE TABLE IF NOT EXISTS {t} (event TEXT NOT NULL, "
           "socket TEXT NOT NULL, expires DOUBLE PRECISION, PRIMARY KEY (event, socket))")
    max_size = 4
    not_open = "store not open"

    def __init__(self, dsn: str, *, table: str = DEFAULT_TABLE, timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def load(self) -> list[StoredSubscription]:
        rows = await self.pool.fetch(
            f"SELECT event, socket, expires FROM {self.table} ORDER BY event, socket"
        )
        return [StoredSubscription(r["event"], r["socket"], r["expires"]) for r in rows]

    async def save(self, sub: StoredSubscription) -> None:
        await self.pool.execute(
            f"INSERT INTO {self.table} (event, socket, expires) VALUES ($1, $2, $3) "
            "ON CONFLICT (event, socket) DO UPDATE SET expires = EXCLUDED.expires",
            sub.event, sub.socket, sub.expires,
        )

    async def delete(self, event: str, socket: str) -> None:
        await self.pool.execute(
            f"DELETE FROM {self.table} WHERE event = $1 AND socket = $2", event, socket
        )
