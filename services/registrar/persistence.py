"""SQL copy of the location table: restart persistence (`load-from-sql`) and `ul_sync`.

A port (`LocationTable`) with two backends sharing one contract suite: SQLite (a file; the
embedded default, the same database as the subscribers) and PostgreSQL (asyncpg).  A row
is one binding: `(aor, key)` primary key, its expiry, and the binding as JSON.

`LocationWriter` keeps the SQL copy in step with memory, as OpenSIPS `sql_write_mode`:
`write-through` flushes after every change, `write-back` every `interval` seconds (and on
`ul_flush` and at stop).  Pending changes are coalesced per binding (the last one wins),
so a phone refreshing every few seconds costs one row write per flush.  A flush that
fails keeps its changes pending for the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import structlog

from services.registrar.location import Binding
from shared.store import PostgresPool, SQLiteFile, is_postgres_dsn

Row = tuple[str, str, int, str]  # aor, key, expires, json


class LocationTable(Protocol):
    async def open(self) -> None: ...

    async def load(self, now: float) -> list[Binding]: ...

    async def write(self, upserts: Iterable[Binding], deletes: Iterable[tuple[str, str]]
                    ) -> None: ...

    async def replace_all(self, bindings: Iterable[Binding]) -> None: ...

    async def load_aor(self, aor: str, now: float) -> list[Binding]: ...

    async def purge(self, now: float) -> int: ...

    async def close(self) -> None: ...


def _row(b: Binding) -> Row:
    from services.registrar.usrloc import encode_binding

    return (b.aor, b.key, int(b.expires), json.dumps(encode_binding(b), separators=(",", ":")))


def _binding(data: str) -> Binding:
    from services.registrar.usrloc import decode_binding

    return decode_binding(json.loads(data))


_DDL = ("CREATE TABLE IF NOT EXISTS {t} (aor TEXT NOT NULL, bkey TEXT NOT NULL, "
        "expires BIGINT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (aor, bkey))")


class SQLiteLocationTable(SQLiteFile):
    ddl = _DDL
    not_open = "location table is not open"

    def __init__(self, path: str | Path, *, table: str = "location") -> None:
        super().__init__(path, table=table)

    async def load(self, now: float) -> list[Binding]:
        rows = self.db.execute(
            f"SELECT data FROM {self.table} WHERE expires = 0 OR expires > ?", (int(now),))
        return [_binding(r[0]) for r in rows]

    async def write(self, upserts: Iterable[Binding], deletes: Iterable[tuple[str, str]]
                    ) -> None:
        with self.db:
            self.db.executemany(f"DELETE FROM {self.table} WHERE aor = ? AND bkey = ?",
                                list(deletes))
            self.db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?)",
                                [_row(b) for b in upserts])

    async def replace_all(self, bindings: Iterable[Binding]) -> None:
        with self.db:
            self.db.execute(f"DELETE FROM {self.table}")
            self.db.executemany(f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)",
                                [_row(b) for b in bindings])

    async def load_aor(self, aor: str, now: float) -> list[Binding]:
        rows = self.db.execute(
            f"SELECT data FROM {self.table} WHERE aor = ? AND (expires = 0 OR expires > ?)",
            (aor, int(now)))
        return [_binding(r[0]) for r in rows]

    async def purge(self, now: float) -> int:
        with self.db:
            cur = self.db.execute(
                f"DELETE FROM {self.table} WHERE expires <> 0 AND expires <= ?", (int(now),))
        return cur.rowcount


class PostgresLocationTable(PostgresPool):
    ddl = _DDL
    max_size = 2
    not_open = "location table is not open"

    def __init__(self, dsn: str, *, table: str = "location", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def load(self, now: float) -> list[Binding]:
        rows = await self.pool.fetch(
            f"SELECT data FROM {self.table} WHERE expires = 0 OR expires > $1", int(now))
        return [_binding(r["data"]) for r in rows]

    async def write(self, upserts: Iterable[Binding], deletes: Iterable[tuple[str, str]]
                    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(f"DELETE FROM {self.table} WHERE aor = $1 AND bkey = $2",
                                   list(deletes))
            await conn.executemany(
                f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4) ON CONFLICT (aor, bkey) "
                "DO UPDATE SET expires = EXCLUDED.expires, data = EXCLUDED.data",
                [_row(b) for b in upserts])

    async def replace_all(self, bindings: Iterable[Binding]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {self.table}")
            await conn.executemany(f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4)",
                                   [_row(b) for b in bindings])

    async def load_aor(self, aor: str, now: float) -> list[Binding]:
        rows = await self.pool.fetch(
            f"SELECT data FROM {self.table} WHERE aor = $1 AND (expires = 0 OR expires > $2)",
            aor, int(now))
        return [_binding(r["data"]) for r in rows]

    async def purge(self, now: float) -> int:
        status = await self.pool.execute(
            f"DELETE FROM {self.table} WHERE expires <> 0 AND expires <= $1", int(now))
        return int(status.rsplit(" ", 1)[-1])


def open_location_table(location: str, *, table: str = "location") -> LocationTable:
    if is_postgres_dsn(location):
        return PostgresLocationTable(location, table=table)
    return SQLiteLocationTable(location, table=table)


class LocationWriter:
    """Coalesces binding changes and writes them to a LocationTable (see module doc)."""

    def __init__(self, table: LocationTable, *, write_through: bool,
                 interval: float = 60.0) -> None:
        self.table = table
        self.write_through = write_through
        self.interval = interval
        self.pending: dict[tuple[str, str], Binding | None] = {}
        self.log = structlog.get_logger("registrar.sql")
        self.failures = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def upsert(self, b: Binding) -> None:
        self.pending[(b.aor, b.key)] = b
        if self.write_through:
            self._wake.set()

    def delete(self, b: Binding) -> None:
        self.pending[(b.aor, b.key)] = None
        if self.write_through:
            self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            if not self.pending:
                return
            batch, self.pending = self.pending, {}
            ups = [b for b in batch.values() if b is not None]
            dels = [k for k, b in batch.items() if b is None]
            try:
                await self.table.write(ups, dels)
            except Exception as exc:
                self.failures += 1
                self.log.warning("location_write_failed", error=repr(exc), rows=len(batch))
                for k, b in batch.items():  # keep them, unless a newer change came meanwhile
                    self.pending.setdefault(k, b)

    def start(self) -> None:
        async def run() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if self.write_through else self.interval):
                        await self._wake.wait()
                self._wake.clear()
                await self.flush()

        self._task = asyncio.create_task(run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
