"""cluster_mode sql-only (OpenSIPS usrloc): two registrar nodes that do not know each
other share one location table in the real PostgreSQL (127.0.0.1:5432/test). A sipp UAS
registers through an edge in front of node 1 and is called through another edge in front
of node 2; ul_dump agrees on both nodes, and an ul_rm on one is seen by the other."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.cluster.registrar_nodes import mi, start_pair, stop_all
from tests.integration.edge.edge_harness import Sipp, free_port, start_edge, summary
from tests.integration.registrar.harness import (
    SCENARIOS,
    add_user,
    start_registrar,
)

pytestmark = pytest.mark.peers
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def table() -> Iterator[str]:
    import asyncio

    name = f"location_{uuid.uuid4().hex[:10]}"
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
        finally:
            await conn.close()

    asyncio.run(drop())


def test_two_nodes_share_the_sql_table(table: str, tmp_path: Path) -> None:
    store = tmp_path / "subscribers.sqlite"
    add_user(store, "ivy@127.0.0.1", "ivy-pw")
    env = {"SIPMESH_REGISTRAR_CLUSTER_MODE": "sql-only", "SIPMESH_REGISTRAR_DB_URL": PG_DSN,
           "SIPMESH_REGISTRAR_TABLE": table}
    one, two = start_pair(lambda: start_registrar(store, env),
                          lambda: start_registrar(store, env))
    edge1, edge2 = start_pair(lambda: start_edge({"SIPMESH_EDGE_REGISTRAR": one.grpc}),
                              lambda: start_edge({"SIPMESH_EDGE_REGISTRAR": two.grpc}))
    sipp = Sipp(tmp_path)
    try:
        port = free_port()
        cmd = ["sipp", "-sf", str(SCENARIOS / "register_auth.xml"), "-i", "127.0.0.1", "-p",
               str(port), edge1.address, "-s", "ivy", "-au", "ivy", "-ap", "ivy-pw", "-m", "1",
               "-nostdin", "-timeout", "15s", "-timeout_error"]
        result = subprocess.run(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=45)
        assert result.returncode == 0, summary(result)
        for reg in (one, two):
            dump = mi(reg, "ul_dump")["result"]["Domains"][0]
            assert dump["name"] == table
            assert [a["AOR"] for a in dump["AORs"]] == ["ivy@127.0.0.1"]
        sipp.uas("uas", port)
        call = sipp.uac("uac", edge2, edge2.address, calls=2, service="ivy")
        assert call.returncode == 0, summary(call)  # node 2 looked ivy up in SQL
        assert mi(two, "ul_rm", [table, "ivy@127.0.0.1"])["result"] == "OK"
        assert mi(one, "ul_show_contact", [table, "ivy@127.0.0.1"])["error"]["code"] == 404
    finally:
        sipp.stop()
        stop_all(edge1, edge2, one, two)
