"""The table of FreeSWITCH boxes: OpenSIPS freeswitch_scripting's, plus two columns.

A port (`BoxStore`) with two backends passing one contract suite
(tests/contracts/test_freeswitch_boxes.py): `SQLiteBoxes` (a file, the embedded default)
and `PostgresBoxes` (asyncpg).  Columns, as OpenSIPS' `freeswitch` table (db_col_*
defaults) and SipMesh's additions:

    username, password, ip, port, events_csv    -- OpenSIPS freeswitch_scripting
    grp, sip_uri                                -- SipMesh: dispatch group, SIP address

A box is one (ip, port).  The table is created when missing.  An OpenSIPS 2.4 table (with
its `id` column and without `grp`/`sip_uri`) is read as it is: its boxes get the default
group and no SIP address (events and commands only).  Writing a group or SIP address into
such a table fails with a message saying which columns to add; nothing is altered behind
the operator's back.  SQLite statements run on a worker thread (a writer in another
process may hold the file for the busy timeout; the event loop never waits on it).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from services.freeswitch.boxes import DEFAULT_GROUP, DEFAULT_PORT, BoxSpec, split_events
from shared.store import PostgresPool, is_postgres_dsn, safe_table_name

OPENSIPS_COLUMNS = ("username", "password", "ip", "port", "events_csv")
EXTRA_COLUMNS = ("grp", "sip_uri")

_DDL = ("CREATE TABLE IF NOT EXISTS {t} (username TEXT NOT NULL DEFAULT '', "
        "password TEXT NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL DEFAULT 8021, "
        "events_csv TEXT NOT NULL DEFAULT '', grp TEXT NOT NULL DEFAULT 'default', "
        "sip_uri TEXT NOT NULL DEFAULT '', PRIMARY KEY (ip, port))")


class BoxStoreError(RuntimeError):
    """The table cannot hold what was asked (say which columns are missing)."""


class BoxStore(Protocol):
    async def open(self) -> None: ...

    async def boxes(self) -> list[BoxSpec]: ...

    async def put(self, spec: BoxSpec) -> None:
        """Adds the box, or replaces the one with the same (ip, port)."""

    async def remove(self, host: str, port: int) -> bool: ...

    async def close(self) -> None: ...


def _spec(row: Sequence[Any], columns: Sequence[str]) -> BoxSpec:
    values = dict(zip(columns, row, strict=True))
    port = values.get("port")
    return BoxSpec(
        host=str(values["ip"]).strip().lower(),
        port=int(port) if port not in (None, "") else DEFAULT_PORT,
        password=str(values.get("password") or ""),
        user=str(values.get("username") or ""),
        events=split_events(str(values.get("events_csv") or "")),
        group=str(values.get("grp") or DEFAULT_GROUP),
        sip_uri=str(values.get("sip_uri") or ""),
        source="db",
    )


def _columns_for(spec: BoxSpec, have: Sequence[str], table: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "username": spec.user, "password": spec.password, "ip": spec.host,
        "port": spec.port, "events_csv": ",".join(spec.events),
        "grp": spec.group, "sip_uri": spec.sip_uri,
    }
    missing = [c for c in OPENSIPS_COLUMNS if c not in have]
    if missing:
        raise BoxStoreError(f"table {table} has no column(s) {', '.join(missing)}: "
                            "not a freeswitch box table")
    lacking = [c for c in EXTRA_COLUMNS if c not in have]
    wanted = [c for c in lacking if (c == "grp" and spec.group != DEFAULT_GROUP) or
              (c == "sip_uri" and spec.sip_uri)]
    if wanted:
        raise BoxStoreError(
            f"table {table} has no column(s) {', '.join(wanted)} (an OpenSIPS freeswitch "
            f"table?): add them (ALTER TABLE {table} ADD COLUMN grp TEXT NOT NULL DEFAULT "
            "'default'; ALTER TABLE ... ADD COLUMN sip_uri TEXT NOT NULL DEFAULT '') or "
            "give the box no group/sip")
    return {c: v for c, v in values.items() if c in have}


class SQLiteBoxes:
    def __init__(self, path: str | Path, *, table: str = "freeswitch") -> None:
        self.path = str(path)
        self.table = safe_table_name(table)
        self._db: sqlite3.Connection | None = None
        self._columns: list[str] = []

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("freeswitch box store is not open")
        return self._db

    async def open(self) -> None:
        def work() -> None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            db.execute(_DDL.format(t=self.table))
            db.commit()
            self._columns = [r[1] for r in db.execute(f"PRAGMA table_info({self.table})")]
            self._db = db

        if self._db is None:
            await asyncio.to_thread(work)

    async def boxes(self) -> list[BoxSpec]:
        db = self._conn()
        cols = [c for c in (*OPENSIPS_COLUMNS, *EXTRA_COLUMNS) if c in self._columns]

        def work() -> list[BoxSpec]:
            rows = db.execute(f"SELECT {', '.join(cols)} FROM {self.table} "
                              "ORDER BY ip, port").fetchall()
            return [_spec(r, cols) for r in rows]

        return await asyncio.to_thread(work)

    async def put(self, spec: BoxSpec) -> None:
        db = self._conn()
        values = _columns_for(spec, self._columns, self.table)

        def work() -> None:
            with db:  # one transaction: the old row goes only if the new one lands
                db.execute(f"DELETE FROM {self.table} WHERE ip = ? AND port = ?",
                           (spec.host, spec.port))
                db.execute(f"INSERT INTO {self.table} ({', '.join(values)}) VALUES "
                           f"({', '.join('?' for _ in values)})", tuple(values.values()))

        await asyncio.to_thread(work)

    async def remove(self, host: str, port: int) -> bool:
        db = self._conn()

        def work() -> int:
            with db:
                return db.execute(f"DELETE FROM {self.table} WHERE ip = ? AND port = ?",
                                  (host.lower(), port)).rowcount

        return await asyncio.to_thread(work) > 0

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


class PostgresBoxes(PostgresPool):
    ddl = _DDL
    max_size = 2
    not_open = "freeswitch box store is not open"

    def __init__(self, dsn: str, *, table: str = "freeswitch", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)
        self._columns: list[str] = []

    async def open(self) -> None:
        await super().open()
        rows = await self.pool.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1", self.table)
        self._columns = [str(r[0]) for r in rows]

    async def boxes(self) -> list[BoxSpec]:
        cols = [c for c in (*OPENSIPS_COLUMNS, *EXTRA_COLUMNS) if c in self._columns]
        rows = await self.pool.fetch(
            f"SELECT {', '.join(cols)} FROM {self.table} ORDER BY ip, port")
        return [_spec(tuple(r), cols) for r in rows]

    async def put(self, spec: BoxSpec) -> None:
        values = _columns_for(spec, self._columns, self.table)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {self.table} WHERE ip = $1 AND port = $2",
                               spec.host, spec.port)
            await conn.execute(
                f"INSERT INTO {self.table} ({', '.join(values)}) VALUES "
                f"({', '.join(f'${i}' for i in range(1, len(values) + 1))})",
                *values.values())

    async def remove(self, host: str, port: int) -> bool:
        status = await self.pool.execute(
            f"DELETE FROM {self.table} WHERE ip = $1 AND port = $2", host.lower(), port)
        return not str(status).endswith(" 0")


def open_box_store(location: str, *, table: str = "freeswitch") -> BoxStore:
    """`postgresql://...` -> PostgreSQL, anything else a SQLite file path."""
    if is_postgres_dsn(location):
        return PostgresBoxes(location, table=table)
    return SQLiteBoxes(location, table=table)
