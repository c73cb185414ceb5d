"""The fake Consul's lock-delay (added for sharing tags), as Consul documents it: after the
session holding a lock is invalidated, the lock cannot be acquired again for the session's
lock-delay; a plain release has no delay."""

from __future__ import annotations

import consul.aio

from shared.discovery.testing.fake_consul import FakeConsul


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_lock_delay_after_invalidation_only() -> None:
    clock = Clock()
    fake = FakeConsul(clock=clock)
    addr = await fake.start()
    host, _, port = addr.rpartition(":")
    c = consul.aio.Consul(host=host, port=int(port))
    try:
        s1 = await c.session.create(ttl=10, lock_delay=5)
        s2 = await c.session.create(ttl=10, lock_delay=0)
        assert await c.kv.put("tag", "1", acquire=s1)
        clock.now += 6
        await c.session.renew(s2)  # s2 lives on; s1 is not renewed
        clock.now += 5  # s1's TTL is over
        fake.tick()
        assert s1 not in fake.sessions
        assert not await c.kv.put("tag", "2", acquire=s2)  # within s1's lock-delay
        await c.session.renew(s2)
        clock.now += 5
        assert await c.kv.put("tag", "2", acquire=s2)
        assert await c.kv.put("tag", "2", release=s2)
        s3 = await c.session.create(ttl=10, lock_delay=5)
        assert await c.kv.put("tag", "3", acquire=s3)  # a release has no lock-delay
    finally:
        await c.close()
        await fake.stop()
