"""JSON-RPC calls from routing: OpenSIPS 2.4's ``jsonrpc`` module for the edge routing API.

``jsonrpc_request(dest, method, params)`` sends a JSON-RPC 2.0 request as raw JSON over a
new TCP connection to ``dest`` ("IP:port", IPv6 as "[::1]:port"; no HTTP, like OpenSIPS),
reads one JSON reply and closes. ``jsonrpc_notification`` sends a notification (no ``id``)
and does not wait for anything. ``params`` is JSON text (as in the OpenSIPS script) or an
already-built list/dict.

Outcomes are OpenSIPS's return codes, as a :class:`JsonRpcOutcome`:

- ``1`` ok; ``value`` is the ``result`` of the reply;
- ``-1`` internal error (bad destination, params that are not JSON, a reply that is not a
  JSON-RPC response); ``value`` is a message;
- ``-2`` connect or timeout error (connect, write and read each bounded; defaults 500 ms);
- ``-3`` the server answered with an error; ``value`` is its error object.

As in OpenSIPS there is no connection reuse. Nothing raises to the caller: routing code
branches on ``outcome.code``. The messages are built and the reply read by jsonrpcclient
(``request``, ``notification``, ``parse``); only the transport (raw TCP) is ours.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from jsonrpcclient import Ok, notification, parse, request

OK, INTERNAL_ERROR, CONNECT_OR_TIMEOUT, SERVER_ERROR = 1, -1, -2, -3
MAX_REPLY = 1 << 20
_DEST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class JsonRpcOutcome:
    code: int
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.code == OK


def _dest(dest: str) -> tuple[str, int]:
    m = _DEST.match(dest.strip()) if isinstance(dest, str) else None
    if not m or not 0 < int(m["port"]) < 65536:
        raise ValueError(f"bad destination {dest!r}: expected IP:port")
    return m["v6"] or m["host"], int(m["port"])


def _params(params: Any) -> dict[str, Any] | tuple[Any, ...]:
    if isinstance(params, str):
        params = json.loads(params)
    if isinstance(params, list | tuple):
        return tuple(params)  # jsonrpcclient's positional params
    if not isinstance(params, dict):
        raise ValueError("params must be a JSON array or object")
    return params


async def _exchange(
    dest: str, payload: dict[str, Any], expect_reply: bool,
    connect_timeout: float, write_timeout: float, read_timeout: float,
) -> JsonRpcOutcome:
    try:
        host, port = _dest(dest)
    except ValueError as exc:
        return JsonRpcOutcome(INTERNAL_ERROR, str(exc))
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (TimeoutError, OSError) as exc:
        return JsonRpcOutcome(CONNECT_OR_TIMEOUT, f"connect to {dest} failed: {exc!r}")
    try:
        try:
            async with asyncio.timeout(write_timeout):
                writer.write(json.dumps(payload, separators=(",", ":")).encode())
                await writer.drain()
        except (TimeoutError, OSError) as exc:
            return JsonRpcOutcome(CONNECT_OR_TIMEOUT, f"write to {dest} failed: {exc!r}")
        if not expect_reply:
            return JsonRpcOutcome(OK)
        try:
            async with asyncio.timeout(read_timeout):
                reply = await _read_json(reader)
        except (TimeoutError, OSError) as exc:
            return JsonRpcOutcome(CONNECT_OR_TIMEOUT, f"no reply from {dest}: {exc!r}")
        except ValueError as exc:
            return JsonRpcOutcome(INTERNAL_ERROR, str(exc))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    try:
        parsed = parse(reply) if isinstance(reply, dict) else None
    except (KeyError, TypeError, ValueError):
        parsed = None
    if parsed is None or getattr(parsed, "id", None) != payload.get("id"):
        return JsonRpcOutcome(INTERNAL_ERROR, "reply is not a JSON-RPC response to this request")
    # JSON-RPC 1.0 servers (Go's net/rpc/jsonrpc, hence CGRateS) answer `"error": null`
    # next to a result and `"result": null` next to an error: only a non-null error is one.
    if reply.get("error") is not None:
        return JsonRpcOutcome(SERVER_ERROR, reply["error"])  # the server's error object
    if not isinstance(parsed, Ok):
        return JsonRpcOutcome(INTERNAL_ERROR, "reply has neither result nor error")
    return JsonRpcOutcome(OK, parsed.result)


async def _read_json(reader: asyncio.StreamReader) -> Any:
    """Read until one complete JSON value has arrived (replies may span TCP segments)."""
    buf = b""
    decoder = json.JSONDecoder()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise ValueError("connection closed before a complete reply")
        buf += chunk
        if len(buf) > MAX_REPLY:
            raise ValueError("reply too large")
        try:
            value, _ = decoder.raw_decode(buf.decode("utf-8").lstrip())
            return value
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue


async def jsonrpc_request(
    dest: str, method: str, params: Any, *, connect_timeout: float = 0.5,
    write_timeout: float = 0.5, read_timeout: float = 0.5,
) -> JsonRpcOutcome:
    try:
        payload = request(method, params=_params(params))
    except ValueError as exc:
        return JsonRpcOutcome(INTERNAL_ERROR, f"bad params: {exc}")
    return await _exchange(dest, payload, True, connect_timeout, write_timeout, read_timeout)


async def jsonrpc_notification(
    dest: str, method: str, params: Any, *, connect_timeout: float = 0.5,
    write_timeout: float = 0.5,
) -> JsonRpcOutcome:
    try:
        payload = notification(method, params=_params(params))
    except ValueError as exc:
        return JsonRpcOutcome(INTERNAL_ERROR, f"bad params: {exc}")
    return await _exchange(dest, payload, False, connect_timeout, write_timeout, 0.0)
