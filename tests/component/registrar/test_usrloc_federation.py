"""federation-cachedb in process: the user location notes AOR insert/delete (also by
expiry) in the federation directory, and its federated lookup names only the other
points of presence that are alive -- on the embedded directory and the real Redis at
127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.registrar.cachedb import (
    AorDirectory,
    DirectoryPublisher,
    MemoryAorDirectory,
    RedisAorDirectory,
)
from services.registrar.location import Location, Origin
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.sip import parse_message

T0 = 1_800_000_000.0
HOME = "sip:10.0.0.1:5060"
OTHER = "sip:10.0.0.2:5060"


def register(expires: int) -> Any:
    return parse_message((
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n"
        "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
        "Call-ID: c1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:alice@10.0.0.5>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
    ).encode())


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.01)  # polling a condition with a deadline


@pytest.fixture(params=["memory", "redis"])
async def directory(request: pytest.FixtureRequest) -> AsyncIterator[AorDirectory]:
    d: AorDirectory
    if request.param == "memory":
        d = MemoryAorDirectory()
    else:
        d = RedisAorDirectory("redis://127.0.0.1:6379/0",
                              prefix=f"test:fed{uuid.uuid4().hex[:10]}:")
    await d.open()
    yield d
    if isinstance(d, RedisAorDirectory):
        await d.clear()
    await d.close()


async def test_directory_follows_the_aor_and_lookup_names_other_pops(
        directory: AorDirectory, tmp_path: Path) -> None:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    now = [T0]
    pub = DirectoryPublisher(directory, HOME, ttl=0.3)  # liveness read every 0.1 s
    pub.start()
    ul = UserLocation(Location(), store, clock=lambda: now[0], directory=pub, home=HOME,
                      replication="same-sip")
    try:
        assert ul.save(register(600), Origin("10.0.0.5", 5060, "udp")).status == 200
        await pub.drain()
        assert await directory.homes("alice@example.com") == {HOME}
        assert await ul.remote_homes("alice@example.com") == []  # ourselves: no branch
        await directory.publish("alice@example.com", OTHER)  # another PoP has her too
        await directory.beat(OTHER, 0.6)  # ... and is alive for 0.6 s
        await eventually(lambda: OTHER in (pub.live or ()), "the other PoP seen alive")
        assert await ul.remote_homes("alice@example.com") == [OTHER]
        # Its registrars gone (no beat): listed in the directory, but given no branch.
        await eventually(lambda: OTHER not in (pub.live or ()), "the other PoP seen gone")
        assert await directory.homes("alice@example.com") == {HOME, OTHER}
        assert await ul.remote_homes("alice@example.com") == []
        await directory.beat(OTHER, 60)
        await eventually(lambda: OTHER in (pub.live or ()), "the other PoP alive again")
        now[0] += 601
        assert ul.expire() == 1
        await pub.drain()
        assert await directory.homes("alice@example.com") == {OTHER}
    finally:
        await pub.stop()
        await store.close()
