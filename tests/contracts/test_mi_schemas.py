"""Every MI method the gateway implements (core and event interface) answers as its JSON
Schema in contracts/mi says.

The gateway runs for real (HTTP on loopback, embedded registry, one service instance so
merges and routing are exercised); each method is called with params that its schema
accepts and the real result is validated against the schema's ``result``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.router import CORE
from tests.component.spine.helpers import running_mesh, service, started

MI = Path(__file__).resolve().parents[2] / "contracts" / "mi"

CALLS: dict[str, list[Any]] = {
    "version": [None, {}, []],
    "uptime": [None, {}],
    "ps": [None],
    "which": [None, {"command": "get_statistics"}, ["uptime"]],
    "get_statistics": [{"statistics": ["all"]}, [["core:", "load:"]],
                       {"statistics": "pkmem:"}, None],
    "list_statistics": [None, {"statistics": ["core:"]}],
    "reset_statistics": [{"statistics": ["core:rcv_requests"]}, [["all"]]],
    "log_level": [None, {"level": 4}, ["info"], [3, 0], {"level": "3", "pid": "1"}, []],
    # The event interface, hosted by the gateway (subscribe first: the listings follow).
    "event_subscribe": [{"event": "E_CORE_THRESHOLD", "socket": "udp:127.0.0.1:9",
                         "expire": 60},
                        ["E_CORE_THRESHOLD", "tcp:127.0.0.1:9"],
                        ["E_UL_AOR_INSERT", "jsonrpc:127.0.0.1:9/ev", "30"],
                        ["E_UL_AOR_INSERT", "rabbitmq:127.0.0.1/sipmesh-test"],
                        ["E_UL_AOR_INSERT", "jsonrpc:127.0.0.1:9/ev", 0]],
    "events_list": [None, {}],
    "subscribers_list": [None, {"event": "E_CORE_THRESHOLD"},
                         ["E_CORE_THRESHOLD", "udp:127.0.0.1:9"]],
}


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((MI / f"{name}.json").read_text())
    return schema


@pytest.mark.parametrize("path", sorted(MI.glob("*.json")), ids=lambda p: p.stem)
def test_every_mi_schema_is_a_valid_json_schema(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["title"] == path.stem
    for part in ("params", "result"):
        jsonschema.Draft202012Validator.check_schema(doc[part])


def test_every_core_command_has_a_schema_and_sample_calls() -> None:
    assert set(CORE) == set(CALLS)
    for name in CORE:
        assert (MI / f"{name}.json").exists(), name


async def test_real_answers_match_their_schemas() -> None:
    async with running_mesh() as mesh:
        rt = service("edge", mesh.discovery)
        rt.stats.counter("core", "rcv_requests").inc(2)
        async with started(rt):
            for name, param_sets in CALLS.items():
                schema = _schema(name)
                for params in param_sets:
                    jsonschema.validate(params, schema["params"])
                    result = await mesh.client.call(name, params)
                    jsonschema.validate(result, schema["result"])


def test_schemas_reject_wrong_shapes() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"Now": "x"}, _schema("uptime")["result"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"core:rcv_requests": "7"}, _schema("get_statistics")["result"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"bogus": 1}, _schema("get_statistics")["params"])
