"""The subscriber store: who may register, kept as digest HA1 hashes, never passwords.

A port (`SubscriberStore`) with two backends that pass one contract suite
(tests/contracts/test_subscriber_store.py): `SQLiteSubscribers` (a file, the embedded
default; sqlite3 calls are short and local, so they run inline) and `PostgresSubscribers`
(asyncpg pool; every registrar node and the CLI may share it).  Both create their table
when missing.  The realm of a subscriber is its domain, as OpenSIPS's `subscriber` table
with `calculate_ha1 = 0`: `ha1 = MD5(user:domain:password)` and
`ha1_sha256 = SHA-256(user:domain:password)` (RFC 7616 §3.4.2, RFC 8760).

`open_store(location)` picks the backend: a `postgresql://` DSN or a file path.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
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

    async def count(self) -> int: ...

    async def close(self) -> None: ...


_DDL = ("CREATE TABLE IF NOT EXISTS {t} (username TEXT NOT NULL, "
        "domain TEXT NOT NULL, ha1 TEXT NOT NULL, ha1_sha256 TEXT NOT NULL, "
        "PRIMARY KEY (username, domain))")


def default_location() -> str:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return str(base / "sipmesh" / "subscribers.sqlite")


class SQLiteSubscribers(SQLiteFile):
    ddl = _DDL
    not_open = "subscriber store is not open"

    def __init__(self, path: str | Path, *, table: str = DEFAULT_TABLE) -> None:
        super().__init__(path, table=table)

    async def add(self, username: str, domain: str, password: str) -> None:
        md5, sha = ha1_hashes(username, domain, password)
        try:
            with self.db:
                self.db.execute(f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)",
                                (username, domain, md5, sha))
        except sqlite3.IntegrityError:
            raise SubscriberExists(f"{username}@{domain}") from None

    async def set_password(self, username: str, domain: str, password: str) -> bool:
        md5, sha = ha1_hashes(username, domain, password)
        with self.db:
            cur = self.db.execute(
                f"UPDATE {self.table} SET ha1 = ?, ha1_sha256 = ? "
                "WHERE username = ? AND domain = ?", (md5, sha, username, domain))
        return cur.rowcount > 0

    async def remove(self, username: str, domain: str) -> bool:
        with self.db:
            cur = self.db.execute(f"DELETE FROM {self.table} WHERE username = ? AND domain = ?",
                                  (username, domain))
        return cur.rowcount > 0

    async def get(self, username: str, domain: str) -> Subscriber | None:
        row = self.db.execute(
            f"SELECT username, domain, ha1, ha1_sha256 FROM {self.table} "
            "WHERE username = ? AND domain = ?", (username, domain)).fetchone()
        return Subscriber(*row) if row else None

    async def count(self) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])


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

    async def count(self) -> int:
        return int(await self.pool.fetchval(f"SELECT count(*) FROM {self.table}"))


def open_store(location: str, *, table: str = DEFAULT_TABLE) -> SubscriberStore:
    """A store for `location`: `postgresql://...` DSN, else a SQLite file path."""
    if is_postgres_dsn(location):
        return PostgresSubscribers(location, table=table)
    return SQLiteSubscribers(location or default_location(), table=table)
