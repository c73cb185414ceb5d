"""Where presence state is kept: publications and subscriptions (OpenSIPS's `presentity`
and `active_watchers` tables, `fallback2db` / `db_update_period=0`: written through).

One port, `PresenceStore`, with a SQLite backend (the embedded default, a file under
`$XDG_STATE_HOME/sipmesh`, WAL) and a PostgreSQL one (production; the shared database
of OpenSIPS 2.4's non-federated cluster mode), and one contract suite over both
(tests/contracts/test_presence_store.py). One table, `presence` by default: a row per
publication (`kind` 'pub', keyed by its entity-tag) or subscription ('sub', keyed by
Call-ID;From tag;To tag), with the presentity, the expiry and the record as JSON. Every
change is written before the SIP answer is given, so kill -9 loses nothing answered.

A third kind, 'notified' (keyed as its subscription), records the CSeq of the last NOTIFY
of a subscription that got its final answer (`confirm`, written after the answer, in
batches): a NOTIFY above it was started and may never have left, so the node that restarts
or takes the dead node's sharing tag redoes it (services/presence/core.py `renotify`).
Its own row, so that a node of the previous release, which decodes only 'pub' and 'sub',
reads the store unchanged; it goes with its subscription's row, and `confirm` writes it
only while that row exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from services.presence.publications import Publication
from services.presence.subscriptions import Subscription
from shared.store import PostgresPool, SQLiteFile, is_postgres_dsn

Row = tuple[str, str, str, float, str]  # kind, id, presentity, expires_at, record (JSON)


def default_db(node_id: int = 0) -> str:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return str(base / "sipmesh" / ("presence.sqlite" if not node_id
                                   else f"presence-{node_id}.sqlite"))


def pub_row(pub: Publication) -> Row:
    return ("pub", pub.etag, pub.presentity, pub.expires_at, json.dumps(pub.to_record()))


def sub_row(sub: Subscription) -> Row:
    return ("sub", sub.key, sub.presentity, sub.expires_at, json.dumps(sub.to_record()))


def notified_row(sub: Subscription) -> Row:
    return ("notified", sub.key, sub.presentity, sub.expires_at,
            json.dumps({"key": sub.key, "cseq": sub.notified}))


class PresenceStore(Protocol):
    async def open(self) -> None: ...

    async def write(self, upserts: Sequence[Row], deletes: Sequence[tuple[str, str]]) -> None:
        """Upserts rows and deletes (kind, id) pairs, in one transaction."""

    async def confirm(self, rows: Sequence[Row]) -> None:
        """Upserts 'notified' rows, each only while its subscription's row exists (one
        deleted meanwhile leaves nothing behind)."""

    async def load(self) -> tuple[list[Publication], list[Subscription]]:
        """Publications and subscriptions, each subscription with its `notified`."""

    async def load_presentity(self, presentity: str
                              ) -> tuple[list[Publication], list[Subscription]]:
        """The rows of one presentity (a shared database: what the other nodes wrote)."""

    async def due(self, now: float) -> list[str]:
        """The presentities having a row whose expiry is at or before `now`."""

    async def close(self) -> None: ...


_DDL = ("CREATE TABLE IF NOT EXISTS {t} (kind TEXT NOT NULL, id TEXT NOT NULL, "
        "presentity TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL, "
        "record TEXT NOT NULL, PRIMARY KEY (kind, id))")
_INDEX = "CREATE INDEX IF NOT EXISTS {t}_presentity ON {t} (presentity)"


def _decode(rows: Sequence[tuple[str, str]]) -> tuple[list[Publication], list[Subscription]]:
    pubs: list[Publication] = []
    subs: list[Subscription] = []
    notified: dict[str, int] = {}
    for kind, record in rows:
        data: dict[str, Any] = json.loads(record)
        if kind == "pub":
            pubs.append(Publication.from_record(data))
        elif kind == "sub":
            subs.append(Subscription.from_record(data))
        elif kind == "notified":
            notified[str(data["key"])] = int(data["cseq"])
    for sub in subs:
        sub.notified = notified.get(sub.key, 0)
    return pubs, subs


class SQLitePresenceStore(SQLiteFile):
    ddl = _DDL
    not_open = "presence store is not open"

    def __init__(self, path: str | Path, *, table: str = "presence") -> None:
        super().__init__(path, table=table)

    async def open(self) -> None:
        await super().open()
        # NORMAL in WAL mode: a committed transaction survives the process being killed.
        await self.db.execute("PRAGMA synchronous=NORMAL")
        await self.db.execute(_INDEX.format(t=self.table))

    async def write(self, upserts: Sequence[Row], deletes: Sequence[tuple[str, str]]) -> None:
        db = self.db
        async with self.tx_lock:
            await db.execute("BEGIN")
            try:
                if deletes:
                    await db.executemany(
                        f"DELETE FROM {self.table} WHERE kind = ? AND id = ?", deletes)
                if upserts:
                    await db.executemany(
                        f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?, ?)", upserts)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def confirm(self, rows: Sequence[Row]) -> None:
        db = self.db
        async with self.tx_lock:
            await db.execute("BEGIN")
            try:
                await db.executemany(
                    f"INSERT OR REPLACE INTO {self.table} SELECT ?, ?, ?, ?, ? WHERE EXISTS "
                    f"(SELECT 1 FROM {self.table} WHERE kind = 'sub' AND id = ?)",
                    [(*row, row[1]) for row in rows])
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def load(self) -> tuple[list[Publication], list[Subscription]]:
        async with self.db.execute(f"SELECT kind, record FROM {self.table}") as cur:
            return _decode([(str(r[0]), str(r[1])) for r in await cur.fetchall()])

    async def load_presentity(self, presentity: str
                              ) -> tuple[list[Publication], list[Subscription]]:
        async with self.db.execute(f"SELECT kind, record FROM {self.table} "
                                   "WHERE presentity = ?", (presentity,)) as cur:
            return _decode([(str(r[0]), str(r[1])) for r in await cur.fetchall()])

    async def due(self, now: float) -> list[str]:
        async with self.db.execute(f"SELECT DISTINCT presentity FROM {self.table} "
                                   "WHERE expires_at <= ? AND kind <> 'notified'",
                                   (now,)) as cur:
            return sorted(str(r[0]) for r in await cur.fetchall())


class PostgresPresenceStore(PostgresPool):
    ddl = _DDL
    max_size = 2
    not_open = "presence store is not open"

    def __init__(self, dsn: str, *, table: str = "presence", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def write(self, upserts: Sequence[Row], deletes: Sequence[tuple[str, str]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if deletes:
                await conn.executemany(
                    f"DELETE FROM {self.table} WHERE kind = $1 AND id = $2", deletes)
            if upserts:
                await conn.executemany(
                    f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4, $5) ON CONFLICT "
                    "(kind, id) DO UPDATE SET presentity = EXCLUDED.presentity, "
                    "expires_at = EXCLUDED.expires_at, record = EXCLUDED.record", upserts)

    async def confirm(self, rows: Sequence[Row]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                f"INSERT INTO {self.table} SELECT $1::text, $2::text, $3::text, "
                f"$4::double precision, $5::text WHERE EXISTS (SELECT 1 FROM {self.table} "
                "WHERE kind = 'sub' AND id = $2) ON CONFLICT (kind, id) DO UPDATE SET "
                "expires_at = EXCLUDED.expires_at, record = EXCLUDED.record", rows)

    async def open(self) -> None:
        await super().open()
        await self.schema(_INDEX.format(t=self.table))

    async def load(self) -> tuple[list[Publication], list[Subscription]]:
        rows = await self.pool.fetch(f"SELECT kind, record FROM {self.table}")
        return _decode([(r["kind"], r["record"]) for r in rows])

    async def load_presentity(self, presentity: str
                              ) -> tuple[list[Publication], list[Subscription]]:
        rows = await self.pool.fetch(
            f"SELECT kind, record FROM {self.table} WHERE presentity = $1", presentity)
        return _decode([(r["kind"], r["record"]) for r in rows])

    async def due(self, now: float) -> list[str]:
        rows = await self.pool.fetch(
            f"SELECT DISTINCT presentity FROM {self.table} WHERE expires_at <= $1 "
            "AND kind <> 'notified'", now)
        return sorted(r["presentity"] for r in rows)


def open_store(location: str, *, table: str = "presence") -> PresenceStore:
    if is_postgres_dsn(location):
        return PostgresPresenceStore(location, table=table)
    return SQLitePresenceStore(location, table=table)
