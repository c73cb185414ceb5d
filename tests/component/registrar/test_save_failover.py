"""A Save whose registrar goes away moves to the other registrar (issue 20).

Two registrars on loopback ports, the edge's RegistrarClient knowing both. The first one
applies the REGISTER -- to its own table and, as full-sharing replication would, to the
second's -- and then goes away without answering (its stream ends UNAVAILABLE, as a
draining node's does when its grace runs out), or answers 503 (not synced, cannot
replicate). The client sends the Save again to the second marked `retry`, which takes the
binding of the same Call-ID and CSeq as the REGISTER's own: the phone gets 200 with its
binding, not 503 (no answer) nor 400 (Invalid CSeq, a replay).

A registrar that leaves discovery (draining) gets its stream ended by the edge once what
was sent on it is answered, so its drain need not wait out its grace nor cancel a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc
from services.edge.registrar_client import RegistrarClient
from services.registrar.app import SERVICE, RegistrarServicer, _parse_save
from services.registrar.location import Location, SaveResult
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.discovery import Instance
from shared.rpc.grpc_helpers import start_grpc_server

CALL_TIMEOUT = 10.0  # the calls here fail by the stream, never by the deadline
REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1\r\n"
    "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
    "Call-ID: c1\r\nCSeq: 4 REGISTER\r\nMax-Forwards: 70\r\n"
    "Contact: <sip:alice@10.0.0.5:5062>\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n")


class GoingAway(pb_grpc.RegistrarServicer):
    """Applies each Save to `tables` (itself and the replica), then ends the stream without
    an answer (`vanish`) or answers 503; counts the Saves it saw."""

    def __init__(self, tables: list[UserLocation], *, vanish: bool) -> None:
        self.tables = tables
        self.vanish = vanish
        self.seen: list[Any] = []

    async def Session(self, request_iterator: Any,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for batch in request_iterator:
            replies = pb.SessionReplies()
            for req in batch.calls:
                self.seen.append(req.save)
                parsed = _parse_save(req.save)
                assert not isinstance(parsed, SaveResult)
                if self.vanish:
                    for ul in self.tables:
                        ul.save(*parsed)
                replies.replies.add(id=req.id, save=pb.SaveReply(
                    status=503, reason="Service Unavailable"))
            if self.vanish:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
            yield replies


@pytest.mark.parametrize("vanish", [True, False], ids=["goes-away", "answers-503"])
async def test_a_save_moves_to_the_other_registrar(tmp_path: Path, vanish: bool) -> None:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    first_ul, second_ul = UserLocation(Location(), store), UserLocation(Location(), store)
    first = GoingAway([first_ul, second_ul], vanish=vanish)
    second = RegistrarServicer(second_ul)
    def adder(servicer: Any) -> Callable[[Any], None]:
        def add(server: Any) -> None:
            pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
                servicer, server)
        return add

    servers = [await start_grpc_server([adder(svc)], services=[SERVICE])
               for svc in (first, second)]
    client = RegistrarClient(addresses=[f"127.0.0.1:{s.port}" for s in servers],
                             timeout=CALL_TIMEOUT)
    try:
        status, reason, headers = await client.save(
            REGISTER.encode(), "10.0.0.5", 5062, "udp", "udp:127.0.0.1:5060")
        assert (status, reason) == (200, "OK")
        assert ("Contact", "<sip:alice@10.0.0.5:5062>;expires=120") in headers
        assert [r.retry for r in first.seen] == [False]
        # Without `retry` the second would refuse the binding it already holds (400).
        assert second_ul.stats["save_errors"] == 0
        [binding] = second_ul.location.records["alice@example.com"]
        assert (binding.callid, binding.cseq) == ("c1", 4)
    finally:
        await client.close()
        for server in servers:
            await server.stop(0)
        await store.close()


class Watching(RegistrarServicer):
    """Sets `ended` when a Session stream ends by itself (not cancelled by the server)."""

    def __init__(self, ul: UserLocation) -> None:
        super().__init__(ul)
        self.ended = asyncio.Event()

    async def Session(self, request_iterator: Any,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for message in super().Session(request_iterator, context):
            yield message
        self.ended.set()


async def test_the_stream_to_a_registrar_leaving_discovery_ends_once_answered(
        tmp_path: Path) -> None:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    servicer = Watching(UserLocation(Location(), store))
    server = await start_grpc_server(
        [lambda s: pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, s)], services=[SERVICE])
    client = RegistrarClient(expected=True, timeout=CALL_TIMEOUT)
    listed = Instance("registrar", "r1", "127.0.0.1", 1,
                      meta={"grpc": f"127.0.0.1:{server.port}", "ready": "1"})
    try:
        client._set([listed])
        first = await client.save(REGISTER.encode(), "10.0.0.5", 5062, "udp", "")
        assert first[0] == 200
        # A Save in flight (queued, not yet answered) when the registrar leaves discovery:
        # it is still answered there, and then the stream ends.
        in_flight = asyncio.create_task(client.save(
            REGISTER.replace("CSeq: 4", "CSeq: 5").encode(), "10.0.0.5", 5062, "udp", ""))
        await asyncio.sleep(0)  # the Save is queued on the stream (no wait: one loop turn)
        client._set([])
        assert (await asyncio.wait_for(in_flight, CALL_TIMEOUT))[0] == 200
        await asyncio.wait_for(servicer.ended.wait(), CALL_TIMEOUT)
        assert not client.available and not client._sessions
    finally:
        await client.close()
        await server.stop(0)
        await store.close()
