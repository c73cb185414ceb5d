"""The cachedb (Redis) side of user location: OpenSIPS usrloc's two `*-cachedb` modes.

Two small ports, each with an embedded backend and the real one (Redis, `redis.asyncio`):

* `LocationTable` (persistence.py's port) -- `RedisLocationTable` holds every binding for
  `full-sharing-cachedb`.  Keys under one prefix (`cachedb_prefix`, so several deployments
  or tests share a Redis without colliding):
    - `{p}loc:{aor}`  hash, field = binding key, value = the binding as JSON;
    - `{p}aors`       set of AORs that may have bindings (empty hashes are dropped lazily);
    - `{p}exp`        sorted set, member = JSON [aor, key], score = expiry (+inf when
                      permanent), so `purge` finds expired bindings without a scan.
  The embedded backend is SQLite (`persistence.SQLiteLocationTable`).
* `AorDirectory` -- federation metadata for `federation-cachedb`: AOR -> the home SIP
  addresses (clusterer `sip_addr`) of the points of presence holding it, as OpenSIPS'
  `{aor, home_ip}` rows.  `{p}fed:{aor}` is a Redis set; `MemoryAorDirectory` is the
  embedded backend.  `DirectoryPublisher` applies the changes from the (synchronous)
  usrloc hot path in order, from one background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

import structlog

from services.registrar.location import Binding


def _encode(b: Binding) -> str:
    from services.registrar.usrloc import encode_binding

    return json.dumps(encode_binding(b), separators=(",", ":"))


def _decode(data: str | bytes) -> Binding:
    from services.registrar.usrloc import decode_binding

    return decode_binding(json.loads(data))


def _alive(b: Binding, now: float) -> bool:
    return b.expires == 0 or b.expires > int(now)


def connect(url: str) -> Any:
    """A `redis.asyncio.Redis` for `url` (redis://host:port/db)."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


class _RedisBackend:
    """A Redis client under a key prefix: `open()` connects (unless a client was given) and
    pings, `r` raises `not_open` before that, `close()` closes the client."""

    not_open: ClassVar[str]

    def __init__(self, url: str, *, prefix: str = "sipmesh:ul:", client: Any = None) -> None:
        self.url = url
        self.prefix = prefix
        self._r = client

    @property
    def r(self) -> Any:
        if self._r is None:
            raise RuntimeError(self.not_open)
        return self._r

    async def open(self) -> None:
        if self._r is None:
            self._r = connect(self.url)
        await self._r.ping()

    async def close(self) -> None:
        if self._r is not None:
            await self._r.aclose()
            self._r = None


class RedisLocationTable(_RedisBackend):
    """`persistence.LocationTable` on Redis (see module doc for the key layout)."""

    not_open = "cachedb location table is not open"

    def _loc(self, aor: str) -> str:
        return f"{self.prefix}loc:{aor}"

    async def load(self, now: float) -> list[Binding]:
        aors = sorted(a.decode() for a in await self.r.smembers(f"{self.prefix}aors"))
        if not aors:
            return []
        pipe = self.r.pipeline(transaction=False)
        for aor in aors:
            pipe.hvals(self._loc(aor))
        out: list[Binding] = []
        empty = []
        for aor, values in zip(aors, await pipe.execute(), strict=True):
            if not values:
                empty.append(aor)
            out.extend(b for b in map(_decode, values) if _alive(b, now))
        if empty:  # AORs whose last binding went: forget them (a racing insert re-adds)
            await self.r.srem(f"{self.prefix}aors", *empty)
        return out

    async def write(self, upserts: Iterable[Binding], deletes: Iterable[tuple[str, str]]
                    ) -> None:
        pipe = self.r.pipeline(transaction=True)
        for aor, key in deletes:
            pipe.hdel(self._loc(aor), key)
            pipe.zrem(f"{self.prefix}exp", json.dumps([aor, key]))
        for b in upserts:
            pipe.hset(self._loc(b.aor), b.key, _encode(b))
            pipe.sadd(f"{self.prefix}aors", b.aor)
            pipe.zadd(f"{self.prefix}exp", {json.dumps([b.aor, b.key]):
                                            b.expires if b.expires else math.inf})
        await pipe.execute()

    async def replace_all(self, bindings: Iterable[Binding]) -> None:
        await self.clear()
        await self.write(list(bindings), [])

    async def load_aor(self, aor: str, now: float) -> list[Binding]:
        return [b for b in map(_decode, await self.r.hvals(self._loc(aor))) if _alive(b, now)]

    async def purge(self, now: float) -> int:
        members = await self.r.zrangebyscore(f"{self.prefix}exp", "-inf", int(now))
        if not members:
            return 0
        pipe = self.r.pipeline(transaction=True)
        for m in members:
            aor, key = json.loads(m)
            pipe.hdel(self._loc(aor), key)
        pipe.zrem(f"{self.prefix}exp", *members)
        results = await pipe.execute()
        return sum(int(x) for x in results[:-1])

    async def clear(self) -> None:
        """Deletes every key under the prefix (replace_all; tests clean up with it)."""
        keys = [k async for k in self.r.scan_iter(match=f"{self.prefix}*", count=500)]
        for i in range(0, len(keys), 500):
            await self.r.delete(*keys[i:i + 500])


class AorDirectory(Protocol):
    """federation-cachedb metadata: which points of presence (home SIP address) hold an AOR."""

    async def open(self) -> None: ...

    async def publish(self, aor: str, home: str) -> None: ...

    async def withdraw(self, aor: str, home: str) -> None: ...

    async def homes(self, aor: str) -> set[str]: ...

    async def close(self) -> None: ...


class MemoryAorDirectory:
    """Embedded backend (one process: a single point of presence, or tests)."""

    def __init__(self) -> None:
        self.rows: dict[str, set[str]] = {}

    async def open(self) -> None:
        return None

    async def publish(self, aor: str, home: str) -> None:
        self.rows.setdefault(aor, set()).add(home)

    async def withdraw(self, aor: str, home: str) -> None:
        homes = self.rows.get(aor)
        if homes is not None:
            homes.discard(home)
            if not homes:
                del self.rows[aor]

    async def homes(self, aor: str) -> set[str]:
        return set(self.rows.get(aor, ()))

    async def close(self) -> None:
        return None


class RedisAorDirectory(_RedisBackend):
    """Real backend: `{prefix}fed:{aor}` is the set of home SIP addresses."""

    not_open = "cachedb directory is not open"

    async def publish(self, aor: str, home: str) -> None:
        await self.r.sadd(f"{self.prefix}fed:{aor}", home)

    async def withdraw(self, aor: str, home: str) -> None:
        await self.r.srem(f"{self.prefix}fed:{aor}", home)

    async def homes(self, aor: str) -> set[str]:
        return {h.decode() for h in await self.r.smembers(f"{self.prefix}fed:{aor}")}

    async def clear(self) -> None:
        keys = [k async for k in self.r.scan_iter(match=f"{self.prefix}fed:*", count=500)]
        if keys:
            await self.r.delete(*keys)


class DirectoryPublisher:
    """Applies AOR insert/delete to an `AorDirectory` in order, off the hot path.

    A failed write is retried (with the newest state of that AOR winning) so a Redis
    restart does not leave a PoP unreachable for the AORs registered meanwhile."""

    def __init__(self, directory: AorDirectory, home: str, *, retry: float = 1.0) -> None:
        self.directory = directory
        self.home = home
        self.retry = retry
        self.pending: dict[str, bool] = {}  # aor -> present (insertion-ordered)
        self.log = structlog.get_logger("registrar.cachedb")
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def note(self, aor: str, present: bool) -> None:
        self.pending.pop(aor, None)
        self.pending[aor] = present
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Waits until every noted change is in the directory."""
        await self._idle.wait()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                aor, present = next(iter(self.pending.items()))
                try:
                    if present:
                        await self.directory.publish(aor, self.home)
                    else:
                        await self.directory.withdraw(aor, self.home)
                except Exception as exc:
                    self.log.warning("directory_write_failed", aor=aor, error=repr(exc))
                    await asyncio.sleep(self.retry)
                    continue
                if self.pending.get(aor) is present:  # no newer change came meanwhile
                    del self.pending[aor]
            self._idle.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
