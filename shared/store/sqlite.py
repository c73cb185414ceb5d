"""Base for SQLite store backends whose statements are short and run inline.

A subclass sets `ddl` (a `CREATE TABLE IF NOT EXISTS` template with `{t}` for the table) and
`not_open` (the RuntimeError message for use before `open()`).  `open()` is idempotent:
it creates the file's directory, connects (usable from any thread; a 5 s busy timeout for
writers sharing the file) and creates the table.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import ClassVar

from shared.store.names import safe_table_name


class SQLiteFile:
    ddl: ClassVar[str]
    not_open: ClassVar[str]

    def __init__(self, path: str | Path, *, table: str) -> None:
        self.path = str(path)
        self.table = safe_table_name(table)
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(self.not_open)
        return self._db

    async def open(self) -> None:
        if self._db is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            self._db.execute(self.ddl.format(t=self.table))
            self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
