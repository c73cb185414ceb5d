"""In-process registry with Consul's TTL semantics on an injectable clock.

Every mutation (register, deregister, a status change) bumps a monotonic change index and
wakes blocking queries, the way Consul's ``X-Consul-Index`` moves. Expiry is evaluated by
:meth:`MemoryRegistry.expire` with an explicit ``now``; :meth:`run_reaper` calls it on a timer
for live use, so unit tests can drive time by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from shared.discovery.port import CRITICAL, PASSING, Instance, RegistryError


@dataclasses.dataclass
class _Entry:
    instance: Instance
    ttl: float
    deadline: float


class MemoryRegistry:
    """A :class:`~shared.discovery.port.ServiceRegistry` kept in memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._index = 1
        self._changed = asyncio.Event()

    @property
    def index(self) -> int:
        return self._index

    @property
    def description(self) -> str:
        """The backend as the services' start-up line shows it."""
        return "in-process"

    def _bump(self) -> None:
        self._index += 1
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    def expire(self, now: float | None = None) -> None:
        """Turns instances whose TTL ran out critical (one index bump for all)."""
        now = self._clock() if now is None else now
        changed = False
        for entry in self._entries.values():
            if entry.instance.status == PASSING and now >= entry.deadline:
                entry.instance = dataclasses.replace(entry.instance, status=CRITICAL)
                changed = True
        if changed:
            self._bump()

    async def run_reaper(self, period: float = 0.2) -> None:
        """Runs :meth:`expire` every ``period`` seconds until cancelled."""
        while True:
            await asyncio.sleep(period)
            self.expire()

    async def register(self, instance: Instance, ttl: float) -> None:
        if ttl <= 0:
            raise RegistryError("ttl must be positive")
        passing = dataclasses.replace(instance, status=PASSING)
        self._entries[instance.id] = _Entry(passing, ttl, self._clock() + ttl)
        self._bump()

    async def deregister(self, instance_id: str) -> None:
        if self._entries.pop(instance_id, None) is not None:
            self._bump()

    async def heartbeat(self, instance_id: str) -> None:
        entry = self._entries.get(instance_id)
        if entry is None:
            raise RegistryError(f"unknown instance {instance_id}")
        entry.deadline = self._clock() + entry.ttl
        if entry.instance.status != PASSING:
            entry.instance = dataclasses.replace(entry.instance, status=PASSING)
            self._bump()

    async def healthy(self, service: str) -> list[Instance]:
        return [i for i in await self.instances(service) if i.passing]

    async def instances(self, service: str | None = None) -> list[Instance]:
        found = [
            e.instance
            for e in self._entries.values()
            if service is None or e.instance.service == service
        ]
        return sorted(found, key=lambda i: (i.service, i.id))

    async def wait_instances(
        self, service: str, index: int, wait: float
    ) -> tuple[int, list[Instance]]:
        if index == self._index:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=max(wait, 0.0))
            except TimeoutError:
                pass
        return self._index, await self.healthy(service)

    async def close(self) -> None:
        return None
