"""The recordings in progress, kept on disk so a killed recorder loses none.

Table `siprec` (SipMesh's own): `callid` (the recorded call) -> `doc` (the recording
session as JSON: session.py's `to_doc`, everything needed to BYE the SRS and unsubscribe)
and `updated`.  A row is written once the SRS answered (state active) and removed when the
recording ended, so after a restart the recorder takes back every recording it had,
ends those whose call ended meanwhile (recorder.py), and an operator still sees and stops
them.  Several recorders sharing the PostgreSQL table can end each other's recordings.

A port with two backends passing one contract suite (tests/contracts/test_siprec_store.py):
SQLite (the embedded default, a file; WAL, synchronous=FULL) and PostgreSQL.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from shared.store import PostgresPool, SQLiteFile, is_postgres_dsn

TABLE = "siprec"


class RecordingStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, call_id: str, doc: dict[str, Any], now: float) -> None: ...

    async def remove(self, call_id: str) -> None: ...

    async def all(self) -> list[dict[str, Any]]: ...


def default_location() -> str:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return str(base / "sipmesh" / "siprec.sqlite")


def _load(text: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class SQLiteRecordingStore(SQLiteFile):
    ddl = ("CREATE TABLE IF NOT EXISTS {t} (callid TEXT PRIMARY KEY, doc TEXT NOT NULL, "
           "updated REAL NOT NULL)")
    not_open = "siprec store is not open"

    def __init__(self, path: str | Path, *, table: str = TABLE) -> None:
        super().__init__(path, table=table)

    async def put(self, call_id: str, doc: dict[str, Any], now: float) -> None:
        await self.db.execute(
            f"INSERT INTO {self.table} VALUES (?, ?, ?) ON CONFLICT (callid) DO UPDATE "
            "SET doc = excluded.doc, updated = excluded.updated",
            (call_id, json.dumps(doc, sort_keys=True), now))

    async def remove(self, call_id: str) -> None:
        await self.db.execute(f"DELETE FROM {self.table} WHERE callid = ?", (call_id,))

    async def all(self) -> list[dict[str, Any]]:
        rows = await self.db.execute_fetchall(
            f"SELECT doc FROM {self.table} ORDER BY updated")
        return [d for d in (_load(str(r[0])) for r in rows) if d is not None]


class PostgresRecordingStore(PostgresPool):
    ddl = ("CREATE TABLE IF NOT EXISTS {t} (callid TEXT PRIMARY KEY, doc TEXT NOT NULL, "
           "updated DOUBLE PRECISION NOT NULL)")
    max_size = 4
    not_open = "siprec store is not open"

    def __init__(self, dsn: str, *, table: str = TABLE, timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def put(self, call_id: str, doc: dict[str, Any], now: float) -> None:
        await self.pool.execute(
            f"INSERT INTO {self.table} VALUES ($1, $2, $3) ON CONFLICT (callid) DO UPDATE "
            "SET doc = EXCLUDED.doc, updated = EXCLUDED.updated",
            call_id, json.dumps(doc, sort_keys=True), now)

    async def remove(self, call_id: str) -> None:
        await self.pool.execute(f"DELETE FROM {self.table} WHERE callid = $1", call_id)

    async def all(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(f"SELECT doc FROM {self.table} ORDER BY updated")
        return [d for d in (_load(str(r[0])) for r in rows) if d is not None]


def open_recording_store(location: str, *, table: str = TABLE) -> RecordingStore | None:
    """`postgresql://...`, a SQLite path, or None for `none` (in memory only)."""
    if location == "none":
        return None
    if is_postgres_dsn(location):
        return PostgresRecordingStore(location, table=table)
    return SQLiteRecordingStore(location or default_location(), table=table)
