"""jsonrpc_request / jsonrpc_notification against real JSON-RPC servers on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from shared.events.jsonrpc_route import (
    CONNECT_OR_TIMEOUT,
    INTERNAL_ERROR,
    OK,
    SERVER_ERROR,
    jsonrpc_notification,
    jsonrpc_request,
)

Behaviour = Callable[[dict[str, Any], asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Behaviour], Awaitable[tuple[str, list[Any]]]]]:
    servers: list[asyncio.Server] = []

    async def start(behaviour: Behaviour) -> tuple[str, list[Any]]:
        seen: list[Any] = []

        async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
                try:
                    msg = json.loads(data)
                    break
                except json.JSONDecodeError:
                    continue
            else:
                return
            seen.append(msg)
            await behaviour(msg, writer)
            writer.close()

        srv = await asyncio.start_server(conn, "127.0.0.1", 0)
        servers.append(srv)
        return f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", seen

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def reply_sum(msg: dict[str, Any], w: asyncio.StreamWriter) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": sum(msg["params"])})
    w.write(body[:10].encode())  # the reply spans two TCP writes
    await w.drain()
    w.write(body[10:].encode())
    await w.drain()


async def test_request_ok_returns_the_result(server: Any) -> None:
    dest, seen = await server(reply_sum)
    outcome = await jsonrpc_request(dest, "add", "[1, 2, 3]")
    assert (outcome.code, outcome.value) == (OK, 6)
    assert seen[0]["method"] == "add" and seen[0]["jsonrpc"] == "2.0"
    assert isinstance(seen[0]["id"], int)


async def test_server_error_is_minus_three_with_its_error_object(server: Any) -> None:
    async def fail(msg: dict[str, Any], w: asyncio.StreamWriter) -> None:
        w.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"],
                            "error": {"code": -32601, "message": "Method not found"}}).encode())
        await w.drain()

    dest, _ = await server(fail)
    outcome = await jsonrpc_request(dest, "nope", {"a": 1})
    assert outcome.code == SERVER_ERROR
    assert outcome.value == {"code": -32601, "message": "Method not found"}


async def test_refused_connection_and_silent_server_are_minus_two(server: Any) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    try:
        refused = await jsonrpc_request(f"127.0.0.1:{dead.getsockname()[1]}", "m", [])
    finally:
        dead.close()
    assert refused.code == CONNECT_OR_TIMEOUT

    async def silent(msg: dict[str, Any], w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    dest, _ = await server(silent)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    timed_out = await jsonrpc_request(dest, "m", [], read_timeout=0.2)
    assert timed_out.code == CONNECT_OR_TIMEOUT
    assert loop.time() - t0 < 2


@pytest.mark.parametrize(
    ("dest", "params"),
    [("127.0.0.1", "[]"), ("nohost:99999", "[]"), ("127.0.0.1:9", "{not json"),
     ("127.0.0.1:9", "42")],
)
async def test_bad_input_is_minus_one(dest: str, params: str) -> None:
    assert (await jsonrpc_request(dest, "m", params)).code == INTERNAL_ERROR


async def test_a_reply_for_another_id_is_refused(server: Any) -> None:
    async def wrong(msg: dict[str, Any], w: asyncio.StreamWriter) -> None:
        w.write(json.dumps({"jsonrpc": "2.0", "id": "other", "result": 1}).encode())
        await w.drain()

    dest, _ = await server(wrong)
    assert (await jsonrpc_request(dest, "m", [])).code == INTERNAL_ERROR


async def test_notification_has_no_id_and_does_not_wait(server: Any) -> None:
    got = asyncio.Event()

    async def record(msg: dict[str, Any], w: asyncio.StreamWriter) -> None:
        got.set()

    dest, seen = await server(record)
    outcome = await jsonrpc_notification(dest, "cdr.push", {"callid": "c1"})
    assert outcome.code == OK
    async with asyncio.timeout(5):
        await got.wait()
    assert seen == [{"jsonrpc": "2.0", "method": "cdr.push", "params": {"callid": "c1"}}]


async def test_a_json_rpc_1_reply_with_a_null_error_is_a_result(server: Any) -> None:
    # Go's net/rpc/jsonrpc (CGRateS) answers {"id", "result", "error": null}.
    async def go_style(msg: dict[str, Any], w: asyncio.StreamWriter) -> None:
        w.write(json.dumps({"id": msg["id"], "result": {"MaxUsage": 5}, "error": None}).encode())
        await w.drain()

    async def go_error(msg: dict[str, Any], w: asyncio.StreamWriter) -> None:
        w.write(json.dumps({"id": msg["id"], "result": None,
                            "error": "INSUFFICIENT_CREDIT"}).encode())
        await w.drain()

    dest, _ = await server(go_style)
    outcome = await jsonrpc_request(dest, "SessionSv1.AuthorizeEvent", [{}])
    assert outcome.code == OK and outcome.value == {"MaxUsage": 5}
    dest, _ = await server(go_error)
    outcome = await jsonrpc_request(dest, "SessionSv1.AuthorizeEvent", [{}])
    assert outcome.code == SERVER_ERROR and outcome.value == "INSUFFICIENT_CREDIT"
