"""Base for PostgreSQL store backends: one asyncpg pool, the table created at open.

A subclass sets `ddl` (a `CREATE TABLE IF NOT EXISTS` template with `{t}` for the table),
`max_size` (the pool's upper bound) and `not_open` (the RuntimeError message for use before
`open()`).  `open()` is idempotent; the same `timeout` bounds connecting and every command.
asyncpg is imported in `open()` so the embedded (SQLite) deployments never need it.
A table that exists with OpenSIPS's columns rather than SipMesh's is refused with one clear
line naming `sipmesh import opensips` (:mod:`shared.store.opensips`).

Schema statements (the table at open, and what a subclass adds with :meth:`schema`: an
index, a second table) run in one transaction holding a database-wide advisory lock:
PostgreSQL's ``IF NOT EXISTS`` is not atomic, so the replicas of a service starting
together would otherwise race on the catalog ("duplicate key value violates unique
constraint pg_class_relname_nsp_index") and one of them would die at start.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.store.names import safe_table_name
from shared.store.opensips import check_table, ddl_columns


def is_postgres_dsn(location: str) -> bool:
    """True for a PostgreSQL DSN, the one way a store location names a database server."""
    return location.startswith(("postgresql://", "postgres://"))


def describe_location(location: str) -> str:
    """``postgresql(host:port/db)`` or ``sqlite(path)``: a store for a start-up line."""
    if is_postgres_dsn(location):
        from yarl import URL

        url = URL(location)
        return f"postgresql({url.host}:{url.port or 5432}{url.path})"
    return f"sqlite({location})"


# pg_advisory_xact_lock key taken by every SipMesh schema change ("SIPM").
SCHEMA_LOCK = 0x5349504D


async def run_schema(pool: Any, *statements: str) -> None:
    """`statements` in one transaction, serialised with every other SipMesh process's
    schema changes on this database (see the module docstring)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        for statement in statements:
            await conn.execute(statement)


class PostgresPool:
    ddl: ClassVar[str]
    max_size: ClassVar[int]
    not_open: ClassVar[str]

    def __init__(self, dsn: str, *, table: str, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.table = safe_table_name(table)
        self.timeout = timeout
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        if self._pool is None:
            pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.max_size,
                                             timeout=self.timeout, command_timeout=self.timeout)
            try:
                await run_schema(pool, self.ddl.format(t=self.table))
                have = [r["column_name"] for r in await pool.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = $1 AND table_schema = current_schema()", self.table)]
                check_table(self.table, have, ddl_columns(self.ddl),
                            describe_location(self.dsn))
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

    async def schema(self, *statements: str) -> None:
        """More schema for an open store (an index, a second table), under the lock."""
        await run_schema(self.pool, *statements)

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError(self.not_open)
        return self._pool

    async def close(self) -> None:
        # Forget the pool first: a failing close still leaves the store closed.
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
