"""Replicas of a service started together against one PostgreSQL (compose and Kubernetes
run two of each clustered service) all open their store: the schema statements of
`shared.store.postgres` are serialised by an advisory lock, where PostgreSQL's
``IF NOT EXISTS`` alone races on the catalog and kills one of them at start."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from services.media.store import PostgresMediaStore
from services.presence.store import PostgresPresenceStore
from shared.store.postgres import PostgresPool

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REPLICAS = 8


@pytest.mark.parametrize("kind", [PostgresPresenceStore, PostgresMediaStore])
async def test_replicas_opening_one_new_table_together_all_start(
        kind: type[PostgresPool]) -> None:
    for _ in range(3):  # the race needs the opens to overlap: a few fresh tables
        table = f"race_{uuid.uuid4().hex[:10]}"
        stores = [kind(PG_DSN, table=table) for _ in range(REPLICAS)]
        results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        try:
            assert [r for r in results if isinstance(r, BaseException)] == []
            conn = await asyncpg.connect(PG_DSN)
            try:
                tables = await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", f"{table}%")
            finally:
                await conn.close()
            assert {r["tablename"] for r in tables} >= {table}
        finally:
            for s in stores:
                await s.close()
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_call")
            finally:
                await conn.close()
