"""The edge's routing API calling out with JSON-RPC (OpenSIPS jsonrpc module outcomes),
its per-method and error counters, and E_CORE_THRESHOLD for slow message processing -
an edge worker in this process on real sockets, a real JSON-RPC server next to it."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from typing import Any

from services.edge.app import EdgeApp
from services.edge.config import EdgeConfig
from services.edge.counters import EdgeCounters
from shared.stats.registry import StatsRegistry


class LookupServer:
    """Raw JSON-RPC over TCP: one request or notification per connection."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue[Any] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        msg = json.loads(await _one_json(reader))
        if "id" not in msg:
            self.seen.put_nowait(msg)
        else:
            user = msg["params"]["user"]
            if user == "err":
                reply = {"jsonrpc": "2.0", "id": msg["id"],
                         "error": {"code": -32000, "message": "no such user"}}
            else:
                reply = {"jsonrpc": "2.0", "id": msg["id"],
                         "result": {"code": 486 if user == "busy" else 404,
                                    "reason": "Busy Here" if user == "busy" else "Unknown"}}
            writer.write(json.dumps(reply).encode())
            await writer.drain()
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


async def _one_json(reader: asyncio.StreamReader) -> bytes:
    data = b""
    decoder = json.JSONDecoder()
    while True:
        chunk = await reader.read(4096)
        if not chunk:
            return data
        data += chunk
        try:
            decoder.raw_decode(data.decode())
            return data
        except ValueError:
            continue


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ask(edge_port: int, user: str, method: str = "OPTIONS") -> tuple[int, str]:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not answer.done() and not data.startswith(b"SIP/2.0 100"):
                answer.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    me = transport.get_extra_info("sockname")[1]
    call_id = uuid.uuid4().hex
    msg = (f"{method} sip:{user}@example.org SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{call_id[:12]}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:a@example.org>;tag=1\r\n"
           f"To: <sip:{user}@example.org>\r\nCall-ID: {call_id}\r\n"
           f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n")
    transport.sendto(msg.encode(), ("127.0.0.1", edge_port))
    try:
        async with asyncio.timeout(10):
            data = await answer
    finally:
        transport.close()
    status_line = data.split(b"\r\n", 1)[0].decode()
    _, code, reason = status_line.split(" ", 2)
    return int(code), reason


async def test_routing_calls_out_with_jsonrpc_and_branches_on_the_outcome() -> None:
    lookup = LookupServer()
    dest = await lookup.start()
    stats = StatsRegistry()
    slow: list[tuple[str, int, str]] = []
    app = EdgeApp(
        EdgeConfig(listen=("udp:127.0.0.1:0",), uvloop=False,
                   routing_module="tests.integration.mesh_events.jsonrpc_routing"),
        counters=EdgeCounters(stats.counter),
        services={"lookup": dest, "down": f"127.0.0.1:{_closed_port()}"},
        exec_threshold=1, on_slow=lambda *a: slow.append(a))
    await app.start()
    port = app.interfaces[0].port
    try:
        assert await _ask(port, "busy") == (486, "Busy Here")  # 1: the result decides
        assert await _ask(port, "err") == (500, "Lookup Error -32000")  # -3: error object
        assert await _ask(port, "down") == (503, "Lookup Unreachable")  # -2: connect error
        assert (await lookup.seen.get())["method"] == "seen"  # the notifications came too
        code, _ = await _ask(port, "crash", "MESSAGE")  # the hook raised
        assert code >= 500
    finally:
        await app.stop()
        assert lookup.server is not None
        lookup.server.close()
    got = stats.get_statistics(["core:"])
    assert got["core:rcv_requests"] == 4
    assert got["core:rcv_requests_options"] == 3 and got["core:rcv_requests_message"] == 1
    assert got["core:err_requests"] == 1 and got["core:err_replies"] == 0
    # Every message took more than 1 us: E_CORE_THRESHOLD material, with the start line.
    assert {s[0] for s in slow} == {"msg processing"}
    assert any(s[2] == "OPTIONS sip:busy@example.org SIP/2.0" for s in slow)
    assert all(s[1] > 1 for s in slow)
