"""Events delivered to real subscriber sockets on loopback, in each OpenSIPS wire format,
and received by the PyPI ``opensips`` package's own event handler (datagram and stream)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from opensips.event import OpenSIPSEventHandler
from opensips.event.stream import Stream

from gateway.events.mi import mi_commands
from gateway.events.store import SQLiteSubscriptionStore
from gateway.events.subscriptions import SubscriptionManager
from gateway.events.transports import SocketDeliverer
from shared.events.bus import EmbeddedEventBus
from shared.events.schema import EventCatalog
from shared.rpc.jsonrpc import MiDispatcher

CATALOG = EventCatalog.load()
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DLG = {"hash_entry": 7, "hash_id": 99, "callid": "call-1@a", "from_tag": "ft", "to_tag": "tt",
       "old_state": 2, "new_state": 4}


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SubscriptionManager]:
    m = SubscriptionManager(CATALOG, SQLiteSubscriptionStore(tmp_path / "subs.db"),
                            deliverer=SocketDeliverer(timeout=2.0))
    await m.start()
    yield m
    await m.close()



def _settle(future: asyncio.Future[Any], value: Any) -> None:
    """Sets ``future``'s result unless it is already done (from the handler's thread)."""
    if not future.done():
        future.set_result(value)

class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)


async def tcp_receiver() -> tuple[asyncio.Server, asyncio.Queue[bytes], int]:
    """A TCP server collecting whatever each connection sends until it closes."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await reader.read())
        writer.close()

    server = await asyncio.start_server(conn, "127.0.0.1", 0)
    return server, got, server.sockets[0].getsockname()[1]


async def test_udp_gets_one_jsonrpc_notification_per_datagram(
    manager: SubscriptionManager,
) -> None:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Udp, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        await manager.subscribe("E_DLG_STATE_CHANGED", f"udp:127.0.0.1:{port}")
        assert await manager.dispatch("E_DLG_STATE_CHANGED", DLG) == 1
        assert await manager.dispatch("E_DLG_STATE_CHANGED", {**DLG, "new_state": 5}) == 1
        async with asyncio.timeout(5):
            first, second = await proto.got.get(), await proto.got.get()
        assert json.loads(first) == {"jsonrpc": "2.0", "method": "E_DLG_STATE_CHANGED",
                                     "params": DLG}
        assert json.loads(second)["params"]["new_state"] == 5
    finally:
        transport.close()


async def test_tcp_gets_the_notification_on_a_stream(manager: SubscriptionManager) -> None:
    server, got, port = await tcp_receiver()
    async with server:
        await manager.subscribe("E_UL_AOR_INSERT", f"tcp:127.0.0.1:{port}")
        assert await manager.dispatch("E_UL_AOR_INSERT", {"aor": "bob@example.com"}) == 1
        async with asyncio.timeout(5):
            data = await got.get()
    assert json.loads(data) == {"jsonrpc": "2.0", "method": "E_UL_AOR_INSERT",
                                "params": {"aor": "bob@example.com"}}


@pytest.mark.parametrize(("suffix", "method"),
                         [("", "E_UL_AOR_DELETE"), ("/cdr.notify", "cdr.notify")])
async def test_jsonrpc_socket_is_raw_jsonrpc_with_method(
    manager: SubscriptionManager, suffix: str, method: str
) -> None:
    server, got, port = await tcp_receiver()
    async with server:
        await manager.subscribe("E_UL_AOR_DELETE", f"jsonrpc:127.0.0.1:{port}{suffix}")
        await manager.dispatch("E_UL_AOR_DELETE", {"aor": "carol@example.com"})
        async with asyncio.timeout(5):
            data = await got.get()
    assert not data.startswith(b"POST")  # raw JSON-RPC, no HTTP
    assert json.loads(data) == {"jsonrpc": "2.0", "method": method,
                                "params": {"aor": "carol@example.com"}, "id": None}


async def test_rabbitmq_socket_publishes_the_opensips_text_payload(
    manager: SubscriptionManager,
) -> None:
    conn = await aio_pika.connect(AMQP)
    try:
        ch = await conn.channel()
        # default exchange: routing key = queue name
        q1 = await ch.declare_queue(f"test.evsub.{uuid.uuid4().hex[:10]}", exclusive=True)
        ex_name = f"test.evsub.ex.{uuid.uuid4().hex[:10]}"
        ex = await ch.declare_exchange(ex_name, aio_pika.ExchangeType.DIRECT, auto_delete=True)
        q2 = await ch.declare_queue(exclusive=True)
        await q2.bind(ex, "cdr")
        await manager.subscribe("E_ACC_CDR", f"rabbitmq:127.0.0.1/{q1.name}")
        await manager.subscribe("E_ACC_CDR", f"rabbitmq:guest:guest@127.0.0.1:5672/{ex_name}?cdr")
        cdr = {"method": "INVITE", "from_tag": "f", "to_tag": "t", "callid": "c 1",
               "sip_code": "200", "sip_reason": "OK", "time": 1700000000, "duration": 5,
               "ms_duration": 5100, "setuptime": 1, "created": 1699999999}
        assert await manager.dispatch("E_ACC_CDR", cdr) == 2
        for q in (q1, q2):
            async with asyncio.timeout(5):
                async with q.iterator() as it:
                    msg = await anext(it)
                    await msg.ack()
            lines = msg.body.decode().split("\n")
            assert lines[0] == "E_ACC_CDR"
            assert "method::INVITE" in lines
            assert 'callid::"c 1"' in lines
            assert "duration::5" in lines
    finally:
        await conn.close()


async def test_a_dead_subscriber_does_not_stop_the_others(manager: SubscriptionManager) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    server, got, port = await tcp_receiver()
    try:
        async with server:
            await manager.subscribe("E_UL_AOR_INSERT", f"tcp:127.0.0.1:{dead.getsockname()[1]}")
            await manager.subscribe("E_UL_AOR_INSERT", f"tcp:127.0.0.1:{port}")
            assert await manager.dispatch("E_UL_AOR_INSERT", {"aor": "d@x"}) == 1
            async with asyncio.timeout(5):
                assert json.loads(await got.get())["params"] == {"aor": "d@x"}
        assert manager.failed == 1
    finally:
        dead.close()


async def test_embedded_bus_feeds_subscribers(manager: SubscriptionManager) -> None:
    bus = EmbeddedEventBus(CATALOG, service="registrar", node="n1", strict=True)
    bus.add_listener(manager.on_event)
    await bus.start()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Udp, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        await manager.subscribe("E_UL_AOR_INSERT", f"udp:127.0.0.1:{port}")
        for i in range(5):
            bus.publish("E_UL_AOR_INSERT", {"aor": f"u{i}@x"})
        async with asyncio.timeout(5):
            got = [json.loads(await proto.got.get())["params"]["aor"] for _ in range(5)]
        assert got == [f"u{i}@x" for i in range(5)]
    finally:
        transport.close()
        await bus.close()


# --- the opensips package ----------------------------------------------------------------


class DispatcherMI:
    """The ``mi`` object the opensips event handler calls (``execute(method, params)``),
    answering through the gateway's JSON-RPC dispatcher with the event MI commands - the
    same path an HTTP request to the gateway takes, minus the HTTP."""

    def __init__(self, dispatcher: MiDispatcher, loop: asyncio.AbstractEventLoop) -> None:
        self.dispatcher = dispatcher
        self.loop = loop

    def execute(self, method: str, params: Any) -> Any:
        request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        answer = asyncio.run_coroutine_threadsafe(
            self.dispatcher.dispatch(request), self.loop).result(10)
        reply = json.loads(answer)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]


class TcpStream(Stream):  # type: ignore[misc]  # opensips has no types
    # opensips 0.1.11's Stream names its socket "udp:ip:port" (a bug upstream): the
    # listener is TCP, so the subscription must say tcp:.
    def create(self) -> str:
        super().create()
        self.sock_name = f"tcp:{self.ip}:{self.port}"
        return self.sock_name


class StreamHandler(OpenSIPSEventHandler):  # type: ignore[misc]
    def __new_socket__(self) -> Stream:
        return TcpStream(**self.kwargs)


@pytest.mark.parametrize("kind", ["datagram", "stream"])
async def test_opensips_package_event_handler_receives_a_real_event(
    manager: SubscriptionManager, kind: str
) -> None:
    loop = asyncio.get_running_loop()
    mi = DispatcherMI(MiDispatcher(mi_commands(manager)), loop)
    cls = StreamHandler if kind == "stream" else OpenSIPSEventHandler
    handler = cls(mi=mi, _type=kind, ip="127.0.0.1", port=0)
    received: asyncio.Future[Any] = loop.create_future()

    def callback(msg: Any) -> None:  # runs in the handler's reader thread
        loop.call_soon_threadsafe(_settle, received, msg)

    event = await asyncio.to_thread(handler.subscribe, "E_DLG_STATE_CHANGED", callback, 120)
    try:
        [sub] = manager.subscribers("E_DLG_STATE_CHANGED")
        assert str(sub.socket) == event.socket.sock_name
        assert str(sub.socket).startswith("udp:" if kind == "datagram" else "tcp:")
        assert await manager.dispatch("E_DLG_STATE_CHANGED", DLG) == 1
        async with asyncio.timeout(10):
            msg = await received
        assert msg["method"] == "E_DLG_STATE_CHANGED"
        assert dict(msg["params"]) == DLG
    finally:
        await asyncio.to_thread(handler.unsubscribe, "E_DLG_STATE_CHANGED")
    assert manager.subscribers("E_DLG_STATE_CHANGED") == []
