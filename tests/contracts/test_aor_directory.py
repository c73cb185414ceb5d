"""One contract suite over the federation directory (AOR -> home SIP addresses of the
points of presence holding it): the embedded one and the real Redis at 127.0.0.1:6379;
and the publisher that feeds it from the usrloc hot path, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from services.registrar.cachedb import (
    AorDirectory,
    DirectoryPublisher,
    MemoryAorDirectory,
    RedisAorDirectory,
)


@pytest.fixture(params=["memory", "redis"])
async def directory(request: pytest.FixtureRequest) -> AsyncIterator[AorDirectory]:
    d: AorDirectory
    if request.param == "memory":
        d = MemoryAorDirectory()
    else:  # a prefix of its own: parallel runs never collide
        d = RedisAorDirectory("redis://127.0.0.1:6379/0",
                              prefix=f"test:fed{uuid.uuid4().hex[:10]}:")
    await d.open()
    yield d
    if isinstance(d, RedisAorDirectory):
        await d.clear()
        assert not [k async for k in d.r.scan_iter(match=f"{d.prefix}*")]
    await d.close()


async def test_homes_of_an_aor_are_published_and_withdrawn(directory: AorDirectory) -> None:
    assert await directory.homes("alice@example.com") == set()
    await directory.publish("alice@example.com", "sip:10.0.0.1:5060")
    await directory.publish("alice@example.com", "sip:10.0.0.2:5060")
    await directory.publish("alice@example.com", "sip:10.0.0.1:5060")  # idempotent
    await directory.publish("bob@example.com", "sip:10.0.0.2:5060")
    assert await directory.homes("alice@example.com") == {"sip:10.0.0.1:5060",
                                                          "sip:10.0.0.2:5060"}
    await directory.withdraw("alice@example.com", "sip:10.0.0.1:5060")
    await directory.withdraw("alice@example.com", "sip:10.0.0.9:5060")  # never there
    assert await directory.homes("alice@example.com") == {"sip:10.0.0.2:5060"}
    assert await directory.homes("bob@example.com") == {"sip:10.0.0.2:5060"}
    await directory.withdraw("alice@example.com", "sip:10.0.0.2:5060")
    assert await directory.homes("alice@example.com") == set()


async def test_publisher_applies_the_last_state_of_each_aor(directory: AorDirectory) -> None:
    pub = DirectoryPublisher(directory, "sip:10.0.0.1:5060")
    pub.start()
    try:
        pub.note("a@x", True)
        pub.note("b@x", True)
        pub.note("a@x", False)  # a came and went before the writer ran: withdrawn
        pub.note("c@x", True)
        await pub.drain()
        assert await directory.homes("a@x") == set()
        assert await directory.homes("b@x") == {"sip:10.0.0.1:5060"}
        assert await directory.homes("c@x") == {"sip:10.0.0.1:5060"}
        assert not pub.pending
    finally:
        await pub.stop()


async def test_publisher_retries_while_the_directory_fails() -> None:
    class Flaky(MemoryAorDirectory):
        failures = 2

        async def publish(self, aor: str, home: str) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("cachedb down")
            await super().publish(aor, home)

    flaky = Flaky()
    pub = DirectoryPublisher(flaky, "sip:h", retry=0.01)
    pub.start()
    try:
        pub.note("a@x", True)
        await pub.drain()
        assert flaky.failures == 0
        assert await flaky.homes("a@x") == {"sip:h"}
    finally:
        await pub.stop()


async def test_reconcile_lists_a_home_for_exactly_what_it_holds(
        directory: AorDirectory) -> None:
    home, other = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
    for aor in ("stale1@x", "stale2@x", "kept@x"):
        await directory.publish(aor, home)
    await directory.publish("stale1@x", other)  # another PoP's entry is not touched
    assert await directory.reconcile(home, {"kept@x", "new@x"}) == (1, 2)
    assert await directory.homes("stale1@x") == {other}
    assert await directory.homes("stale2@x") == set()
    assert await directory.homes("kept@x") == {home}
    assert await directory.homes("new@x") == {home}
    assert await directory.reconcile(home, set()) == (0, 2)  # restarted empty
    assert await directory.homes("kept@x") == set()
    assert await directory.homes("stale1@x") == {other}


async def test_a_home_is_alive_only_while_it_beats(directory: AorDirectory) -> None:
    assert await directory.beat(None, 10) == set()
    assert await directory.beat("sip:a", 10) == {"sip:a"}
    assert await directory.beat("sip:b", 0.05) == {"sip:a", "sip:b"}
    deadline = asyncio.get_running_loop().time() + 5
    while "sip:b" in await directory.beat(None, 10):  # until b's 50 ms are over
        assert asyncio.get_running_loop().time() < deadline, "sip:b never expired"
        await asyncio.sleep(0.01)
    assert await directory.beat(None, 10) == {"sip:a"}


async def test_publisher_reconciles_then_applies_later_notes(directory: AorDirectory) -> None:
    home = "sip:10.0.0.1:5060"
    await directory.publish("gone@x", home)  # from a previous life of this home
    pub = DirectoryPublisher(directory, home, ttl=10)
    held = {"a@x"}
    pub.start()
    try:
        assert pub.live is None or home not in pub.live  # not alive before it reconciled
        pub.reconcile(lambda: set(held))
        pub.note("b@x", True)  # after the reconcile was asked: applied after it
        await pub.drain()
        assert await directory.homes("gone@x") == set()
        assert await directory.homes("a@x") == {home}
        assert await directory.homes("b@x") == {home}
        assert pub.reconciled and pub.live is not None and home in pub.live
    finally:
        await pub.stop()
