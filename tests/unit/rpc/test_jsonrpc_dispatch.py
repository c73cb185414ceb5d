"""MiDispatcher: OpenSIPS param binding, JSON-RPC 2.0 error codes, nothing leaks."""

from __future__ import annotations

import json
from typing import Any

from shared.rpc import MiCommand, MiDispatcher, MiError


async def _echo(**kw: object) -> object:
    return kw


async def _boom() -> None:
    raise ValueError("password=hunter2 at /srv/secret.py line 3")


def _dispatcher() -> MiDispatcher:
    return MiDispatcher([
        MiCommand("ul_show_contact", _echo, (("table_name", "aor"),)),
        MiCommand("dlg_list", _echo, ((), ("callid",), ("callid", "from_tag"))),
        MiCommand("boom", _boom),
        MiCommand("not_found", _notfound),
    ])


async def _notfound() -> None:
    raise MiError(404, "AOR not found")


async def _call(d: MiDispatcher, method: str, params: object = None,
                rid: object = 1) -> dict[str, Any]:
    req: dict[str, object] = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        req["params"] = params
    answer: dict[str, Any] = json.loads(await d.dispatch(json.dumps(req)))
    return answer


async def test_named_and_positional_params_bind_to_recipes() -> None:
    d = _dispatcher()
    got = await _call(d, "ul_show_contact", {"table_name": "location", "aor": "bob"})
    assert got["result"] == {"table_name": "location", "aor": "bob"}
    got = await _call(d, "ul_show_contact", ["location", "bob"])
    assert got["result"] == {"table_name": "location", "aor": "bob"}
    assert (await _call(d, "dlg_list"))["result"] == {}
    assert (await _call(d, "dlg_list", {}))["result"] == {}
    assert (await _call(d, "dlg_list", ["c1", "t1"]))["result"] == {
        "callid": "c1", "from_tag": "t1"}


async def test_invalid_params_are_32602_with_a_plain_hint() -> None:
    d = _dispatcher()
    got = await _call(d, "ul_show_contact", {"aor": "bob"})
    assert got["error"]["code"] == -32602
    assert got["error"]["data"] == "ul_show_contact accepts params {table_name, aor}"
    got = await _call(d, "ul_show_contact", ["a", "b", "c"])
    assert got["error"]["code"] == -32602 and "2 positional" in got["error"]["data"]


async def test_protocol_errors() -> None:
    d = _dispatcher()
    assert json.loads(await d.dispatch("{oops"))["error"] == {
        "code": -32700, "message": "Parse error"}
    assert json.loads(await d.dispatch("[]"))["error"]["code"] == -32600
    assert json.loads(await d.dispatch('{"jsonrpc": "1.0", "method": "x", "id": 1}'))[
        "error"]["code"] == -32600
    assert (await _call(d, "nope"))["error"]["code"] == -32601


async def test_exceptions_never_reach_the_client() -> None:
    text = await _dispatcher().dispatch(
        json.dumps({"jsonrpc": "2.0", "method": "boom", "id": 9}))
    assert json.loads(text) == {"jsonrpc": "2.0", "error": {
        "code": -32603, "message": "Internal error"}, "id": 9}
    assert "hunter2" not in text and "ValueError" not in text


async def test_application_errors_keep_their_code() -> None:
    got = await _call(_dispatcher(), "not_found")
    assert got["error"] == {"code": 404, "message": "AOR not found"}


async def test_batch_and_notifications() -> None:
    d = _dispatcher()
    batch = [
        {"jsonrpc": "2.0", "method": "dlg_list", "id": "a"},
        {"jsonrpc": "2.0", "method": "dlg_list"},  # notification: no answer
        {"jsonrpc": "2.0", "method": "nope", "id": "b"},
    ]
    answers = json.loads(await d.dispatch(json.dumps(batch)))
    assert sorted(a["id"] for a in answers) == ["a", "b"]
    assert await d.dispatch(json.dumps({"jsonrpc": "2.0", "method": "dlg_list"})) == ""
    assert await d.dispatch(json.dumps([{"jsonrpc": "2.0", "method": "boom"}])) == ""


def test_duplicate_commands_are_refused() -> None:
    d = _dispatcher()
    try:
        d.add(MiCommand("boom", _boom))
    except ValueError as exc:
        assert "twice" in str(exc)
    else:
        raise AssertionError("duplicate accepted")


async def test_http_handler_hides_failures_outside_handlers() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from shared.rpc import mi_http_handler

    async def broken(text: str) -> str:
        raise KeyError("internal routing table detail")

    app = web.Application()
    app.router.add_post("/mi", mi_http_handler(broken))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/mi", data='{"jsonrpc": "2.0", "method": "x", "id": 1}')
        text = await resp.text()
    assert json.loads(text)["error"] == {"code": -32603, "message": "Internal error"}
    assert "routing table" not in text and "KeyError" not in text
