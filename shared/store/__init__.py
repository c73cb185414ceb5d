"""Store plumbing shared by the SQL-backed ports (location table, subscribers, event subscriptions).

Each port keeps its own queries; what they have in common lives here:

- `is_postgres_dsn()` tells a PostgreSQL DSN from a SQLite file path in a store location;
  `describe_location()` names one for a start-up line, without its password.
- `safe_table_name()` checks a configured table name is a plain SQL identifier, so it can be
  formatted into statements (identifiers cannot be bound as parameters).
- `PostgresPool` is a base for PostgreSQL backends: `open()` creates one asyncpg pool (imported
  lazily, so SQLite-only deployments never load asyncpg) and runs the backend's DDL once;
  `pool` raises while not open; `close()` releases the pool.
- `SQLiteFile` is a base for SQLite backends on `aiosqlite` (statements on a thread of the
  connection's own, never on the event loop): `open()` creates the parent directory, connects
  in autocommit and WAL mode with fsynced commits and runs the DDL; `db` raises while not
  open.
"""

from shared.store.names import safe_table_name
from shared.store.postgres import PostgresPool, describe_location, is_postgres_dsn
from shared.store.sqlite import SQLiteFile

__all__ = ["PostgresPool", "SQLiteFile", "describe_location", "is_postgres_dsn",
           "safe_table_name"]
