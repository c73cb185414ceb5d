"""Base for SQLite store backends whose statements are short and run inline.

A subclass sets `ddl` (a `CREATE TABLE IF NOT EXISTS` template with `{t}` for the table) and
`not_open` (the RuntimeError message for use before `open()`).  `open()` is idempotent:
it creates the file's directory, connects (usable from any thread; a 5 s busy timeout for
writers sharing the file) and creates the table.  A path that is a URL (`mysql://...`),
or a table that is OpenSIPS's rather than SipMesh's, is refused with one clear line
naming `sipmesh import opensips` (:mod:`shared.store.opensips`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import ClassVar

from shared.store.names import safe_table_name
from shared.store.opensips import check_location, check_table, ddl_columns


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
            check_location(self.path)
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            try:
                db.execute(self.ddl.format(t=self.table))
                db.commit()
                have = [row[1] for row in db.execute(f"PRAGMA table_info({self.table})")]
                check_table(self.table, have, ddl_columns(self.ddl), self.path)
            except BaseException:
                db.close()
                raise
            self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
