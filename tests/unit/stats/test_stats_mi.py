"""get_statistics / list_statistics / reset_statistics through the JSON-RPC dispatcher."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.rpc.jsonrpc import MiDispatcher
from shared.stats.load import ProcessLoad, load_statistics
from shared.stats.mi import stats_mi_commands
from shared.stats.registry import CoreStats, StatsRegistry


@pytest.fixture
def dispatcher() -> MiDispatcher:
    reg = StatsRegistry()
    CoreStats(reg).request_received("INVITE")
    # the gateway's load group: aggregates snapshots of two processes
    procs = {1: ProcessLoad(0.30, 0.20, 0.10), 2: ProcessLoad(0.10, 0.10, 0.10)}
    reg.group("load", lambda: load_statistics(procs))
    return MiDispatcher(stats_mi_commands(reg))


async def call(d: MiDispatcher, method: str, params: Any = None) -> dict[str, Any]:
    req: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        req["params"] = params
    reply: dict[str, Any] = json.loads(await d.dispatch(json.dumps(req)))
    return reply


async def test_get_statistics_load_group_as_opensips_cli_asks(dispatcher: MiDispatcher) -> None:
    result = (await call(dispatcher, "get_statistics", {"statistics": ["load:"]}))["result"]
    assert result["load:load"] == 20 and result["load:load-proc-1"] == 30
    one = (await call(dispatcher, "get_statistics", ["load:load1m"]))["result"]
    assert one == {"load:load1m": 15}
    text = (await call(dispatcher, "get_statistics", {"statistics": "core:rcv_requests"}))
    assert text["result"] == {"core:rcv_requests": 1}


async def test_errors_are_clear(dispatcher: MiDispatcher) -> None:
    missing = await call(dispatcher, "get_statistics", {"statistics": ["nope:"]})
    assert missing["error"]["code"] == 404
    bad = await call(dispatcher, "get_statistics", {"statistics": [3]})
    assert bad["error"]["code"] == 400


async def test_reset_and_list(dispatcher: MiDispatcher) -> None:
    assert (await call(dispatcher, "reset_statistics", {"statistics": ["core:"]}))[
        "result"] == "OK"
    got = await call(dispatcher, "get_statistics", {"statistics": ["rcv_requests"]})
    assert got["result"] == {"core:rcv_requests": 0}
    listing = (await call(dispatcher, "list_statistics"))["result"]
    assert listing["core:rcv_requests"] == "incremental"
    assert listing["load:load"] == "non-incremental"
