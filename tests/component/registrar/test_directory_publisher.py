"""The federation directory's publisher keeps the newest heartbeat's answer: a beat that
started before a reconcile (so did not mark this home alive) and answered after it must
not put back a `live` without this home (services/registrar/cachedb.py)."""

from __future__ import annotations

import asyncio

from services.registrar.cachedb import DirectoryPublisher, MemoryAorDirectory

HOME = "sip:10.0.0.1:5060"


class SlowFirstBeat(MemoryAorDirectory):
    """A heartbeat that only reads (this home not yet reconciled) reads the homes alive at
    once and answers only when released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.reads = 0  # read-only beats answered

    async def beat(self, home: str | None, ttl: float) -> set[str]:
        alive = await super().beat(home, ttl)
        if home is None:
            await self.release.wait()
            self.reads += 1
        return alive


async def test_a_beat_from_before_the_reconcile_answering_last_is_not_kept() -> None:
    directory = SlowFirstBeat()
    pub = DirectoryPublisher(directory, HOME, ttl=30)
    pub.start()
    try:
        await asyncio.sleep(0)  # the periodic beat starts: this home is not reconciled yet
        pub.reconcile(lambda: {"a@x"})
        await pub.drain()  # reconciled; its own beat marked this home alive
        assert pub.reconciled and pub.live is not None and HOME in pub.live
        directory.release.set()  # the periodic beat read before the reconcile answers now
        for _ in range(10):  # a few loop turns: the released beat's task runs to its end
            await asyncio.sleep(0)
        assert directory.reads == 1
        assert HOME in pub.live, pub.live
    finally:
        await pub.stop()
