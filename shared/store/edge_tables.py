"""SipMesh's ``address`` and ``dispatcher`` tables: trusted sources and gateway sets.

The edge's address permissions (OpenSIPS ``permissions``) and its dispatcher to gateways
(OpenSIPS ``dispatcher``) read these tables; ``sipmesh import opensips`` fills them from
an OpenSIPS 2.4 database. Both live in the registrar's store database by default (a
SQLite file, or PostgreSQL with a ``postgresql://`` DSN), with one port per table and two
backends each (SQLite, PostgreSQL) passing one contract suite
(``tests/contracts/test_edge_tables.py``).

``address`` -- one trusted source, as OpenSIPS 2.4's table (version 5) without its ``id``:

==============  =======  ==============================================================
column          type     meaning
==============  =======  ==============================================================
``grp``         integer  the group ``check_address``/``check_source_address`` ask for
``ip``          text     an IPv4/IPv6 address (with ``mask``: a network) or a hostname
``mask``        integer  prefix length (32/128: one host)
``port``        integer  source port, 0 = any
``proto``       text     ``any``, ``udp``, ``tcp``, ``tls``, ``ws``, ``wss``, ``sctp``
``pattern``     text     a regular expression the request's URI must match ('' = any)
``context_info``text     a string handed to routing when the address matches
==============  =======  ==============================================================

Key: (``grp``, ``ip``, ``mask``, ``port``, ``proto``): writing a row with the same key
replaces it (an import can run twice).

``dispatcher`` -- one destination of a set, as OpenSIPS 2.4's table (version 8) without
its ``id``: ``setid`` (integer), ``destination`` (a SIP URI), ``socket`` (the local
socket to send from, '' = any), ``state`` (0 active, 1 inactive, 2 probing, as
``ds_set_state``), ``weight`` (integer, 0..), ``priority`` (integer, higher first),
``attrs`` (text handed to routing), ``description``. Key: (``setid``, ``destination``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Protocol

from shared.store.postgres import PostgresPool, is_postgres_dsn
from shared.store.sqlite import SQLiteFile

PROTOS = ("any", "udp", "tcp", "tls", "ws", "wss", "sctp")


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    grp: int
    ip: str
    mask: int = 32
    port: int = 0
    proto: str = "any"
    pattern: str = ""
    context_info: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Destination:
    setid: int
    destination: str
    socket: str = ""
    state: int = 0
    weight: int = 1
    priority: int = 0
    attrs: str = ""
    description: str = ""


class AddressTable(Protocol):
    async def open(self) -> None: ...

    async def put(self, rows: Iterable[Address]) -> int: ...

    async def delete(self, grp: int, ip: str, mask: int, port: int, proto: str) -> int: ...

    async def all(self) -> list[Address]: ...

    async def close(self) -> None: ...


class DispatcherTable(Protocol):
    async def open(self) -> None: ...

    async def put(self, rows: Iterable[Destination]) -> int: ...

    async def delete(self, setid: int, destination: str) -> int: ...

    async def all(self) -> list[Destination]: ...

    async def close(self) -> None: ...


_ADDRESS_DDL = ("CREATE TABLE IF NOT EXISTS {t} (grp INTEGER NOT NULL, ip TEXT NOT NULL, "
                "mask INTEGER NOT NULL DEFAULT 32, port INTEGER NOT NULL DEFAULT 0, "
                "proto TEXT NOT NULL DEFAULT 'any', pattern TEXT NOT NULL DEFAULT '', "
                "context_info TEXT NOT NULL DEFAULT '', "
                "PRIMARY KEY (grp, ip, mask, port, proto))")
_DISPATCHER_DDL = ("CREATE TABLE IF NOT EXISTS {t} (setid INTEGER NOT NULL, "
                   "destination TEXT NOT NULL, socket TEXT NOT NULL DEFAULT '', "
                   "state INTEGER NOT NULL DEFAULT 0, weight INTEGER NOT NULL DEFAULT 1, "
                   "priority INTEGER NOT NULL DEFAULT 0, attrs TEXT NOT NULL DEFAULT '', "
                   "description TEXT NOT NULL DEFAULT '', PRIMARY KEY (setid, destination))")
_ADDRESS_COLS = ("grp", "ip", "mask", "port", "proto", "pattern", "context_info")
_DISPATCHER_COLS = ("setid", "destination", "socket", "state", "weight", "priority", "attrs",
                    "description")


def _tuple(row: Address | Destination) -> tuple[object, ...]:
    return dataclasses.astuple(row)


async def _write(table: SQLiteFile, sql: str, values: list[tuple[object, ...]]) -> None:
    """``executemany`` in one transaction (the connection is in autocommit mode)."""
    await table.db.execute("BEGIN IMMEDIATE")
    try:
        await table.db.executemany(sql, values)
    except BaseException:
        await table.db.execute("ROLLBACK")
        raise
    await table.db.execute("COMMIT")


class SQLiteAddresses(SQLiteFile):
    ddl = _ADDRESS_DDL
    not_open = "address table is not open"

    def __init__(self, path: str, *, table: str = "address") -> None:
        super().__init__(path, table=table)

    async def put(self, rows: Iterable[Address]) -> int:
        values = [_tuple(r) for r in rows]
        await _write(self, f"INSERT OR REPLACE INTO {self.table} ({', '.join(_ADDRESS_COLS)}) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", values)
        return len(values)

    async def delete(self, grp: int, ip: str, mask: int, port: int, proto: str) -> int:
        """Removes the row with this key; the number of rows removed (0 or 1)."""
        cursor = await self.db.execute(
            f"DELETE FROM {self.table} WHERE grp = ? AND ip = ? AND mask = ? AND port = ? "
            "AND proto = ?", (grp, ip, mask, port, proto))
        return max(cursor.rowcount, 0)

    async def all(self) -> list[Address]:
        rows = await self.db.execute_fetchall(
            f"SELECT {', '.join(_ADDRESS_COLS)} FROM {self.table} "
            "ORDER BY grp, ip, mask, port, proto")
        return [Address(*r) for r in rows]


class SQLiteDispatcher(SQLiteFile):
    ddl = _DISPATCHER_DDL
    not_open = "dispatcher table is not open"

    def __init__(self, path: str, *, table: str = "dispatcher") -> None:
        super().__init__(path, table=table)

    async def put(self, rows: Iterable[Destination]) -> int:
        values = [_tuple(r) for r in rows]
        await _write(self, f"INSERT OR REPLACE INTO {self.table} "
                           f"({', '.join(_DISPATCHER_COLS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     values)
        return len(values)

    async def delete(self, setid: int, destination: str) -> int:
        """Removes the destination from its set; the number of rows removed (0 or 1)."""
        cursor = await self.db.execute(
            f"DELETE FROM {self.table} WHERE setid = ? AND destination = ?",
            (setid, destination))
        return max(cursor.rowcount, 0)

    async def all(self) -> list[Destination]:
        rows = await self.db.execute_fetchall(
            f"SELECT {', '.join(_DISPATCHER_COLS)} FROM {self.table} "
            "ORDER BY setid, priority DESC, destination")
        return [Destination(*r) for r in rows]


class PostgresAddresses(PostgresPool):
    ddl = _ADDRESS_DDL
    max_size = 2
    not_open = "address table is not open"

    def __init__(self, dsn: str, *, table: str = "address", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def put(self, rows: Iterable[Address]) -> int:
        values = [_tuple(r) for r in rows]
        await self.pool.executemany(
            f"INSERT INTO {self.table} ({', '.join(_ADDRESS_COLS)}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (grp, ip, mask, port, proto) "
            "DO UPDATE SET pattern = EXCLUDED.pattern, context_info = EXCLUDED.context_info",
            values)
        return len(values)

    async def delete(self, grp: int, ip: str, mask: int, port: int, proto: str) -> int:
        """Removes the row with this key; the number of rows removed (0 or 1)."""
        status = await self.pool.execute(
            f"DELETE FROM {self.table} WHERE grp = $1 AND ip = $2 AND mask = $3 "
            "AND port = $4 AND proto = $5", grp, ip, mask, port, proto)
        return int(str(status).rsplit(" ", 1)[-1])

    async def all(self) -> list[Address]:
        rows = await self.pool.fetch(f"SELECT {', '.join(_ADDRESS_COLS)} FROM {self.table} "
                                     "ORDER BY grp, ip, mask, port, proto")
        return [Address(*r) for r in rows]


class PostgresDispatcher(PostgresPool):
    ddl = _DISPATCHER_DDL
    max_size = 2
    not_open = "dispatcher table is not open"

    def __init__(self, dsn: str, *, table: str = "dispatcher", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def put(self, rows: Iterable[Destination]) -> int:
        values = [_tuple(r) for r in rows]
        await self.pool.executemany(
            f"INSERT INTO {self.table} ({', '.join(_DISPATCHER_COLS)}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (setid, destination) "
            "DO UPDATE SET socket = EXCLUDED.socket, state = EXCLUDED.state, "
            "weight = EXCLUDED.weight, priority = EXCLUDED.priority, attrs = EXCLUDED.attrs, "
            "description = EXCLUDED.description", values)
        return len(values)

    async def delete(self, setid: int, destination: str) -> int:
        """Removes the destination from its set; the number of rows removed (0 or 1)."""
        status = await self.pool.execute(
            f"DELETE FROM {self.table} WHERE setid = $1 AND destination = $2",
            setid, destination)
        return int(str(status).rsplit(" ", 1)[-1])

    async def all(self) -> list[Destination]:
        rows = await self.pool.fetch(
            f"SELECT {', '.join(_DISPATCHER_COLS)} FROM {self.table} "
            "ORDER BY setid, priority DESC, destination")
        return [Destination(*r) for r in rows]


def open_address_table(location: str, *, table: str = "address") -> AddressTable:
    """The address table in ``location`` (a ``postgresql://`` DSN or a SQLite file)."""
    if is_postgres_dsn(location):
        return PostgresAddresses(location, table=table)
    return SQLiteAddresses(location, table=table)


def open_dispatcher_table(location: str, *, table: str = "dispatcher") -> DispatcherTable:
    """The dispatcher table in ``location`` (a ``postgresql://`` DSN or a SQLite file)."""
    if is_postgres_dsn(location):
        return PostgresDispatcher(location, table=table)
    return SQLiteDispatcher(location, table=table)


__all__ = ["PROTOS", "Address", "AddressTable", "Destination", "DispatcherTable",
           "open_address_table", "open_dispatcher_table"]
