"""Base for PostgreSQL store backends: one asyncpg pool, the table created at open.

A subclass sets `ddl` (a `CREATE TABLE IF NOT EXISTS` template with `{t}` for the table),
`max_size` (the pool's upper bound) and `not_open` (the RuntimeError message for use before
`open()`).  `open()` is idempotent; the same `timeout` bounds connecting and every command.
asyncpg is imported in `open()` so the embedded (SQLite) deployments never need it.
A table that exists with OpenSIPS's columns rather than SipMesh's is refused with one clear
line naming `sipmesh import opensips` (:mod:`shared.store.opensips`).
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
                try:
                    await pool.execute(self.ddl.format(t=self.table))
                except (asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
                    # CREATE TABLE IF NOT EXISTS is not atomic in PostgreSQL: several
                    # processes starting together (the nodes of a cluster) can race on the
                    # catalog. The loser sees the winner's table; once more finds it there.
                    await pool.execute(self.ddl.format(t=self.table))
                have = [r["column_name"] for r in await pool.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = $1 AND table_schema = current_schema()", self.table)]
                check_table(self.table, have, ddl_columns(self.ddl),
                            describe_location(self.dsn))
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

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
