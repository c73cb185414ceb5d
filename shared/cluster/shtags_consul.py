"""Sharing tags on Consul KV locks (the asyncio adapter of the ``consul`` backend).

See :mod:`.shtags` for the rule: a tag is a Consul KV lock held through a session whose
TTL the holder renews every ``renew_interval``; a holder that could not renew for a TTL
steps down by itself, and Consul releases its lock after the TTL, so a partitioned
minority loses the tag and two holders cannot exist. A forced move asks the holder (over
the cluster) to release, then acquires.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from shared.cluster.shtags import Listener, ShtagConfig, YieldRequest


class ConsulShtags:
    """Sharing tags as Consul KV locks held through a TTL session (see module docstring)."""

    def __init__(
        self, addr: str, cluster_id: int, node_id: int, tags: list[ShtagConfig], *,
        ttl: int = 10, lock_delay: int = 0, renew_interval: float = 1.0,
        prefix: str = "sipmesh/cluster", token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addr = addr
        self.cluster_id = cluster_id
        self.node_id = node_id
        self._tags = {t.name: t for t in tags}
        self.ttl = ttl
        self.lock_delay = lock_delay
        self.renew_interval = renew_interval
        self.prefix = prefix
        self.token = token
        self.clock = clock
        self._active = dict.fromkeys(self._tags, False)
        self._holder: dict[str, int | None] = dict.fromkeys(self._tags)
        self._hold_off: dict[str, float] = dict.fromkeys(self._tags, 0.0)
        self._forced: dict[str, float] = dict.fromkeys(self._tags, 0.0)
        self._eligible = True
        self._session: str | None = None
        self._renewed_at = -1e18
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.listener: Listener | None = None
        self.yield_request: YieldRequest | None = None
        self.log = structlog.get_logger("shtags.consul").bind(node=node_id)

    @property
    def tags(self) -> Mapping[str, ShtagConfig]:
        return self._tags

    def key(self, tag: str) -> str:
        return f"{self.prefix}/{self.cluster_id}/shtag/{tag}"

    def is_active(self, tag: str) -> bool:
        return self._active.get(tag, False)

    def holder(self, tag: str) -> int | None:
        return self._holder.get(tag)

    def claims(self) -> dict[str, int]:
        return dict.fromkeys(self._tags, 0)

    def _set(self, tag: str, active: bool, reason: str) -> None:
        if self._active[tag] != active:
            self._active[tag] = active
            if self.listener is not None:
                self.listener(tag, active, reason)

    def on_view(self, view: Mapping[int, Mapping[str, int]], eligible: bool) -> None:
        if eligible != self._eligible:
            self._eligible = eligible
            self._wake.set()

    def on_yield(self, tag: str, to_node: int) -> None:
        if tag in self._tags and to_node != self.node_id:
            self._hold_off[tag] = self.clock() + max(3 * self.renew_interval, 1.0)
            self._wake.set()

    async def set_active(self, tag: str) -> None:
        if tag not in self._tags:
            raise KeyError(tag)
        self._forced[tag] = self.clock() + max(5 * self.renew_interval, 2.0)
        self._hold_off[tag] = 0.0
        holder = self._holder.get(tag)
        if holder is not None and holder != self.node_id and self.yield_request is not None:
            self.yield_request(holder, tag)
        self._wake.set()

    async def start(self) -> None:
        import consul.aio

        from shared.discovery.consul_backend import parse_addr

        scheme, host, port = parse_addr(self.addr)
        self._client = consul.aio.Consul(host=host, port=port, scheme=scheme,
                                         token=self.token, verify=False)
        self._task = asyncio.create_task(self._run())

    async def close(self, release: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if release and self._client is not None and self._session:
            with contextlib.suppress(Exception):
                await self._client.session.destroy(self._session)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Consul away: keep trying, the TTL rule decides
                self.log.warning("consul_round_failed", error=repr(exc))
            now = self.clock()
            if now - self._renewed_at >= self.ttl:
                # Could not renew for a whole TTL: Consul may already have given the lock
                # to another node, so stop claiming it.
                for tag in self._tags:
                    self._set(tag, False, "session lost")
                self._session = None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.renew_interval)

    async def _round(self) -> None:
        c = self._client
        if self._session is None:
            self._session = await c.session.create(
                name=f"sipmesh-shtag-{self.cluster_id}-{self.node_id}", ttl=self.ttl,
                lock_delay=self.lock_delay, behavior="release")
            self._renewed_at = self.clock()
        else:
            try:
                await c.session.renew(self._session)
            except Exception:
                self._session = None
                for tag in self._tags:
                    self._set(tag, False, "session invalidated")
                raise
            self._renewed_at = self.clock()
        now = self.clock()
        for tag in self._tags:
            key = self.key(tag)
            if not self._eligible or now < self._hold_off[tag]:
                if self._active[tag] or not self._eligible:
                    await c.kv.put(key, str(self.node_id), release=self._session)
                    self._set(tag, False, "node disabled" if not self._eligible
                              else "yielded to a forced node")
                await self._read_holder(tag)
                continue
            got = await c.kv.put(key, str(self.node_id), acquire=self._session)
            if got:
                self._holder[tag] = self.node_id
                self._set(tag, True, "MI command" if now < self._forced[tag] else "takeover")
            else:
                self._set(tag, False, "held by another node")
                await self._read_holder(tag)
                if now < self._forced[tag] and self.yield_request is not None:
                    holder = self._holder.get(tag)
                    if holder is not None and holder != self.node_id:
                        self.yield_request(holder, tag)

    async def _read_holder(self, tag: str) -> None:
        _, entry = await self._client.kv.get(self.key(tag))
        holder = None
        if entry and entry.get("Session") and entry.get("Value"):
            with contextlib.suppress(ValueError):
                holder = int(entry["Value"])
        self._holder[tag] = holder
