"""Base for SQLite store backends: one `aiosqlite` connection (a thread of its own).

sqlite3 blocks: a statement may wait up to the busy timeout while another process (`sipmesh
user add`) writes the file, and a commit waits for its fsync.  aiosqlite runs every
statement of a connection on the connection's own thread, in call order, so the event loop
never waits on the file.

A subclass sets `ddl` (a `CREATE TABLE IF NOT EXISTS` template with `{t}` for the table) and
`not_open` (the RuntimeError message for use before `open()`).  `open()` is idempotent:
it creates the file's directory, connects (5 s busy timeout for writers sharing the file),
puts the file in WAL mode with `synchronous=FULL` (a commit returns once its WAL frames are
fsynced, so what was committed survives a crash of the process and of the machine, and
readers never block the writer) and creates the table.  `close()` lets what was asked
finish, then closes.  A path that is a URL (`mysql://...`), or a table that is OpenSIPS's
rather than SipMesh's, is refused with one clear line naming `sipmesh import opensips`
(:mod:`shared.store.opensips`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

import aiosqlite

from shared.store.names import safe_table_name
from shared.store.opensips import check_location, check_table, ddl_columns

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL")


class SQLiteFile:
    ddl: ClassVar[str]
    not_open: ClassVar[str]

    def __init__(self, path: str | Path, *, table: str) -> None:
        self.path = str(path)
        self.table = safe_table_name(table)
        self._db: aiosqlite.Connection | None = None
        # Held around a BEGIN ... COMMIT: statements of one connection run in call order on
        # its thread, so two coroutines' transactions would otherwise interleave.
        self.tx_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(self.not_open)
        return self._db

    async def open(self) -> None:
        if self._db is None:
            check_location(self.path)
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: a single statement commits by itself (one trip to the thread); a
            # backend that needs several in one transaction says BEGIN ... COMMIT.
            db = await aiosqlite.connect(self.path, timeout=5.0, isolation_level=None)
            try:
                for pragma in PRAGMAS:
                    await db.execute(pragma)
                await db.execute(self.ddl.format(t=self.table))
                have = [row[1] for row in
                        await db.execute_fetchall(f"PRAGMA table_info({self.table})")]
                check_table(self.table, have, ddl_columns(self.ddl), self.path)
            except BaseException:
                await db.close()
                raise
            self._db = db

    async def close(self) -> None:
        # Forget the connection first: a failing close still leaves the store closed.
        db, self._db = self._db, None
        if db is not None:
            await db.close()
