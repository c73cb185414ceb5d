"""Where dialogs and CDRs are kept: two ports, each with a SQLite and a PostgreSQL backend
and one contract suite over both (tests/contracts/test_dialog_store.py).

`DialogStore` -- the dialog table on disk (restart persistence, OpenSIPS `db_mode`
realtime): one row per dialog, the replicated `DialogRecord` as bytes, written for every
change before the edge's events are acknowledged. So a dialog the edge was told is safe
survives a kill -9: on start the service loads the table back. The embedded default is a
SQLite file in WAL mode with `synchronous=NORMAL` (a committed transaction survives the
process being killed; only a power cut may lose the last ones), written through
aiosqlite's thread (one transaction per stream message).

`CdrStore` -- the `acc` table: one row per call, keyed by `cdr_id` (the dialog's identity)
with an idempotent insert (`ON CONFLICT DO NOTHING` / `INSERT OR IGNORE`): `insert`
answers whether *this* write made the row, which is what decides who raises E_ACC_CDR.
`event_sent` marks rows whose event was delivered (an outbox: a row whose writer died
before delivering is delivered by the node that takes over, or by the writer when it
restarts). Columns: OpenSIPS's acc CDR columns (method, from_tag, to_tag, callid,
sip_code, sip_reason, time, duration, ms_duration, setuptime, created) then caller,
callee, source_ip, destination, end_reason, extra (JSON), missed, node, event_sent.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from services.dialog.cdr import Cdr
from shared.store import PostgresPool, SQLiteFile, is_postgres_dsn

DialogRow = tuple[str, str, int, bytes]  # callid, from_tag, state, record


def state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "sipmesh"


def default_dialog_db(node_id: int = 0) -> str:
    name = "dialogs.sqlite" if not node_id else f"dialogs-{node_id}.sqlite"
    return str(state_dir() / name)


def default_cdr_db() -> str:
    return str(state_dir() / "cdr.sqlite")


# == dialogs ==================================================================================

class DialogStore(Protocol):
    async def open(self) -> None: ...

    async def write(self, upserts: Sequence[DialogRow],
                    deletes: Sequence[tuple[str, str]]) -> None: ...

    async def load(self) -> list[bytes]: ...

    async def close(self) -> None: ...


_DIALOG_DDL = ("CREATE TABLE IF NOT EXISTS {t} (callid TEXT NOT NULL, from_tag TEXT NOT NULL, "
               "state INTEGER NOT NULL, record {blob} NOT NULL, PRIMARY KEY (callid, from_tag))")


async def _tune(db: aiosqlite.Connection) -> None:
    # NORMAL in WAL mode: a committed transaction survives the process being killed (the
    # promise here); only a power cut may lose the last ones. FULL (the base class's
    # default) would add an fsync to every batch of the edge's events.
    await db.execute("PRAGMA synchronous=NORMAL")


class SQLiteDialogStore(SQLiteFile):
    ddl = _DIALOG_DDL.replace("{blob}", "BLOB")
    not_open = "dialog store is not open"

    def __init__(self, path: str | Path, *, table: str = "dialog") -> None:
        super().__init__(path, table=table)

    async def open(self) -> None:
        await super().open()
        await _tune(self.db)

    async def write(self, upserts: Sequence[DialogRow],
                    deletes: Sequence[tuple[str, str]]) -> None:
        db = self.db
        async with self.tx_lock:  # one connection: transactions must not interleave
            await self._write(db, upserts, deletes)

    async def _write(self, db: aiosqlite.Connection, upserts: Sequence[DialogRow],
                     deletes: Sequence[tuple[str, str]]) -> None:
        await db.execute("BEGIN")
        try:
            if deletes:
                await db.executemany(
                    f"DELETE FROM {self.table} WHERE callid = ? AND from_tag = ?", deletes)
            if upserts:
                await db.executemany(
                    f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?)", upserts)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")

    async def load(self) -> list[bytes]:
        async with self.db.execute(f"SELECT record FROM {self.table}") as cur:
            return [bytes(r[0]) for r in await cur.fetchall()]


class PostgresDialogStore(PostgresPool):
    ddl = _DIALOG_DDL.replace("{blob}", "BYTEA")
    max_size = 2
    not_open = "dialog store is not open"

    def __init__(self, dsn: str, *, table: str = "dialog", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def write(self, upserts: Sequence[DialogRow],
                    deletes: Sequence[tuple[str, str]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if deletes:
                await conn.executemany(
                    f"DELETE FROM {self.table} WHERE callid = $1 AND from_tag = $2", deletes)
            if upserts:
                await conn.executemany(
                    f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4) ON CONFLICT "
                    "(callid, from_tag) DO UPDATE SET state = EXCLUDED.state, "
                    "record = EXCLUDED.record", upserts)

    async def load(self) -> list[bytes]:
        rows = await self.pool.fetch(f"SELECT record FROM {self.table}")
        return [bytes(r["record"]) for r in rows]


def open_dialog_store(location: str, *, table: str = "dialog") -> DialogStore:
    if is_postgres_dsn(location):
        return PostgresDialogStore(location, table=table)
    return SQLiteDialogStore(location, table=table)


# == CDRs =====================================================================================

COLUMNS = ("cdr_id", "method", "from_tag", "to_tag", "callid", "sip_code", "sip_reason",
           "time", "duration", "ms_duration", "setuptime", "created", "caller", "callee",
           "source_ip", "destination", "end_reason", "extra", "missed", "node", "event_sent")


class CdrStore(Protocol):
    async def open(self) -> None: ...

    async def insert(self, cdr: Cdr) -> bool:
        """Writes the CDR unless its `cdr_id` is there already; True when this call made
        the row."""
        ...

    async def insert_many(self, cdrs: Sequence[Cdr]) -> set[str]:
        """`insert` for a batch in one transaction; the cdr_ids whose rows this call made."""
        ...

    async def get(self, cdr_id: str) -> dict[str, Any] | None: ...

    async def mark_sent(self, cdr_ids: Sequence[str]) -> None: ...

    async def unsent(self, node: int) -> list[dict[str, Any]]:
        """Rows written by `node` whose event was never marked delivered."""
        ...

    async def export(self, since: dt.datetime | None = None,
                     until: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Rows by time, oldest first (ISO-8601 UTC times, `extra` as a dict)."""
        ...

    async def close(self) -> None: ...


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
    return str(value)


def _row_out(row: Any) -> dict[str, Any]:
    out = {name: row[name] for name in COLUMNS}
    out["time"] = _iso(out["time"])
    out["created"] = _iso(out["created"])
    out["extra"] = json.loads(out["extra"] or "{}")
    out["missed"] = bool(out["missed"])
    out["event_sent"] = bool(out["event_sent"])
    return out



def _values(cdr: Cdr) -> tuple[Any, ...]:
    return (cdr.cdr_id, cdr.method, cdr.from_tag, cdr.to_tag, cdr.callid, str(cdr.sip_code),
            cdr.sip_reason, _utc(cdr.time_ms), cdr.duration, cdr.ms_duration, cdr.setuptime,
            _utc(cdr.created_ms), cdr.caller, cdr.callee, cdr.source_ip, cdr.destination,
            cdr.end_reason, json.dumps(cdr.extra, sort_keys=True), cdr.missed, cdr.node,
            False)


_CDR_DDL = (
    "CREATE TABLE IF NOT EXISTS {t} ("
    "id {serial}, cdr_id TEXT NOT NULL UNIQUE, method VARCHAR(16) NOT NULL, "
    "from_tag TEXT NOT NULL, to_tag TEXT NOT NULL, callid TEXT NOT NULL, "
    "sip_code VARCHAR(3) NOT NULL, sip_reason TEXT NOT NULL, time {ts} NOT NULL, "
    "duration INTEGER NOT NULL, ms_duration INTEGER NOT NULL, setuptime INTEGER NOT NULL, "
    "created {ts} NOT NULL, caller TEXT NOT NULL, callee TEXT NOT NULL, "
    "source_ip TEXT NOT NULL, destination TEXT NOT NULL, end_reason TEXT NOT NULL, "
    "extra TEXT NOT NULL, missed BOOLEAN NOT NULL, node INTEGER NOT NULL, "
    "event_sent BOOLEAN NOT NULL DEFAULT FALSE)")


class SQLiteCdrStore(SQLiteFile):
    """SQLite `acc` table; times as ISO-8601 UTC text (sorts as time)."""

    ddl = _CDR_DDL.replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT").replace(
        "{ts}", "TEXT")
    not_open = "CDR store is not open"

    def __init__(self, path: str | Path, *, table: str = "acc") -> None:
        super().__init__(path, table=table)

    async def open(self) -> None:
        await super().open()
        await _tune(self.db)
        self.db.row_factory = sqlite3.Row

    async def insert(self, cdr: Cdr) -> bool:
        return cdr.cdr_id in await self.insert_many([cdr])

    async def insert_many(self, cdrs: Sequence[Cdr]) -> set[str]:
        made: set[str] = set()
        sql = (f"INSERT OR IGNORE INTO {self.table} ({', '.join(COLUMNS)}) VALUES "
               f"({', '.join('?' * len(COLUMNS))})")
        db = self.db
        async with self.tx_lock:  # one connection: transactions must not interleave
            await self._insert(db, sql, cdrs, made)
        return made

    async def _insert(self, db: aiosqlite.Connection, sql: str, cdrs: Sequence[Cdr],
                      made: set[str]) -> None:
        await db.execute("BEGIN")
        try:
            for cdr in cdrs:
                values = list(_values(cdr))
                values[7], values[11] = _iso(values[7]), _iso(values[11])
                if (await db.execute(sql, values)).rowcount == 1:
                    made.add(cdr.cdr_id)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")

    async def get(self, cdr_id: str) -> dict[str, Any] | None:
        async with self.db.execute(f"SELECT * FROM {self.table} WHERE cdr_id = ?",
                                   (cdr_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else _row_out(row)

    async def mark_sent(self, cdr_ids: Sequence[str]) -> None:
        # One statement: autocommit makes it one transaction.
        await self.db.executemany(f"UPDATE {self.table} SET event_sent = 1 WHERE cdr_id = ?",
                                  [(c,) for c in cdr_ids])

    async def unsent(self, node: int) -> list[dict[str, Any]]:
        async with self.db.execute(
                f"SELECT * FROM {self.table} WHERE event_sent = 0 AND node = ? ORDER BY id",
                (node,)) as cur:
            return [_row_out(r) for r in await cur.fetchall()]

    async def export(self, since: dt.datetime | None = None,
                     until: dt.datetime | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if since is not None:
            where.append("time >= ?")
            args.append(_iso(since))
        if until is not None:
            where.append("time < ?")
            args.append(_iso(until))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        async with self.db.execute(
                f"SELECT * FROM {self.table}{clause} ORDER BY time, id", args) as cur:
            return [_row_out(r) for r in await cur.fetchall()]


class PostgresCdrStore(PostgresPool):
    ddl = _CDR_DDL.replace("{serial}", "BIGSERIAL PRIMARY KEY").replace("{ts}", "TIMESTAMPTZ")
    max_size = 4
    not_open = "CDR store is not open"

    def __init__(self, dsn: str, *, table: str = "acc", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def insert(self, cdr: Cdr) -> bool:
        return cdr.cdr_id in await self.insert_many([cdr])

    async def insert_many(self, cdrs: Sequence[Cdr]) -> set[str]:
        """One statement for the batch (unnest of one array per column): a round trip and
        a transaction per batch instead of per CDR (measured: ~6x the rows/s of single
        inserts with 8 in flight)."""
        if not cdrs:
            return set()
        columns = list(zip(*(_values(c) for c in cdrs), strict=True))
        casts = ["text"] * len(COLUMNS)
        for i, name in enumerate(COLUMNS):
            if name in ("time", "created"):
                casts[i] = "timestamptz"
            elif name in ("duration", "ms_duration", "setuptime", "node"):
                casts[i] = "int"
            elif name in ("missed", "event_sent"):
                casts[i] = "bool"
        unnest = ", ".join(f"${i + 1}::{cast}[]" for i, cast in enumerate(casts))
        rows = await self.pool.fetch(
            f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) SELECT * FROM unnest({unnest}) "
            "ON CONFLICT (cdr_id) DO NOTHING RETURNING cdr_id", *[list(c) for c in columns])
        return {r["cdr_id"] for r in rows}

    async def get(self, cdr_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(f"SELECT * FROM {self.table} WHERE cdr_id = $1", cdr_id)
        return None if row is None else _row_out(row)

    async def mark_sent(self, cdr_ids: Sequence[str]) -> None:
        await self.pool.execute(
            f"UPDATE {self.table} SET event_sent = TRUE WHERE cdr_id = ANY($1::text[])",
            list(cdr_ids))

    async def unsent(self, node: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.table} WHERE NOT event_sent AND node = $1 ORDER BY id", node)
        return [_row_out(r) for r in rows]

    async def export(self, since: dt.datetime | None = None,
                     until: dt.datetime | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if since is not None:
            args.append(since)
            where.append(f"time >= ${len(args)}")
        if until is not None:
            args.append(until)
            where.append(f"time < ${len(args)}")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.table}{clause} ORDER BY time, id", *args)
        return [_row_out(r) for r in rows]


def open_cdr_store(location: str, *, table: str = "acc") -> CdrStore:
    if is_postgres_dsn(location):
        return PostgresCdrStore(location, table=table)
    return SQLiteCdrStore(location, table=table)
