"""The provisioned rtpengine sets and the calls kept off their home instance.

**`rtpengine` table** (OpenSIPS 2.4's schema: `id`, `socket`, `set_id`; `socket` may hold
several `udp:host:port[=weight]` separated by spaces, as OpenSIPS reads it): the broker
loads it at start and on MI `rtpengine_reload`; `sipmesh rtpengine add|rm|list` edits it.

**`rtpengine_call` table** (SipMesh's own): call key -> (set, instance) for a call whose
instance is not the one every broker computes from the set (its home was down at the
offer, see services/media/sets.py), so a delete reaching another broker still finds it.
Written only for those calls, removed on delete, purged after `max_age`.

A port with two backends passing one contract suite (tests/contracts/test_media_store.py):
SQLite (a file, the embedded default, through aiosqlite's thread; WAL so readers never
wait for a writer) and PostgreSQL (asyncpg pool, what several brokers on several hosts share).
`open_media_store(location)` picks by the location (`postgresql://` DSN or a path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shared.store import PostgresPool, SQLiteFile, is_postgres_dsn

TABLE = "rtpengine"


@dataclass(frozen=True, slots=True)
class EngineRow:
    id: int
    socket: str
    set_id: int


class MediaStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def rows(self) -> list[EngineRow]: ...

    async def add(self, socket: str, set_id: int) -> int: ...

    async def remove(self, socket: str, set_id: int | None = None) -> int: ...

    async def record_call(self, key: str, set_id: int, socket: str, now: float) -> None: ...

    async def find_call(self, key: str) -> tuple[int, str] | None: ...

    async def forget_call(self, key: str) -> None: ...

    async def purge_calls(self, before: float) -> int: ...


def default_location() -> str:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return str(base / "sipmesh" / "media.sqlite")


class SQLiteMediaStore(SQLiteFile):
    ddl = ("CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
           "socket TEXT NOT NULL, set_id INTEGER NOT NULL DEFAULT 0)")
    not_open = "media store is not open"

    def __init__(self, path: str | Path, *, table: str = TABLE) -> None:
        super().__init__(path, table=table)

    async def open(self) -> None:
        await super().open()  # WAL, autocommit: each statement below commits by itself
        await self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table}_call (key TEXT PRIMARY KEY, "
            "set_id INTEGER NOT NULL, socket TEXT NOT NULL, created REAL NOT NULL)")

    async def rows(self) -> list[EngineRow]:
        async with self.db.execute(
                f"SELECT id, socket, set_id FROM {self.table} ORDER BY id") as cur:
            return [EngineRow(int(i), str(s), int(n)) for i, s, n in await cur.fetchall()]

    async def add(self, socket: str, set_id: int) -> int:
        cur = await self.db.execute(f"INSERT INTO {self.table} (socket, set_id) VALUES (?, ?)",
                                    (socket, set_id))
        return int(cur.lastrowid or 0)

    async def remove(self, socket: str, set_id: int | None = None) -> int:
        if set_id is None:
            cur = await self.db.execute(f"DELETE FROM {self.table} WHERE socket = ?", (socket,))
        else:
            cur = await self.db.execute(
                f"DELETE FROM {self.table} WHERE socket = ? AND set_id = ?", (socket, set_id))
        return int(cur.rowcount)

    async def record_call(self, key: str, set_id: int, socket: str, now: float) -> None:
        await self.db.execute(f"INSERT OR REPLACE INTO {self.table}_call VALUES (?, ?, ?, ?)",
                              (key, set_id, socket, now))

    async def find_call(self, key: str) -> tuple[int, str] | None:
        async with self.db.execute(
                f"SELECT set_id, socket FROM {self.table}_call WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    async def forget_call(self, key: str) -> None:
        await self.db.execute(f"DELETE FROM {self.table}_call WHERE key = ?", (key,))

    async def purge_calls(self, before: float) -> int:
        cur = await self.db.execute(f"DELETE FROM {self.table}_call WHERE created < ?",
                                    (before,))
        return int(cur.rowcount)


class PostgresMediaStore(PostgresPool):
    ddl = ("CREATE TABLE IF NOT EXISTS {t} (id SERIAL PRIMARY KEY, socket TEXT NOT NULL, "
           "set_id INTEGER NOT NULL DEFAULT 0)")
    max_size = 4
    not_open = "media store is not open"

    def __init__(self, dsn: str, *, table: str = TABLE, timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def open(self) -> None:
        await super().open()
        await self.schema(
            f"CREATE TABLE IF NOT EXISTS {self.table}_call (key TEXT PRIMARY KEY, "
            "set_id INTEGER NOT NULL, socket TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)")

    async def rows(self) -> list[EngineRow]:
        found = await self.pool.fetch(f"SELECT id, socket, set_id FROM {self.table} ORDER BY id")
        return [EngineRow(int(r[0]), str(r[1]), int(r[2])) for r in found]

    async def add(self, socket: str, set_id: int) -> int:
        return int(await self.pool.fetchval(
            f"INSERT INTO {self.table} (socket, set_id) VALUES ($1, $2) RETURNING id",
            socket, set_id))

    async def remove(self, socket: str, set_id: int | None = None) -> int:
        if set_id is None:
            status = await self.pool.execute(f"DELETE FROM {self.table} WHERE socket = $1",
                                             socket)
        else:
            status = await self.pool.execute(
                f"DELETE FROM {self.table} WHERE socket = $1 AND set_id = $2", socket, set_id)
        return int(status.rsplit(" ", 1)[-1])

    async def record_call(self, key: str, set_id: int, socket: str, now: float) -> None:
        await self.pool.execute(
            f"INSERT INTO {self.table}_call VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO "
            "UPDATE SET set_id = EXCLUDED.set_id, socket = EXCLUDED.socket, "
            "created = EXCLUDED.created", key, set_id, socket, now)

    async def find_call(self, key: str) -> tuple[int, str] | None:
        row = await self.pool.fetchrow(
            f"SELECT set_id, socket FROM {self.table}_call WHERE key = $1", key)
        return None if row is None else (int(row[0]), str(row[1]))

    async def forget_call(self, key: str) -> None:
        await self.pool.execute(f"DELETE FROM {self.table}_call WHERE key = $1", key)

    async def purge_calls(self, before: float) -> int:
        status = await self.pool.execute(
            f"DELETE FROM {self.table}_call WHERE created < $1", before)
        return int(status.rsplit(" ", 1)[-1])


def open_media_store(location: str, *, table: str = TABLE) -> MediaStore:
    """A store for `location`: `postgresql://...` DSN, else a SQLite file path."""
    if is_postgres_dsn(location):
        return PostgresMediaStore(location, table=table)
    return SQLiteMediaStore(location or default_location(), table=table)


__all__ = ["EngineRow", "MediaStore", "PostgresMediaStore", "SQLiteMediaStore",
           "default_location", "open_media_store"]
