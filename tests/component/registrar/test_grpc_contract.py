"""The registrar's gRPC API end to end in one process: the edge's RegistrarClient against
the real servicer on a loopback port (Save, Lookup, GetCredentials), bad input answered
with a status, and a registrar gone answered by RegistrarUnavailable within the deadline."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc
from services.edge.registrar_client import (
    LookupBranch,
    RegistrarClient,
    RegistrarUnavailable,
)
from services.registrar.app import SERVICE, RegistrarServicer
from services.registrar.location import Location
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.rpc.grpc_helpers import start_grpc_server
from tests.support.ports import reserve_port
from tests.support.waiting import eventually

# Deadline of the calls that must succeed: generous, a loaded CI box (2 cores shared by
# several runs) took over a second for a first call on a fresh channel. The calls that
# must fail are checked against the short deadline the edge uses (DEADLINE).
CALL_TIMEOUT = 10.0
DEADLINE = 1.0
# gRPC's reconnect back-off after a refused connection: 1 s, then 1.6 s (+-20% jitter);
# calls made meanwhile fail fast (UNAVAILABLE, no wait_for_ready). Two back-offs and a
# margin for a loaded machine.
RECONNECT_WITHIN = 1.2 + 1.6 * 1.2 + 5.0

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1\r\n"
    "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
    "Call-ID: c1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
    "Contact: <sip:alice@10.0.0.5:5062>;q=0.7\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n")


async def test_save_lookup_credentials_over_grpc(tmp_path: Path) -> None:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    await store.add("alice", "example.com", "pw")
    await store.add("bob", "example.com", "pw")
    ul = UserLocation(Location(), store)
    server = await start_grpc_server(
        [lambda s: pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
                RegistrarServicer(ul), s)],
        services=[SERVICE])
    client = RegistrarClient(addresses=[f"127.0.0.1:{server.port}"], timeout=CALL_TIMEOUT)
    try:
        status, reason, headers = await client.save(REGISTER.encode(), "198.51.100.4", 7000,
                                                    "udp", "udp:127.0.0.1:5060")
        assert (status, reason) == (200, "OK")
        assert ("Contact", "<sip:alice@10.0.0.5:5062>;expires=120;q=0.7") in headers
        status, branches = await client.lookup("alice@example.com", "INVITE")
        assert status == 200 and branches[0].uri == "sip:alice@10.0.0.5:5062"
        assert branches[0].next_hop == "sip:198.51.100.4:7000"
        assert branches[0].q == pytest.approx(0.7)
        assert (await client.lookup("bob@example.com", "INVITE"))[0] == 480
        assert (await client.lookup("nobody@example.com", "INVITE"))[0] == 404
        creds = await client.credentials("alice", "Example.com")
        assert creds is not None
        assert creds.for_algorithm("MD5") == hashlib.md5(b"alice:example.com:pw").hexdigest()
        assert creds.for_algorithm("SHA-256-sess") == creds.ha1_sha256
        assert await client.credentials("nobody", "example.com") is None
        bad, _, _ = await client.save(b"this is not SIP", "1.2.3.4", 1, "udp", "")
        assert bad == 400
        assert (await client.lookup("no user part", "INVITE"))[0] == 400
    finally:
        await server.stop(0)
    client.timeout = DEADLINE  # the edge's own: a registrar gone must not hold a call longer
    started = time.monotonic()
    try:
        await asyncio.wait_for(client.lookup("alice@example.com", "INVITE"), 10)
    except RegistrarUnavailable:
        pass
    else:
        raise AssertionError("a stopped registrar must not answer")
    assert time.monotonic() - started < 5  # deadlines, not a hang
    await client.close()
    await store.close()


def register_of(user: str, port: int) -> bytes:
    return REGISTER.replace("alice", user).replace("10.0.0.5:5062>", f"10.0.0.5:{port}>"
                                                   ).encode()


async def test_one_session_carries_many_concurrent_calls_and_reopens_after_a_restart(
        tmp_path: Path) -> None:
    # 300 concurrent Saves then Lookups ride on the client's single Session stream: every
    # reply reaches the call that asked (ids), none is mixed up with another.
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    ul = UserLocation(Location(), store)

    def add(s: object) -> None:
        pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
                RegistrarServicer(ul), s)

    # A reserved port (tests/support/ports.py): the restart below binds it again, and an
    # ephemeral one could be handed to another socket on the machine in between.
    port = reserve_port()
    server = await start_grpc_server([add], services=[SERVICE], port=port)
    client = RegistrarClient(addresses=[f"127.0.0.1:{port}"], timeout=CALL_TIMEOUT)
    try:
        users = [f"u{i}" for i in range(300)]
        saved = await asyncio.gather(*(client.save(register_of(u, 6000 + i), "10.0.0.5",
                                                   6000 + i, "udp", "udp:127.0.0.1:5060")
                                       for i, u in enumerate(users)))
        assert all(status == 200 for status, _, _ in saved)
        found = await asyncio.gather(*(client.lookup(f"{u}@example.com", "INVITE")
                                       for u in users))
        for i, (status, branches) in enumerate(found):
            assert status == 200 and [b.uri for b in branches] == [
                f"sip:u{i}@10.0.0.5:{6000 + i}"]
        assert len(client._sessions) == 1
        await server.stop(0)
        with pytest.raises(RegistrarUnavailable):
            await client.lookup("u1@example.com", "INVITE")
        # The registrar is back on the same port: the same client opens a new stream by
        # itself. When the failed call above found the stream already broken, it tried to
        # connect and was refused: the channel then fails calls fast until its reconnect
        # back-off ends (whether it did depends on which the event loop saw first), so
        # the client is given that back-off, not a single try.
        server = await start_grpc_server([add], services=[SERVICE], port=port)

        async def lookup_u1() -> tuple[int, list[LookupBranch]] | None:
            try:
                return await client.lookup("u1@example.com", "INVITE")
            except RegistrarUnavailable:
                return None

        status, branches = await eventually(lookup_u1, RECONNECT_WITHIN,
                                            "a lookup on the restarted registrar",
                                            interval=0.1)
        assert status == 200 and branches[0].uri == "sip:u1@10.0.0.5:6001"
    finally:
        await server.stop(0)
        await client.close()
        await store.close()
