"""MemoryRegistry on a hand-driven clock: TTL expiry, change index, heartbeats."""

from __future__ import annotations

import pytest

from shared.discovery import Instance, RegistryError
from shared.discovery.memory import MemoryRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_ttl_expiry_is_exact_on_the_injected_clock() -> None:
    clock = Clock()
    reg = MemoryRegistry(clock)
    await reg.register(Instance("edge", "e1", "127.0.0.1", 1), ttl=10)
    clock.now = 109.9
    reg.expire()
    assert [i.id for i in await reg.healthy("edge")] == ["e1"]
    clock.now = 110.0
    before = reg.index
    reg.expire()
    assert await reg.healthy("edge") == [] and reg.index == before + 1
    reg.expire()
    assert reg.index == before + 1  # no change, no bump
    await reg.heartbeat("e1")
    assert [i.status for i in await reg.instances("edge")] == ["passing"]


async def test_heartbeat_extends_and_unknown_raises() -> None:
    clock = Clock()
    reg = MemoryRegistry(clock)
    await reg.register(Instance("edge", "e1", "127.0.0.1", 1), ttl=10)
    clock.now = 108
    await reg.heartbeat("e1")
    clock.now = 117
    reg.expire()
    assert len(await reg.healthy("edge")) == 1
    with pytest.raises(RegistryError):
        await reg.heartbeat("ghost")
    with pytest.raises(RegistryError):
        await reg.register(Instance("edge", "e2", "h", 1), ttl=0)


async def test_wait_instances_returns_at_once_on_a_stale_index() -> None:
    reg = MemoryRegistry(Clock())
    await reg.register(Instance("edge", "e1", "127.0.0.1", 1), ttl=10)
    index, found = await reg.wait_instances("edge", 0, 60)
    assert index == reg.index and [i.id for i in found] == ["e1"]
