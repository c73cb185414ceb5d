"""The edge's Session stream to the registrar: REGISTER's Saves wait for company longer
than Lookups (`save_window`, issue 22), but a Lookup queued behind a waiting Save is not
held for the Save's window (it sends what waits), nor is a full batch of Saves, nor a
Save on an idle stream (only a stream under load waits for company).  The
edge's RegistrarClient against the real servicer on a loopback port, with a Save window
far longer than the test's bounds, so an answer within them can only come from the early
send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.edge.registrar_client import BATCH_FULL, RegistrarClient
from tests.component.registrar.loopback import registrar_client

LONG = 600.0  # the Save window: never waited out within a test
BOUND = 20.0  # what an answer sent early takes at most, on a loaded machine


def register(user: str) -> bytes:
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1\r\n"
        f"From: <sip:{user}@example.com>;tag=1\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: c-{user}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@10.0.0.5:5062>\r\nExpires: 120\r\n"
        "Content-Length: 0\r\n\r\n").encode()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[RegistrarClient]:
    async with registrar_client(tmp_path, timeout=2 * LONG, batch_window=0.003,
                                save_window=LONG) as registrar:
        yield registrar


def save(client: RegistrarClient, user: str) -> asyncio.Task[tuple[int, str, list[
        tuple[str, str]]]]:
    return asyncio.create_task(client.save(register(user), "10.0.0.5", 5062, "udp",
                                           "udp:127.0.0.1:5060"))


@pytest.mark.parametrize("turns", [0, 1, 3])
async def test_a_lookup_does_not_wait_for_the_save_window(client: RegistrarClient,
                                                          turns: int) -> None:
    # `turns` loop turns between the two: the Lookup queued before the Save, with it
    # (before the writer took it) or after it (while the writer waits for company).
    # A first message makes the stream one under load (an idle one would not wait).
    await asyncio.wait_for(client.lookup("nobody@example.com", "INVITE"), BOUND)
    waiting = save(client, "alice")
    for _ in range(turns):
        await asyncio.sleep(0)
    status, branches = await asyncio.wait_for(client.lookup("bob@example.com", "INVITE"),
                                              BOUND)
    assert status in (404, 480) and branches == []
    # The Save went out with it, not after its own window.
    status, _, _ = await asyncio.wait_for(waiting, BOUND)
    assert status == 200
    status, [branch] = await asyncio.wait_for(client.lookup("alice@example.com", "INVITE"),
                                              BOUND)
    assert status == 200 and branch.uri == "sip:alice@10.0.0.5:5062"


async def test_a_full_batch_of_saves_goes_at_once(client: RegistrarClient) -> None:
    await asyncio.wait_for(client.lookup("nobody@example.com", "INVITE"), BOUND)
    saves = [save(client, f"u{i}") for i in range(BATCH_FULL + 1)]
    results = await asyncio.wait_for(asyncio.gather(*saves), BOUND)
    assert [status for status, _, _ in results] == [200] * len(saves)


async def test_a_save_on_an_idle_stream_goes_at_once_and_one_under_load_waits(
        client: RegistrarClient) -> None:
    status, _, _ = await asyncio.wait_for(save(client, "alice"), BOUND)  # idle: at once
    assert status == 200
    # A message went out just now: the next Save waits for company (LONG)...
    held = save(client, "bob")
    done, _ = await asyncio.wait({held}, timeout=0.5)
    assert not done
    # ...until a Lookup, which cannot wait that long, takes it along.
    status, _ = await asyncio.wait_for(client.lookup("carol@example.com", "INVITE"), BOUND)
    status, _, _ = await asyncio.wait_for(held, BOUND)
    assert status == 200
