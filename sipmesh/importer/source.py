"""Reading an OpenSIPS database: MySQL/MariaDB (aiomysql) or PostgreSQL (asyncpg).

``open_source(url)`` takes the URL opensips-cli and OpenSIPS's ``db_url`` use:

* ``mysql://user:password@host[:port]/database`` (``?unix_socket=/run/mysqld/mysqld.sock``
  to go through the socket; ``localhost`` without a port also uses the usual socket);
* ``postgresql://user:password@host[:port]/database`` (or ``postgres://``).

A source lists its tables, tells a table's size and yields its rows as mappings of column
name to value, in batches, read only (it never writes to the OpenSIPS database).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from yarl import URL

from shared.store.names import safe_table_name

MYSQL_SOCKETS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock",
                 "/tmp/mysql.sock")


class SourceError(Exception):
    """The OpenSIPS database cannot be reached or read (one line for the user)."""


class Source(Protocol):
    description: str

    async def open(self) -> None: ...

    async def tables(self) -> set[str]: ...

    async def count(self, table: str) -> int: ...

    def rows(self, table: str, batch: int = 500) -> AsyncIterator[list[Mapping[str, Any]]]: ...

    async def close(self) -> None: ...


def describe(url: URL) -> str:
    """The URL without its user and password."""
    port = f":{url.port}" if url.explicit_port else ""
    return f"{url.scheme}://{url.host or 'localhost'}{port}{url.path}"


class MySQLSource:
    def __init__(self, url: URL) -> None:
        self.url = url
        self.description = describe(url)
        self._conn: Any = None

    async def open(self) -> None:
        import aiomysql
        import pymysql

        socket = self.url.query.get("unix_socket")
        if socket is None and self.url.host in (None, "", "localhost") \
                and not self.url.explicit_port:
            socket = next((s for s in MYSQL_SOCKETS if os.path.exists(s)), None)
        database = self.url.path.lstrip("/")
        if not database:
            raise SourceError(f"{self.description}: no database in the URL (mysql://.../DB)")
        try:
            self._conn = await aiomysql.connect(
                host=self.url.host or "localhost", port=self.url.port or 3306,
                user=self.url.user or "root", password=self.url.password or "",
                db=database, unix_socket=socket, charset="utf8mb4", connect_timeout=10,
                autocommit=True)
        except (pymysql.MySQLError, OSError) as exc:
            raise SourceError(f"cannot connect to {self.description}: {exc}") from None

    async def tables(self) -> set[str]:
        async with self._conn.cursor() as cur:
            await cur.execute("SHOW TABLES")
            return {str(r[0]) for r in await cur.fetchall()}

    async def count(self, table: str) -> int:
        async with self._conn.cursor() as cur:
            await cur.execute(f"SELECT COUNT(*) FROM `{safe_table_name(table)}`")
            (n,) = await cur.fetchone()
            return int(n)

    async def rows(self, table: str, batch: int = 500
                   ) -> AsyncIterator[list[Mapping[str, Any]]]:
        import aiomysql

        async with self._conn.cursor(aiomysql.SSDictCursor) as cur:
            await cur.execute(f"SELECT * FROM `{safe_table_name(table)}`")
            while True:
                chunk = await cur.fetchmany(batch)
                if not chunk:
                    return
                yield list(chunk)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresSource:
    def __init__(self, url: URL) -> None:
        self.url = url
        self.description = describe(url)
        self._conn: Any = None

    async def open(self) -> None:
        import asyncpg

        try:
            self._conn = await asyncpg.connect(str(self.url), timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise SourceError(f"cannot connect to {self.description}: {exc}") from None

    async def tables(self) -> set[str]:
        rows = await self._conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")
        return {str(r["table_name"]) for r in rows}

    async def count(self, table: str) -> int:
        return int(await self._conn.fetchval(f"SELECT count(*) FROM {safe_table_name(table)}"))

    async def rows(self, table: str, batch: int = 500
                   ) -> AsyncIterator[list[Mapping[str, Any]]]:
        async with self._conn.transaction(readonly=True):
            cursor = await self._conn.cursor(f"SELECT * FROM {safe_table_name(table)}")
            while True:
                chunk = await cursor.fetch(batch)
                if not chunk:
                    return
                yield [dict(r) for r in chunk]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def open_source(url: str) -> Source:
    """A source for an OpenSIPS ``db_url`` (see the module docstring)."""
    parsed = URL(url)
    if parsed.scheme in ("mysql", "mariadb"):
        return MySQLSource(parsed)
    if parsed.scheme in ("postgresql", "postgres"):
        return PostgresSource(parsed)
    raise SourceError(f"unsupported database URL {parsed.scheme or url!r}: "
                      "mysql://user:pass@host/db or postgresql://user:pass@host/db")


__all__ = ["MySQLSource", "PostgresSource", "Source", "SourceError", "open_source"]
