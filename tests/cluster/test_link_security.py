"""The attacks of issue 12 over real gRPC, against real engines in ServiceRuntimes.

Node 2 advertises the address of an on-path attacker (:class:`Mitm`): a gRPC relay that
node 1's stream to node 2 goes through, which can record, replay, flip and inject whole
messages of the stream, as the probe of issue 12 did with a captured handshake and an
injected ``MiCommand``. Each attack is refused, shows in node 2's ``clusterer:``
statistics (asked through its MI, as an operator would), runs nothing, and the link
comes back by itself on a fresh handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from contracts.generated.sipmesh.cluster.v1 import cluster_pb2 as pb
from tests.cluster.test_engine_inprocess import Member, member
from tests.support.waiting import eventually as wait_for

METHOD = "/sipmesh.cluster.v1.Cluster/Link"
Tamper = Callable[[bytes], list[bytes]]


class Mitm:
    """A gRPC relay in the middle of the streams to one node: every message the dialer
    writes goes through ``tamper`` (what it returns is sent instead), and is recorded."""

    def __init__(self) -> None:
        self.target = ""
        self.address = ""
        self.recorded: list[list[bytes]] = []  # per relayed stream, dialer -> answerer
        self.tamper: Tamper | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self) -> str:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "sipmesh.cluster.v1.Cluster",
            {"Link": grpc.stream_stream_rpc_method_handler(self._relay)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    async def _relay(self, request_iterator: Any, context: Any) -> None:
        record: list[bytes] = []
        self.recorded.append(record)
        async with grpc.aio.insecure_channel(self.target) as ch:
            call = ch.stream_stream(METHOD)()

            async def down() -> None:
                async for data in call:
                    await context.write(data)

            pump = asyncio.create_task(down())
            try:
                while (data := await context.read()) is not grpc.aio.EOF:
                    record.append(data)
                    for out in self.tamper(data) if self.tamper else [data]:
                        await call.write(out)
                await call.done_writing()
                await pump
            except Exception:  # either side gone: the relay ends with it
                pass
            finally:
                pump.cancel()


def sealed(data: bytes) -> bool:
    return bool(pb.Frame.FromString(data).mac)


async def raw_stream(target: str, frames: list[bytes], timeout: float = 3.0
                     ) -> tuple[list[bytes], grpc.StatusCode | None]:
    """Opens a stream of our own to ``target``, writes ``frames`` one by one (each after
    reading the answer to the previous one, if any), returns what came back and the
    final status."""
    got: list[bytes] = []
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.stream_stream(METHOD)()
        try:
            for f in frames:
                await call.write(f)
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(call.read(), 0.5)
                    if answer is not grpc.aio.EOF:
                        got.append(answer)
            await call.done_writing()
            await asyncio.wait_for(call.code(), timeout)
        except grpc.aio.AioRpcError:
            pass
        return got, await call.code()


@dataclasses.dataclass
class Pair:
    a: Member
    b: Member
    mitm: Mitm
    ran: list[str]

    async def stat(self, name: str) -> int:
        stats = await self.b.mi("get_statistics", {"statistics": [f"clusterer:{name}"]})
        return int(stats[f"clusterer:{name}"])

    async def linked(self) -> None:
        await wait_for(lambda: self.a.node.link_state(2) == "Up"
                       and self.b.node.link_state(1) == "Up", 10)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    mitm = Mitm()
    await mitm.start()
    b = await member(2, advertise=mitm.address, seed=True)
    mitm.target = f"127.0.0.1:{b.node.port}"
    ran: list[str] = []

    @b.runtime.command("ul_add", (("table", "aor", "contact", "expires", "q"),))
    async def ul_add(table: Any, aor: Any, contact: Any, expires: Any, q: Any) -> Any:
        ran.append("ul_add")
        return "OK"

    a = await member(1, seeds=(f"2@{mitm.address}",))
    p = Pair(a, b, mitm, ran)
    try:
        await p.linked()
        yield p
    finally:
        for m in (a, b):
            await m.runtime.stop()
            await m.node.stop()
            await m.bus.close(1.0)
        await mitm.stop()


def mi_injection() -> bytes:
    frame = pb.Frame(packets=[pb.Packet(src=1, dst=2, ttl=25, mi=pb.MiCommand(
        cmd="ul_add", params_json='["location", "evil@x", "sip:evil@x", 0, 1]'))])
    data: bytes = frame.SerializeToString()
    return data


async def test_a_replayed_handshake_is_refused_and_counted(pair: Pair) -> None:
    handshake = [d for d in pair.mitm.recorded[0] if not sealed(d)]  # Hello, Auth
    assert len(handshake) == 2
    _, code = await raw_stream(pair.mitm.target, handshake)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert await pair.stat("replay_refused") == 1
    # A node that never saw the nonce (restarted, say) answers the Hello with a fresh
    # challenge: the recorded Auth does not answer it.
    fresh = await member(2, seed=True)
    try:
        got, code = await raw_stream(f"127.0.0.1:{fresh.node.port}", handshake)
        assert pb.Frame.FromString(got[0]).HasField("welcome")
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert fresh.node.stats["auth_refused"] == 1 and not fresh.node.alive
    finally:
        await fresh.runtime.stop()
        await fresh.node.stop()
        await fresh.bus.close(1.0)


async def test_a_replayed_frame_is_refused_counted_and_the_link_recovers(pair: Pair) -> None:
    def replay(data: bytes) -> list[bytes]:
        pair.mitm.tamper = None  # once
        return [data, data]

    pair.mitm.tamper = lambda d: replay(d) if sealed(d) else [d]
    await wait_for(lambda: pair.b.node.stats.get("replay_refused", 0) == 1, 10)
    assert await pair.stat("replay_refused") == 1
    # Node 1 dials again (a fresh handshake through the relay) and the link is Up.
    await wait_for(lambda: len(pair.mitm.recorded) >= 2, 10)
    await pair.linked()
    done = await pair.a.node.replicate("kv", b"after\0ok")
    assert done.acked == {2} and pair.b.data.get(b"after") == b"ok"


async def test_a_bit_flipped_frame_is_refused_and_never_applied(pair: Pair) -> None:
    def flip(data: bytes) -> list[bytes]:
        frame = pb.Frame.FromString(data)
        if not frame.mac or b"flipped" not in frame.body:
            return [data]
        body = bytearray(frame.body)
        body[body.index(b"flipped")] ^= 0x20  # "Flipped": a plausible edit
        frame.body = bytes(body)
        return [frame.SerializeToString()]

    pair.mitm.tamper = flip
    pair.a.node.send("kv", 2, b"flipped\0value")
    await wait_for(lambda: pair.b.node.stats.get("mac_refused", 0) == 1, 10)
    assert await pair.stat("mac_refused") == 1
    assert b"flipped" not in pair.b.data and b"Flipped" not in pair.b.data


async def test_an_unsigned_injected_mi_command_is_refused_and_never_runs(pair: Pair) -> None:
    injected = False

    def inject(data: bytes) -> list[bytes]:
        nonlocal injected
        if sealed(data) and not injected:
            injected = True
            return [data, mi_injection()]
        return [data]

    pair.mitm.tamper = inject
    await wait_for(lambda: pair.b.node.stats.get("unsigned_refused", 0) == 1, 10)
    # And on a stream of the attacker's own: a Hello anyone can write, then the command.
    hello = pb.Frame(hello=pb.Hello(cluster_id=1, node_id=1, to_node=2,
                                    nonce=bytes(range(16)))).SerializeToString()
    _, code = await raw_stream(pair.mitm.target, [hello, mi_injection()])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert await pair.stat("unsigned_refused") == 2
    await asyncio.sleep(0)  # an MI task, had one been started, would have run by now
    assert pair.ran == []
    await wait_for(lambda: len(pair.mitm.recorded) >= 2, 10)  # node 1 dialed again
    await pair.linked()
    # The real thing still works: a sealed MI command from node 1 runs on node 2.
    assert pair.a.node.send_mi(2, "ul_add", ["location", "ok@x", "sip:ok@x", 0, 1]) == 1
    await wait_for(lambda: pair.ran == ["ul_add"], 10)


async def test_a_node_without_the_secret_is_refused_by_both_sides() -> None:
    a = await member(1, seed=True)
    stranger = await member(2, seeds=(f"1@{a.node.url}",), secret="guessed")
    try:
        await wait_for(lambda: a.node.stats.get("auth_refused", 0) >= 1
                       and stranger.node.stats.get("auth_refused", 0) >= 1, 10)
        assert not a.node.alive and not stranger.node.alive
        assert 2 not in a.node.views
    finally:
        for m in (stranger, a):
            await m.runtime.stop()
            await m.node.stop()
            await m.bus.close(1.0)
