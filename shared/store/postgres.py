"""Base for PostgreSQL store backends: one asyncpg pool, the table created at open.

A subclass sets `ddl` (a `CREATE TABLE IF NOT EXISTS` template with `{t}` for the table),
`max_size` (the pool's upper bound) and `not_open` (the RuntimeError message for use before
`open()`).  `open()` is idempotent; the same `timeout` bounds connecting and every command.
asyncpg is imported in `open()` so the embedded (SQLite) deployments never need it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.store.names import safe_table_name


def is_postgres_dsn(location: str) -> bool:
    """True for a PostgreSQL DSN, the one way a store location names a database server."""
    return location.startswith(("postgresql://", "postgres://"))


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
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.max_size,
                                                   timeout=self.timeout,
                                                   command_timeout=self.timeout)
            try:
                await self._pool.execute(self.ddl.format(t=self.table))
            except (asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
                # CREATE TABLE IF NOT EXISTS is not atomic in PostgreSQL: several processes
                # starting together (the nodes of a cluster) can race on the catalog. The
                # loser sees the winner's table; once more finds it there.
                await self._pool.execute(self.ddl.format(t=self.table))

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
