"""One contract suite over both sharing-tag backends: embedded and Consul (on the fake).

The harness stands in for the engine: it feeds the embedded backend the claims of the
nodes each one can reach, and for Consul it runs the fake agent on a fast manual clock
(one pump step = 0.2 s of Consul time) so session TTLs of 10 s lapse in about a second.
"Killing" a node stops it like kill -9 (nothing released); a partition cuts links
(embedded) or cuts the minority off Consul (consul: each node reaches the fake agent
through a TCP gate of its own, tests/netgate.py, so a cut is a real lost connection).
After every pump step the suite samples who is active. A Consul step does not sleep: it
advances the clock and waits until every live node finished a round that ran wholly on the
new time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.cluster.shtags import EmbeddedShtags, ShtagConfig
from shared.cluster.shtags_consul import ConsulShtags
from shared.discovery.testing.fake_consul import FakeConsul
from tests.netgate import Gate
from tests.support.waiting import eventually

TAG = "vip"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.nodes: dict[int, Any] = {}
        self.alive: set[int] = set()
        self.cut: dict[int, set[int]] = {}
        self.clock = Clock()
        self.consul: FakeConsul | None = None
        self.addr = ""
        self.double_active_samples = 0
        # Rounds of each Consul node's loop: started, finished.
        self.started: dict[int, int] = {}
        self.finished: dict[int, int] = {}
        self.gates: dict[int, Gate] = {}

    async def start(self, ids: list[int]) -> None:
        if self.kind == "consul":
            self.consul = FakeConsul(clock=self.clock)
            self.addr = await self.consul.start()
        for n in ids:
            await self.add(n)

    async def add(self, n: int) -> None:
        tags = [ShtagConfig(TAG, 1)]
        node: Any
        if self.kind == "consul":
            gate = self.gates[n] = Gate(self.addr)
            node = ConsulShtags(await gate.start(), 1, n, tags, ttl=10, lock_delay=1,
                                renew_interval=0.02, clock=self.clock)
            node.yield_request = lambda holder, tag, src=n: self.nodes[holder].on_yield(tag, src)
            self._count_rounds(n, node)
        else:
            node = EmbeddedShtags(n, tags, self.clock)
        await node.start()
        self.nodes[n] = node
        self.alive.add(n)

    def _count_rounds(self, n: int, node: ConsulShtags) -> None:
        inner = node._round  # the loop looks it up each round: counted from now on

        async def counted() -> None:
            self.started[n] = self.started.get(n, 0) + 1
            try:
                await inner()
            finally:
                self.finished[n] = self.finished.get(n, 0) + 1

        node._round = counted  # type: ignore[method-assign]

    def linked(self, a: int, b: int) -> bool:
        return b not in self.cut.get(a, set()) and a not in self.cut.get(b, set())

    async def step(self) -> None:
        if self.kind == "consul":
            self.clock.now += 0.2
            # Round k+1, k = the rounds started so far, starts after the clock moved.
            begun = {n: self.started.get(n, 0) for n in self.alive}
            await eventually(
                lambda: all(self.finished.get(n, 0) > begun[n] for n in begun), 5,
                "a round of every node on the new clock", interval=0.002)
        else:
            claims = {n: self.nodes[n].claims() for n in self.alive}
            for n in self.alive:
                self.nodes[n].on_view(
                    {m: claims[m] for m in self.alive if m != n and self.linked(n, m)}, True)
            await asyncio.sleep(0)
        if len(self.active()) > 1:
            self.double_active_samples += 1

    def active(self) -> list[int]:
        return sorted(n for n in self.alive if self.nodes[n].is_active(TAG))

    async def until(self, cond: Any, steps: int = 400) -> None:
        for _ in range(steps):
            await self.step()
            if cond():
                return
        raise AssertionError(f"condition not met; active={self.active()}")

    async def kill(self, n: int) -> None:
        self.alive.discard(n)
        node = self.nodes[n]
        if self.kind == "consul":
            await node.close(release=False)  # as kill -9: the session lapses by its TTL

    def partition(self, minority: set[int]) -> None:
        if self.kind == "consul":
            for n in minority:
                self.gates[n].cut()
        else:
            for n in self.nodes:
                self.cut[n] = (set(self.nodes) - minority) if n in minority else set(minority)

    def heal(self) -> None:
        self.cut.clear()
        for gate in self.gates.values():
            gate.heal()

    async def close(self) -> None:
        for n in list(self.alive):
            await self.nodes[n].close()
        for gate in self.gates.values():
            await gate.close()
        if self.consul is not None:
            await self.consul.stop()


@pytest.fixture(params=["embedded", "consul"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h = Harness(request.param)
    try:
        await h.start([1, 2, 3])
        yield h
    finally:
        with contextlib.suppress(Exception):
            await h.close()


async def test_exactly_one_active_holder(harness: Harness) -> None:
    await harness.until(lambda: len(harness.active()) == 1)
    for _ in range(20):
        await harness.step()
        assert len(harness.active()) == 1
    assert harness.double_active_samples == 0


async def test_holder_killed_a_backup_takes_the_tag(harness: Harness) -> None:
    await harness.until(lambda: len(harness.active()) == 1)
    [holder] = harness.active()
    await harness.kill(holder)
    await harness.until(lambda: len(harness.active()) == 1)
    assert harness.active()[0] != holder
    assert harness.double_active_samples == 0


async def test_set_active_moves_the_tag(harness: Harness) -> None:
    await harness.until(lambda: len(harness.active()) == 1)
    [holder] = harness.active()
    target = 3 if holder != 3 else 2
    await harness.nodes[target].set_active(TAG)
    await harness.until(lambda: harness.active() == [target])
    for _ in range(20):
        await harness.step()
        assert harness.active() == [target]


async def test_partition_heals_to_a_single_holder(harness: Harness) -> None:
    await harness.until(lambda: len(harness.active()) == 1)
    [holder] = harness.active()
    harness.partition({holder})
    others = set(harness.nodes) - {holder}
    # The majority gets a holder of its own.
    await harness.until(lambda: any(harness.nodes[n].is_active(TAG) for n in others))
    if harness.kind == "consul":
        # Consul: the cut-off minority stepped down before anyone else acquired.
        assert not harness.nodes[holder].is_active(TAG)
        assert harness.double_active_samples == 0
    harness.heal()
    await harness.until(lambda: len(harness.active()) == 1)
    for _ in range(30):
        await harness.step()
        assert len(harness.active()) == 1
