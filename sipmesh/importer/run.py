"""Carrying an OpenSIPS 2.4 database over to SipMesh's stores, table by table.

:func:`import_opensips` reads each table of :data:`TABLES` the source has, in batches,
converts every row (:mod:`.rows`) and writes the batch to SipMesh's store before reading
the next, so memory stays flat however large the table. Writes are upserts keyed as
SipMesh keys the records (a subscriber by user and domain, a binding by AOR and contact,
an address by its group/network/port/protocol, a destination by set and URI): running the
import again rewrites the same records and adds nothing. ``progress(table, done, total)``
is called after each batch; the answer is one :class:`TableReport` per table.

Where it goes: subscribers to the registrar's subscriber store (``[registrar] store``),
bindings to the registrar's SQL location table (``[registrar] db_url``, by default the
same database; a registrar loads them at start, by default in cluster mode ``none``),
addresses and dispatcher destinations to SipMesh's ``address`` and ``dispatcher`` tables
in the subscriber store's database (:mod:`shared.store.edge_tables`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from services.registrar.persistence import open_location_table
from services.registrar.subscribers import open_store
from shared.store.edge_tables import open_address_table, open_dispatcher_table
from sipmesh.importer import rows as convert
from sipmesh.importer.source import Source

TABLES = ("subscriber", "location", "address", "dispatcher")
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass
class Targets:
    """Where the records go (locations as the registrar's settings name them)."""

    store: str
    location_db: str
    location_table: str = "location"


@dataclasses.dataclass
class TableReport:
    table: str
    found: bool = False
    read: int = 0
    imported: int = 0
    skipped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    notes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


class _Writer:
    """The store a table's records are written to, opened on first use."""

    def __init__(self, table: str, targets: Targets) -> None:
        self.table = table
        self.targets = targets
        self.target: Any = None

    async def write(self, records: list[Any]) -> None:
        if self.target is None:
            self.target = self._open()
            await self.target.open()
        if not records:
            return
        if self.table == "subscriber":
            await self.target.put_hashes(records)
        elif self.table == "location":
            await self.target.write(records, [])
        else:
            await self.target.put(records)

    def _open(self) -> Any:
        t = self.targets
        if self.table == "subscriber":
            return open_store(t.store)
        if self.table == "location":
            return open_location_table(t.location_db, table=t.location_table)
        if self.table == "address":
            return open_address_table(t.store)
        return open_dispatcher_table(t.store)

    async def close(self) -> None:
        if self.target is not None:
            await self.target.close()


async def import_opensips(
    source: Source, targets: Targets, *, now: float, tables: Sequence[str] = TABLES,
    default_domain: str = "", progress: Progress | None = None, batch: int = 500,
) -> list[TableReport]:
    """Imports ``tables`` from ``source`` into ``targets`` (see the module docstring)."""
    present = await source.tables()
    reports = []
    for table in tables:
        report = TableReport(table)
        reports.append(report)
        if table not in present:
            continue
        report.found = True
        total = await source.count(table)
        if progress is not None:
            progress(table, 0, total)
        writer = _Writer(table, targets)
        try:
            async for chunk in source.rows(table, batch):
                records = []
                for row in chunk:
                    report.read += 1
                    outcome = _convert(table, row, now, default_domain)
                    if isinstance(outcome, convert.Skip):
                        report.skipped[outcome.reason] += 1
                        continue
                    if outcome.note:
                        report.notes[outcome.note] += 1
                    records.append(outcome.record)
                await writer.write(records)
                report.imported += len(records)
                if progress is not None:
                    progress(table, report.read, total)
            if report.read == 0:
                await writer.write([])  # the empty table is created all the same
        finally:
            await writer.close()
    return reports


def _convert(table: str, row: Any, now: float, domain: str) -> convert.Converted | convert.Skip:
    if table == "subscriber":
        return convert.subscriber_from_row(row)
    if table == "location":
        return convert.binding_from_row(row, now=now, default_domain=domain)
    if table == "address":
        return convert.address_from_row(row)
    return convert.destination_from_row(row)


__all__ = ["TABLES", "TableReport", "Targets", "import_opensips"]
