"""SQL copy of the location table: restart persistence (`load-from-sql`) and `ul_sync`.

A port (`LocationTable`) with two backends sharing one contract suite: SQLite (a file; the
embedded default, the same database as the subscribers; WAL, on aiosqlite's thread, with
`synchronous=NORMAL` by default: a committed binding survives the process being killed,
only an OS crash or power cut may lose the last transactions; `FULL` fsyncs every commit)
and PostgreSQL (asyncpg).  A row is one binding: `(aor, key)` primary key, its expiry, and
the binding as JSON.

`LocationWriter` keeps the SQL copy in step with memory, as OpenSIPS `sql_write_mode`:
`write-through` writes every change at once and lets the caller wait until it is stored
(the registrar answers a REGISTER only then: nothing a 200 acknowledged is lost by a
kill -9); the changes made while a write is in flight share the next transaction and its
commit (group commit), so the cost per REGISTER falls as the load grows.  `write-back`
writes every `interval` seconds (and on `ul_flush` and at stop): a crash loses what
changed since the last write.  Pending changes are coalesced per binding (the last one
wins).  A write that fails keeps its changes pending for the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import structlog

from services.registrar.location import Binding
from shared.store import PostgresPool, SQLiteFile, is_postgres_dsn

Row = tuple[str, str, int, str]  # aor, key, expires, json


class LocationTable(Protocol):
    async def open(self) -> None: ...

    async def load(self, now: float) -> list[Binding]: ...

    async def write(self, upserts: Iterable[Binding], deletes: Iterable[tuple[str, str]]
                    ) -> None: ...

    async def replace_all(self, bindings: Iterable[Binding]) -> None: ...

    async def load_aor(self, aor: str, now: float) -> list[Binding]: ...

    async def purge(self, now: float) -> int: ...

    async def close(self) -> None: ...


def _row(b: Binding) -> Row:
    from services.registrar.usrloc import encode_binding

    return (b.aor, b.key, int(b.expires), json.dumps(encode_binding(b), separators=(",", ":")))


def _binding(data: str) -> Binding:
    from services.registrar.usrloc import decode_binding

    return decode_binding(json.loads(data))


_DDL = ("CREATE TABLE IF NOT EXISTS {t} (aor TEXT NOT NULL, bkey TEXT NOT NULL, "
        "expires BIGINT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (aor, bkey))")


SYNCHRONOUS = ("normal", "full")


def _commit(conn: Any, statements: list[tuple[str, list[Any]]]) -> None:
    """On aiosqlite's thread: `executemany` of each (sql, rows) with rows, in one
    transaction, committed (rolled back if one fails)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in statements:
            if rows:
                conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise


class SQLiteLocationTable(SQLiteFile):
    """The location table in a SQLite file, on aiosqlite's thread (shared.store.SQLiteFile:
    WAL).  A write is one transaction; a lock keeps two transactions of this connection
    from interleaving their statements.

    `synchronous` ("normal", the default, or "full") is this connection's PRAGMA (the
    subscribers' connection to the same file keeps FULL).  In WAL mode NORMAL writes a
    commit to the WAL file without an fsync (the WAL is fsynced at each checkpoint): the
    commit is in the OS's page cache, so it survives the process being killed (the
    promise: a kill -9 loses no acknowledged binding), and only an OS crash or a power cut
    can lose the last transactions.  FULL fsyncs every commit (survives a power cut too)
    and costs a REGISTER its share of an fsync (docs/perf.md, fourth round)."""

    ddl = _DDL
    not_open = "location table is not open"

    def __init__(self, path: str | Path, *, table: str = "location",
                 synchronous: str = "normal") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError("synchronous must be normal or full")
        super().__init__(path, table=table)
        self.synchronous = synchronous
        self._tx = asyncio.Lock()
        self.queued = 0  # transactions running or waiting for `_tx`

    async def open(self) -> None:
        if self._db is None:
            await super().open()
            await self.db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")

    async def load(self, now: float) -> list[Binding]:
        rows = await self.db.execute_fetchall(
            f"SELECT data FROM {self.table} WHERE expires = 0 OR expires > ?", (int(now),))
        return [_binding(r[0]) for r in rows]

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """This connection's turn for one transaction (yields the connection): `_tx` held,
        counted in `queued` from the wait for `_tx` to the end (usrloc reads `queued` to
        tell whether a transaction is alone)."""
        db = self.db  # not open: raises before being counted
        self.queued += 1
        try:
            async with self._tx:
                yield db
        finally:
            self.queued -= 1

    async def _commit_all(self, statements: list[tuple[str, list[Any]]]) -> None:
        """`executemany` of each (sql, rows) in one transaction, committed, in
        one trip to aiosqlite's thread.

        One trip, not one per statement (BEGIN, each executemany, COMMIT): a trip costs
        far more CPU than the statements (the thread woken, the loop woken back), and the
        write-through runs at REGISTER rate (measured in process, CPU per binding written
        alone: 681 us with three trips, 412 us with one; docs/perf.md).  aiosqlite has no
        public call for a function of ours on its thread; `_execute` (aiosqlite 0.22,
        pinned in the lock) is the one its own methods use."""
        async with self._transaction() as db:
            def run() -> None:
                _commit(db._conn, statements)

            await db._execute(run)  # type: ignore[no-untyped-call]

    @property
    def busy(self) -> bool:
        """A transaction of this connection is queued or running."""
        return self._tx.locked()

    async def read_then_write(self, sql: str, params: list[Any],
                              decide: Callable[[list[Any]], tuple[Iterable[Binding],
                                                                  Iterable[tuple[str, str]]]]
                              ) -> list[Any]:
        """One trip to aiosqlite's thread: the rows of `sql` (a read, e.g. of subscribers
        in this same file), then `decide(rows)` -> (upserts, deletes) written in one
        transaction, committed; the rows are returned once committed.  `decide` runs on
        the thread: it must touch nothing the event loop changes meanwhile.  The
        registrar's SaveWithDigest of a Session message checks its digests and stores what
        they allow this way: one trip instead of a lookup trip and a write trip
        (usrloc.UserLocation.save_batch_with_digest; docs/perf.md, seventh round)."""
        async with self._transaction() as db:
            def read_then_write() -> list[Any]:
                conn = db._conn
                rows = conn.execute(sql, params).fetchall() if params else []
                statements = self._writes(*decide(rows))
                if any(values for _, values in statements):
                    _commit(conn, statements)
                return rows

            rows: list[Any] = await db._execute(  # type: ignore[no-untyped-call]
                read_then_write)
        return rows

    async def write(self, upserts: Iterable[Binding], deletes: Iterable[tuple[str, str]]
                    ) -> None:
        await self._commit_all(self._writes(upserts, deletes))

    def _writes(self, upserts: Iterable[Binding], deletes: Iterable[tuple[str, str]]
                ) -> list[tuple[str, list[Any]]]:
        """The statements of `write`: the deletes, then the upserts."""
        return [(f"DELETE FROM {self.table} WHERE aor = ? AND bkey = ?", list(deletes)),
                (f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?)",
                 [_row(b) for b in upserts])]

    async def replace_all(self, bindings: Iterable[Binding]) -> None:
        await self._commit_all([
            (f"DELETE FROM {self.table} WHERE 1 = ?", [(1,)]),
            (f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)", [_row(b) for b in bindings])])

    async def load_aor(self, aor: str, now: float) -> list[Binding]:
        rows = await self.db.execute_fetchall(
            f"SELECT data FROM {self.table} WHERE aor = ? AND (expires = 0 OR expires > ?)",
            (aor, int(now)))
        return [_binding(r[0]) for r in rows]

    async def purge(self, now: float) -> int:
        async with self._transaction() as db:
            cur = await db.execute(
                f"DELETE FROM {self.table} WHERE expires <> 0 AND expires <= ?", (int(now),))
        return cur.rowcount


class PostgresLocationTable(PostgresPool):
    ddl = _DDL
    max_size = 2
    not_open = "location table is not open"

    def __init__(self, dsn: str, *, table: str = "location", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    async def load(self, now: float) -> list[Binding]:
        rows = await self.pool.fetch(
            f"SELECT data FROM {self.table} WHERE expires = 0 OR expires > $1", int(now))
        return [_binding(r["data"]) for r in rows]

    async def write(self, upserts: Iterable[Binding], deletes: Iterable[tuple[str, str]]
                    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(f"DELETE FROM {self.table} WHERE aor = $1 AND bkey = $2",
                                   list(deletes))
            await conn.executemany(
                f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4) ON CONFLICT (aor, bkey) "
                "DO UPDATE SET expires = EXCLUDED.expires, data = EXCLUDED.data",
                [_row(b) for b in upserts])

    async def replace_all(self, bindings: Iterable[Binding]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {self.table}")
            await conn.executemany(f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4)",
                                   [_row(b) for b in bindings])

    async def load_aor(self, aor: str, now: float) -> list[Binding]:
        rows = await self.pool.fetch(
            f"SELECT data FROM {self.table} WHERE aor = $1 AND (expires = 0 OR expires > $2)",
            aor, int(now))
        return [_binding(r["data"]) for r in rows]

    async def purge(self, now: float) -> int:
        status = await self.pool.execute(
            f"DELETE FROM {self.table} WHERE expires <> 0 AND expires <= $1", int(now))
        return int(status.rsplit(" ", 1)[-1])


def open_location_table(location: str, *, table: str = "location",
                        synchronous: str = "normal") -> LocationTable:
    """The table at `location`; `synchronous` applies to SQLite only."""
    if is_postgres_dsn(location):
        return PostgresLocationTable(location, table=table)
    return SQLiteLocationTable(location, table=table, synchronous=synchronous)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class WriteFailed(Exception):
    """The changes a caller waited for are not in the table (the write failed; they stay
    pending and are retried): whatever they answer must not say they were stored."""


class LocationWriter:
    """Keeps a LocationTable in step with memory (see module doc).

    write-through: one task writes every change at once; the changes noted while a write is
    in flight go together in the next one (group commit: one transaction, one commit for all
    of them).  `ticket()` / `flush()` wait until every change noted before the call is in
    the table, so a 200 can leave only once its binding is stored.  A failed write keeps
    its changes pending, fails the waiters that counted on it (`WriteFailed`) and is retried
    after `retry` s, doubling up to 5 s.

    write-back: the task writes every `interval` s; `flush()` writes now (ul_flush, stop).

    `on_write(seconds, rows)` is called after each write that succeeded (metrics)."""

    max_retry = 5.0

    def __init__(self, table: LocationTable, *, write_through: bool,
                 interval: float = 60.0, retry: float = 0.5,
                 on_write: Callable[[float, int], None] | None = None) -> None:
        self.table = table
        self.write_through = write_through
        self.interval = interval
        self.retry = retry
        self.on_write = on_write
        self.pending: dict[tuple[str, str], Binding | None] = {}
        self.noted = 0  # changes noted so far (a sequence number)
        self.written = 0  # every change up to this number is in the table
        self.writes = 0  # transactions written
        self.failures = 0
        self.log = structlog.get_logger("registrar.sql")
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one write at a time
        self._task: asyncio.Task[None] | None = None

    def upsert(self, b: Binding) -> None:
        self.pending[(b.aor, b.key)] = b
        self.noted += 1
        if self.write_through:
            self._wake.set()

    def delete(self, b: Binding) -> None:
        self.delete_key(b.aor, b.key)

    def delete_key(self, aor: str, key: str) -> None:
        self.pending[(aor, key)] = None
        self.noted += 1
        if self.write_through:
            self._wake.set()

    @property
    def settled(self) -> bool:
        """Every change noted so far is in the table."""
        return self.written >= self.noted

    @property
    def idle(self) -> bool:
        """Nothing to write, nothing being written, no one waiting: a caller may write to
        the table itself (`wrote`) and its transaction comes before any the writer makes
        for changes noted afterwards."""
        return self.written >= self.noted and not self._waiters and not self._lock.locked()

    def wrote(self, took: float, rows: int) -> None:
        """A transaction written by a caller (not from `pending`), counted as the writer's."""
        self.writes += 1
        if self.on_write is not None:
            self.on_write(took, rows)

    def ticket(self) -> asyncio.Future[None]:
        """A future done once every change noted so far is in the table (at once when it
        already is), or failed with WriteFailed when the write carrying them failed.  The
        background task must run (`start`)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.settled:
            fut.set_result(None)
        else:
            self._waiters.append((self.noted, fut))
            self._wake.set()
        return fut

    async def flush(self) -> None:
        """Returns once every change noted so far is in the table; WriteFailed otherwise."""
        if self._task is not None and not self._task.done():
            await self.ticket()
            return
        while not self.settled:
            if not await self._write_once():
                raise WriteFailed("the location table could not be written")

    async def _write_once(self) -> bool:
        """Writes what is pending as one transaction; False when that failed."""
        async with self._lock:
            seq = self.noted
            batch, self.pending = self.pending, {}
            if batch:
                ups = [b for b in batch.values() if b is not None]
                dels = [k for k, b in batch.items() if b is None]
                if not all(b.is_utf8() for b in ups):
                    # Kept, it would fail every write after it: refused where it entered
                    # (gRPC Save, MI, replication); dropped here should one get through.
                    self.log.error("location_binding_not_storable", bindings=[
                        b.aor.encode("utf-8", "backslashreplace").decode() for b in ups
                        if not b.is_utf8()])
                    ups = [b for b in ups if b.is_utf8()]
                    dels = [(a, k) for a, k in dels if _utf8(a) and _utf8(k)]
                started = time.perf_counter()
                try:
                    await self.table.write(ups, dels)
                except BaseException as exc:
                    for k, b in batch.items():  # kept, unless a newer change came meanwhile
                        self.pending.setdefault(k, b)
                    if not isinstance(exc, Exception):
                        raise  # cancelled (stop): the final flush writes them
                    self.failures += 1
                    self.log.warning("location_write_failed", error=repr(exc), rows=len(batch))
                    self._settle(seq, WriteFailed(repr(exc)))
                    return False
                self.writes += 1
                if self.on_write is not None:
                    self.on_write(time.perf_counter() - started, len(batch))
            self.written = max(self.written, seq)
            self._settle(seq, None)
            return True

    def _settle(self, seq: int, error: Exception | None) -> None:
        """Resolves the waiters whose changes were all in the write up to `seq`."""
        keep = []
        for wanted, fut in self._waiters:
            if wanted > seq:
                keep.append((wanted, fut))
            elif not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)
        self._waiters = keep

    def start(self) -> None:
        async def run() -> None:
            delay = self.retry
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if self.write_through else self.interval):
                        await self._wake.wait()
                self._wake.clear()
                while not self.settled or self._waiters:
                    if await self._write_once():
                        delay = self.retry
                        continue
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_retry)

        self._task = asyncio.create_task(run())

    async def stop(self) -> None:
        """Stops the task and writes what is still pending (WriteFailed when it cannot)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
