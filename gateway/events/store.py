"""Where subscriptions are kept so they survive a gateway restart.

A subscription row is (event, socket, expires): the event name, the canonical socket
string, and the absolute expiry as unix time (NULL: never expires). The port is four
calls; the manager keeps the live set in memory and writes through.

Backends: ``SQLiteSubscriptionStore`` (a file, the embedded default; aiosqlite runs
sqlite3 in its worker thread so the event loop never waits on disk) and
``PostgresSubscriptionStore`` (asyncpg pool; several gateways may share it). Both create
their table when missing.

Sharing (PostgreSQL only): the replicas of a gateway share the table, so a subscription
made through one must reach the others. Each change (``save``, ``delete``, ``purge``) is
committed together with a ``pg_notify`` on the store's channel, and ``watch(on_change)``
keeps a connection of its own ``LISTEN``ing on it and calls ``on_change()`` for each
notification and after each (re)connection (a notification sent while it was away is
lost, so the watcher reads everything again then). The owner reloads the table on
``on_change`` - a whole read rather than applying the payload, so a lost or reordered
notification can never leave it wrong for longer than the next one or its periodic read.
The SQLite store is one gateway's: ``watch`` returns False and nothing else reads it.

``purge(now)`` deletes only the rows expired at ``now`` *in the store*: a replica whose
memory still holds an old expiry must not delete a row another replica just refreshed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import structlog

from shared.store import PostgresPool, safe_table_name

DEFAULT_TABLE = "event_subscribers"
# PostgreSQL truncates identifiers (LISTEN's channel) to 63 bytes, pg_notify refuses longer.
_CHANNEL_MAX = 63
log = structlog.get_logger(__name__)


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

    async def purge(self, now: float) -> None:
        """Delete the rows whose expiry in the store is at or before ``now``."""
        ...

    async def watch(self, on_change: Callable[[], None]) -> bool:
        """Call ``on_change()`` whenever another process may have changed the rows; False
        when nothing else shares this store (nothing will be called)."""
        ...

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

    async def purge(self, now: float) -> None:
        await self._write(f"DELETE FROM {self.table} WHERE expires <= ?", (now,))

    async def watch(self, on_change: Callable[[], None]) -> bool:
        return False  # a file of one gateway's: nobody else changes it

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()


class PostgresSubscriptionStore(PostgresPool):
    ddl = ("CREATE TABLE IF NOT EXISTS {t} (event TEXT NOT NULL, "
           "socket TEXT NOT NULL, expires DOUBLE PRECISION, PRIMARY KEY (event, socket))")
    max_size = 4
    not_open = "store not open"

    def __init__(self, dsn: str, *, table: str = DEFAULT_TABLE, timeout: float = 5.0,
                 rewatch_interval: float = 1.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)
        self.rewatch_interval = rewatch_interval
        self.channel = ""  # set by open(): the table's schema and name
        self._watcher: asyncio.Task[None] | None = None
        self.watching = asyncio.Event()  # set while the LISTEN connection is up

    async def open(self) -> None:
        await super().open()
        if not self.channel:
            schema = await self.pool.fetchval("SELECT current_schema()")
            # The channel is database-wide: name it after schema and table so two tables
            # (two test runs, two deployments in one database) do not wake each other.
            self.channel = f"sipmesh.{schema}.{self.table}"[:_CHANNEL_MAX]

    async def _change(self, sql: str, *args: Any) -> None:
        """``sql`` and the notification of it in one transaction: the other replicas are
        told at the commit, never before it, never of a change rolled back."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(sql, *args)
            await conn.execute("SELECT pg_notify($1, '')", self.channel)

    async def load(self) -> list[StoredSubscription]:
        rows = await self.pool.fetch(
            f"SELECT event, socket, expires FROM {self.table} ORDER BY event, socket"
        )
        return [StoredSubscription(r["event"], r["socket"], r["expires"]) for r in rows]

    async def save(self, sub: StoredSubscription) -> None:
        await self._change(
            f"INSERT INTO {self.table} (event, socket, expires) VALUES ($1, $2, $3) "
            "ON CONFLICT (event, socket) DO UPDATE SET expires = EXCLUDED.expires",
            sub.event, sub.socket, sub.expires,
        )

    async def delete(self, event: str, socket: str) -> None:
        await self._change(
            f"DELETE FROM {self.table} WHERE event = $1 AND socket = $2", event, socket
        )

    async def purge(self, now: float) -> None:
        # No notification: every replica drops an expired row from its memory by itself.
        await self.pool.execute(f"DELETE FROM {self.table} WHERE expires <= $1", now)

    async def watch(self, on_change: Callable[[], None]) -> bool:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(on_change),
                                                name="event-subscribers-watch")
        return True

    async def _watch(self, on_change: Callable[[], None]) -> None:
        import asyncpg

        def notified(*_: object) -> None:
            on_change()

        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self.timeout)
                lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def terminated(_conn: object, lost: asyncio.Future[None] = lost) -> None:
                    if not lost.done():
                        lost.set_result(None)

                conn.add_termination_listener(terminated)
                await conn.add_listener(self.channel, notified)
                self.watching.set()
                on_change()  # what changed while nobody listened
                await lost
                log.warning("subscription_watch_lost", channel=self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("subscription_watch_failed", channel=self.channel,
                            error=str(exc) or repr(exc))
            finally:
                self.watching.clear()
                if conn is not None:
                    conn.terminate()  # immediate, also when cancelled
            await asyncio.sleep(self.rewatch_interval)

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await super().close()
