"""The registrar's Session stream seen from a raw gRPC client (no edge code): the calls of
one stream message are answered under their ids whichever way the registrar runs them
(Saves of an in-memory table inline, lookups and credentials in tasks), a failing call is
answered with an error and the stream goes on, a client that closes its side still gets
every answer before the stream ends, and with a write-through location table (the default)
no 200 leaves before its binding is stored."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc
from services.registrar.app import SERVICE, RegistrarServicer
from services.registrar.location import Location
from services.registrar.persistence import LocationWriter, SQLiteLocationTable
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.events.bus import EmbeddedEventBus
from shared.events.schema import EventCatalog, default_contracts_dir
from shared.rpc.grpc_helpers import start_grpc_server


def register(user: str, port: int, callid: str = "c1") -> bytes:
    return (
        f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:{port};branch=z9hG4bK1\r\n"
        f"From: <sip:{user}@example.com>;tag=1\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: {callid}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@10.0.0.5:{port}>\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def save(call_id: int, message: bytes) -> Any:
    return pb.SessionRequest(id=call_id, save=pb.SaveRequest(
        message=message, source_host="10.0.0.5", source_port=5062, transport="udp",
        socket="udp:127.0.0.1:5060"))


class Stream:
    """One Session call: `send` a message of calls, `replies` until n answers came."""

    def __init__(self, stub: Any) -> None:
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self.call = stub.Session(self._requests())

    async def _requests(self) -> AsyncIterator[Any]:
        while (message := await self._out.get()) is not None:
            yield message

    def send(self, *calls: Any) -> None:
        self._out.put_nowait(pb.SessionRequests(calls=list(calls)))

    def close(self) -> None:
        self._out.put_nowait(None)

    async def replies(self, n: int) -> dict[int, Any]:
        got: dict[int, Any] = {}
        async with asyncio.timeout(10):
            while len(got) < n:
                message = await self.call.read()
                assert message is not grpc.aio.EOF, f"stream ended after {len(got)} replies"
                for reply in message.replies:
                    assert reply.id not in got
                    got[reply.id] = reply
        return got


async def serve(ul: UserLocation) -> tuple[Any, grpc.aio.Channel, Any]:
    server = await start_grpc_server(
        [lambda s: pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
                RegistrarServicer(ul), s)],
        services=[SERVICE])
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return server, channel, pb_grpc.RegistrarStub(channel)  # type: ignore[no-untyped-call]


async def test_a_message_of_mixed_calls_is_answered_under_each_id(tmp_path: Path) -> None:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    await store.add("alice", "example.com", "pw")
    server, channel, stub = await serve(UserLocation(Location(), store))
    try:
        stream = Stream(stub)
        stream.send(
            save(1, register("alice", 5062)),
            pb.SessionRequest(id=2, credentials=pb.CredentialsRequest(
                username="alice", domain="example.com")),
            save(3, b"not SIP at all"),
            save(4, register("bob", 5064)),
            pb.SessionRequest(id=5, lookup=pb.LookupRequest(aor="alice@example.com",
                                                            method="INVITE")),
            pb.SessionRequest(id=6),
        )
        got = await stream.replies(6)
        assert got[1].save.status == 200
        assert ("Contact", "<sip:alice@10.0.0.5:5062>;expires=120") in [
            (h.name, h.value) for h in got[1].save.headers]
        assert got[2].credentials.found and len(got[2].credentials.ha1) == 32
        assert got[3].save.status == 400
        assert got[4].save.status == 200
        assert got[5].lookup.status == 200  # saved earlier in the same message
        assert [b.uri for b in got[5].lookup.branches] == ["sip:alice@10.0.0.5:5062"]
        assert got[6].error == "no call in the request"
        stream.close()
        assert await stream.call.read() is grpc.aio.EOF
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()


async def test_a_failing_save_is_answered_with_an_error_and_the_stream_goes_on(
        tmp_path: Path) -> None:
    # A real strict bus whose E_UL_CONTACT_INSERT contract no binding can meet (latency
    # at least 1 us, a fresh binding has 0): the Save raises inside the registrar.
    contracts = tmp_path / "events"
    shutil.copytree(default_contracts_dir(), contracts)
    schema_path = contracts / "E_UL_CONTACT_INSERT.json"
    schema = json.loads(schema_path.read_text())
    schema["properties"]["latency"]["minimum"] = 1
    schema_path.write_text(json.dumps(schema))
    bus = EmbeddedEventBus(EventCatalog.load(contracts), service="registrar", node="n1",
                           strict=True)
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    server, channel, stub = await serve(UserLocation(Location(), store, events=bus))
    try:
        stream = Stream(stub)
        stream.send(save(1, register("alice", 5062)), save(2, b"garbage"))
        got = await stream.replies(2)
        assert got[1].error == "EventValidationError"
        assert not got[1].HasField("save")
        assert got[2].save.status == 400
        # the stream still works: a refresh raises only E_UL_CONTACT_UPDATE (valid)
        stream.send(save(3, register("alice", 5062, callid="c2")))
        got = await stream.replies(1)
        assert got[3].save.status == 200
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()


async def test_a_client_closing_its_side_still_gets_every_answer(tmp_path: Path) -> None:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    for i in range(20):
        await store.add(f"u{i}", "example.com", "pw")
    server, channel, stub = await serve(UserLocation(Location(), store))
    try:
        stream = Stream(stub)
        calls = []
        for i in range(20):
            calls.append(save(2 * i, register(f"u{i}", 6000 + i)))
            calls.append(pb.SessionRequest(id=2 * i + 1, credentials=pb.CredentialsRequest(
                username=f"u{i}", domain="example.com")))
        stream.send(*calls)
        stream.close()
        got = await stream.replies(40)
        assert all(got[2 * i].save.status == 200 for i in range(20))
        assert all(got[2 * i + 1].credentials.found for i in range(20))
        async with asyncio.timeout(10):
            assert await stream.call.read() is grpc.aio.EOF
        assert await stream.call.code() == grpc.StatusCode.OK
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()


class GatedTable:
    """A real SQLite location table whose writes wait for `gate` (or fail while `broken`):
    lets a test see what the registrar answers before and after its changes are stored."""

    def __init__(self, table: SQLiteLocationTable) -> None:
        self.table = table
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.broken = False
        self.written: list[int] = []  # rows per successful write

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    async def write(self, upserts: Any, deletes: Any) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.broken:
            raise OSError("disk full")
        ups, dels = list(upserts), list(deletes)
        await self.table.write(ups, dels)
        self.written.append(len(ups) + len(dels))


async def test_write_through_answers_a_save_only_once_its_binding_is_stored(
        tmp_path: Path) -> None:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    await store.add("alice", "example.com", "pw")
    table = GatedTable(SQLiteLocationTable(tmp_path / "s.sqlite"))
    await table.open()
    writer = LocationWriter(table, write_through=True)
    writer.start()
    ul = UserLocation(Location(), store, writer=writer)
    server, channel, stub = await serve(ul)
    try:
        stream = Stream(stub)
        stream.send(save(1, register("alice", 5062)), pb.SessionRequest(
            id=2, credentials=pb.CredentialsRequest(username="alice", domain="example.com")))
        got = await stream.replies(1)
        assert list(got) == [2]  # the credentials need no write: not held
        async with asyncio.timeout(10):
            await table.entered.wait()  # the write is in flight, the 200 still held
        assert await table.table.load(0) == []
        # Three more Saves while the first write waits: they share the next transaction.
        stream.send(*(save(10 + i, register(f"u{i}", 6000 + i)) for i in range(3)))
        table.gate.set()
        got = await stream.replies(4)
        assert [got[i].save.status for i in (1, 10, 11, 12)] == [200] * 4
        assert len(await table.table.load(0)) == 4  # stored before any 200 came
        assert table.written == [1, 3]
        # A write that fails: the held 200 becomes 503 Retry-After, the change stays
        # pending and is stored by a later write.
        table.broken = True
        stream.send(save(20, register("bob", 5070)))
        got = await stream.replies(1)
        assert got[20].save.status == 503
        assert ("Retry-After", "5") in [(h.name, h.value) for h in got[20].save.headers]
        assert "bob@example.com" not in {b.aor for b in await table.table.load(0)}
        table.broken = False
        await writer.flush()
        assert "bob@example.com" in {b.aor for b in await table.table.load(0)}
        stream.close()
        assert await stream.call.read() is grpc.aio.EOF
    finally:
        await channel.close()
        await server.stop(0)
        await writer.stop()
        await table.close()
        await store.close()


async def test_sql_only_answers_503_when_its_write_fails(tmp_path: Path) -> None:
    # sql-only (here on SQLite): the Save is answered after its write; a failing write
    # must not be acknowledged with a 200.
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    table = GatedTable(SQLiteLocationTable(tmp_path / "s.sqlite"))
    await table.open()
    table.gate.set()
    writer = LocationWriter(table, write_through=True)
    writer.start()
    ul = UserLocation(Location(), store, writer=writer, sql_only=table)
    server, channel, stub = await serve(ul)
    try:
        stream = Stream(stub)
        stream.send(save(1, register("alice", 5062)))
        assert (await stream.replies(1))[1].save.status == 200
        table.broken = True
        stream.send(save(2, register("carol", 5063)))
        assert (await stream.replies(1))[2].save.status == 503
        stream.close()
    finally:
        await channel.close()
        await server.stop(0)
        table.broken = False
        await writer.stop()
        await table.close()
        await store.close()
