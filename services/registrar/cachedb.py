"""The cachedb (Redis) side of user location: OpenSIPS usrloc's two `*-cachedb` modes.

Two small ports, each with an embedded backend and the real one (Redis, `redis.asyncio`):

* `LocationTable` (persistence.py's port) -- `RedisLocationTable` holds every binding for
  `full-sharing-cachedb`.  Keys under one prefix (`cachedb_prefix`, so several deployments
  or tests share a Redis without colliding):
    - `{p}loc:{aor}`  hash, field = binding key, value = the binding as JSON;
    - `{p}aors`       set of AORs that may have bindings (empty hashes are dropped lazily);
    - `{p}exp`        sorted set, member = JSON [aor, key], score = expiry (+inf when
                      permanent), so `purge` finds expired bindings without a scan;
    - `{p}ping:{n}`   the ping index: hash, field = JSON [aor, key], value = the binding,
                      for the bindings NAT pinging wants (natted ones: a `received`
                      address; every one with `ping_all`) whose AOR is in hash partition
                      `n` (natping.partition_of, 0 <= n < 64).  Written in the same
                      MULTI as `loc`, so it never disagrees with it.  A node's ping round
                      reads only the partitions the cluster gives it
                      (`load_partitions`: one HVALS per partition, no SCAN, no other
                      AOR's key), instead of the whole table;
    - `{p}pingidx`    which layout the ping index was built with ("64:nat"/"64:all"):
                      `open()` rebuilds the index from the table when it differs (an
                      upgrade, or ping_nated_only changed), so old bindings get pinged.
  The connection names itself `sipmesh-registrar-<pid>` (CLIENT LIST shows which process
  reads what).
  The embedded backend is SQLite (`persistence.SQLiteLocationTable`).
* `AorDirectory` -- federation metadata for `federation-cachedb`: AOR -> the home SIP
  addresses (clusterer `sip_addr`) of the points of presence holding it, as OpenSIPS'
  `{aor, home_ip}` rows.  `{p}fed:{aor}` is a Redis set; `MemoryAorDirectory` is the
  embedded backend.  `DirectoryPublisher` applies the changes from the (synchronous)
  usrloc hot path in order, from one background task, reconciles this home's entries with
  what the node holds once it holds its PoP's data (a registrar that restarted empty
  withdraws its stale entries), and keeps `{p}homes` (home -> alive until, on the Redis
  clock) so that lookups skip the homes whose registrars are all gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

import structlog

from services.registrar.location import Binding
from services.registrar.natping import PARTITIONS, partition_of


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

    return aioredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0,
                                   client_name=f"sipmesh-registrar-{os.getpid()}")


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
    """`persistence.LocationTable` on Redis (see module doc for the key layout).

    `ping_all` (OpenSIPS ping_nated_only = 0) puts every binding in the ping index, not
    only the natted ones; every node of a deployment must agree on it."""

    not_open = "cachedb location table is not open"

    def __init__(self, url: str, *, prefix: str = "sipmesh:ul:", client: Any = None,
                 ping_all: bool = False) -> None:
        super().__init__(url, prefix=prefix, client=client)
        self.ping_all = ping_all
        self.partitions = PARTITIONS

    def _loc(self, aor: str) -> str:
        return f"{self.prefix}loc:{aor}"

    def _ping(self, aor: str) -> str:
        return f"{self.prefix}ping:{partition_of(aor, self.partitions)}"

    def _pinged(self, b: Binding) -> bool:
        return self.ping_all or bool(b.received)

    @property
    def _layout(self) -> str:
        return f"{self.partitions}:{'all' if self.ping_all else 'nat'}"

    async def open(self) -> None:
        await super().open()
        built = await self.r.get(f"{self.prefix}pingidx")
        if built is None or built.decode() != self._layout:
            await self.rebuild_ping_index()

    async def rebuild_ping_index(self) -> None:
        """Rewrites the ping index from the table (once per layout change; a binding
        written meanwhile by another node is rewritten by its next change at the latest,
        and a stale entry only costs pings that go unanswered until the binding is
        removed, which deletes the entry)."""
        bindings = await self.load(0.0)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(*(f"{self.prefix}ping:{n}" for n in range(self.partitions)))
        for b in bindings:
            if self._pinged(b):
                pipe.hset(self._ping(b.aor), json.dumps([b.aor, b.key]), _encode(b))
        pipe.set(f"{self.prefix}pingidx", self._layout)
        await pipe.execute()

    async def load_partitions(self, partitions: Iterable[int], now: float) -> list[Binding]:
        """The live bindings of the ping index in `partitions` (direct reads, one
        HVALS per partition in one round trip)."""
        parts = list(partitions)
        if not parts:
            return []
        pipe = self.r.pipeline(transaction=False)
        for n in parts:
            pipe.hvals(f"{self.prefix}ping:{n}")
        return [b for values in await pipe.execute() for b in map(_decode, values)
                if _alive(b, now)]

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
            member = json.dumps([aor, key])
            pipe.hdel(self._loc(aor), key)
            pipe.zrem(f"{self.prefix}exp", member)
            pipe.hdel(self._ping(aor), member)
        for b in upserts:
            member = json.dumps([b.aor, b.key])
            data = _encode(b)
            pipe.hset(self._loc(b.aor), b.key, data)
            pipe.sadd(f"{self.prefix}aors", b.aor)
            pipe.zadd(f"{self.prefix}exp", {member: b.expires if b.expires else math.inf})
            if self._pinged(b):
                pipe.hset(self._ping(b.aor), member, data)
            else:  # it may have been natted before (registered again from elsewhere)
                pipe.hdel(self._ping(b.aor), member)
        await pipe.execute()

    async def replace_all(self, bindings: Iterable[Binding]) -> None:
        await self.clear()
        await self.write(list(bindings), [])
        await self.r.set(f"{self.prefix}pingidx", self._layout)  # write() built the index

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
            pipe.hdel(self._ping(aor), m)
        pipe.zrem(f"{self.prefix}exp", *members)
        results = await pipe.execute()
        return sum(int(x) for x in results[:-1:2])  # the `loc` deletions

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

    async def reconcile(self, home: str, held: set[str]) -> tuple[int, int]:
        """Makes `home` listed for exactly the AORs in `held`: (published, withdrawn)."""
        ...

    async def beat(self, home: str | None, ttl: float) -> set[str]:
        """Marks `home` alive for `ttl` s (None: only reads); the homes alive now."""
        ...

    async def close(self) -> None: ...


class MemoryAorDirectory:
    """Embedded backend (one process: a single point of presence, or tests)."""

    def __init__(self) -> None:
        self.rows: dict[str, set[str]] = {}
        self.alive: dict[str, float] = {}  # home -> until (monotonic)

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

    async def reconcile(self, home: str, held: set[str]) -> tuple[int, int]:
        listed = {aor for aor, homes in self.rows.items() if home in homes}
        for aor in listed - held:
            await self.withdraw(aor, home)
        for aor in held - listed:
            await self.publish(aor, home)
        return len(held - listed), len(listed - held)

    async def beat(self, home: str | None, ttl: float) -> set[str]:
        now = time.monotonic()
        if home is not None:
            self.alive[home] = now + ttl
        return {h for h, until in self.alive.items() if until > now}

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

    async def reconcile(self, home: str, held: set[str]) -> tuple[int, int]:
        """One SCAN of the `fed:` keys (at start only), SISMEMBER of each in pipelines,
        then the SREMs and SADDs in one pipeline."""
        start = len(f"{self.prefix}fed:")
        listed: set[str] = set()
        keys = [k async for k in self.r.scan_iter(match=f"{self.prefix}fed:*", count=1000)]
        for i in range(0, len(keys), 1000):
            part = keys[i:i + 1000]
            pipe = self.r.pipeline(transaction=False)
            for key in part:
                pipe.sismember(key, home)
            listed.update(k.decode()[start:] for k, there in zip(
                part, await pipe.execute(), strict=True) if there)
        stale, missing = listed - held, held - listed
        pipe = self.r.pipeline(transaction=False)
        for aor in stale:
            pipe.srem(f"{self.prefix}fed:{aor}", home)
        for aor in missing:
            pipe.sadd(f"{self.prefix}fed:{aor}", home)
        if stale or missing:
            await pipe.execute()
        return len(missing), len(stale)

    # Liveness of the homes: hash {p}homes, field = home, value = until when it is alive
    # (ms, the Redis server's clock, so the PoPs' clocks need not agree).
    _BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2])) end
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > now then out[#out + 1] = all[i] end
end
return out
"""

    async def beat(self, home: str | None, ttl: float) -> set[str]:
        alive = await self.r.eval(self._BEAT, 1, f"{self.prefix}homes", home or "",
                                  int(ttl * 1000))
        return {h.decode() for h in alive}

    async def clear(self) -> None:
        keys = [k async for k in self.r.scan_iter(match=f"{self.prefix}fed:*", count=500)]
        keys.append(f"{self.prefix}homes")
        await self.r.delete(*keys)


class DirectoryPublisher:
    """Keeps this point of presence's entries of an `AorDirectory` true, off the hot path.

    * AOR insert/delete noted by usrloc (`note`) are applied in order by one task; a failed
      write is retried (the newest state of that AOR winning), so a Redis restart does not
      leave a PoP unreachable for the AORs registered meanwhile.
    * `reconcile(held)` (once this node holds its PoP's data: after the full sync from a
      node of the same PoP, or at start when nothing is synced) makes the directory list
      this home for exactly the AORs held: a node that restarted empty withdraws the
      entries of its previous life, so no other PoP sends it calls it cannot deliver.
      Notes taken meanwhile are applied after it, so they win.
    * Every `ttl`/3 s the task marks this home alive for `ttl` s (only once reconciled)
      and reads which homes are alive (`live`): a PoP whose registrars are all gone stops
      being alive after `ttl` s, and lookups give it no branch (`UserLocation.remote_homes`).
    """

    def __init__(self, directory: AorDirectory, home: str, *, retry: float = 1.0,
                 ttl: float = 10.0) -> None:
        self.directory = directory
        self.home = home
        self.retry = retry
        self.ttl = ttl
        self.pending: dict[str, bool] = {}  # aor -> present (insertion-ordered)
        self.reconciled = False
        self.live: set[str] | None = None  # homes alive (None: not read yet)
        self.log = structlog.get_logger("registrar.cachedb")
        self._held: Callable[[], set[str]] | None = None  # a reconcile is wanted
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._beats = 0  # heartbeats started
        self._beat_applied = 0  # the newest heartbeat whose answer is in `live`

    def note(self, aor: str, present: bool) -> None:
        self.pending.pop(aor, None)
        self.pending[aor] = present
        self._idle.clear()
        self._wake.set()

    def reconcile(self, held: Callable[[], set[str]]) -> None:
        """Asks for a reconcile with the AORs `held()` returns when it runs."""
        self._held = held
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Waits until every noted change (and a requested reconcile) is in the directory."""
        await self._idle.wait()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._beat())]

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._held is not None:
                held = self._held
                try:
                    added, removed = await self.directory.reconcile(self.home, held())
                except Exception as exc:
                    self.log.warning("directory_reconcile_failed", error=repr(exc))
                    await asyncio.sleep(self.retry)
                    continue
                if self._held is held:
                    self._held = None
                self.reconciled = True
                self.log.info("directory_reconciled", home=self.home, published=added,
                              withdrawn=removed)
                await self._heartbeat()  # alive again at once
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
            if self._held is None and not self.pending:
                self._idle.set()

    async def _heartbeat(self) -> None:
        # Two beats can be under way at once (the periodic one, and the one a reconcile
        # makes): an answer is kept only if no later-started beat's answer is in `live`.
        # Else the periodic beat that read before the reconcile, answering last, put back
        # a `live` without this home (seen on Redis: contract test, ~1 run in 25).
        self._beats += 1
        mine = self._beats
        try:
            live = await self.directory.beat(self.home if self.reconciled else None,
                                             self.ttl)
        except Exception as exc:
            self.log.warning("directory_beat_failed", error=repr(exc))
            return
        if mine > self._beat_applied:
            self._beat_applied = mine
            self.live = live

    async def _beat(self) -> None:
        while True:
            await self._heartbeat()
            await asyncio.sleep(self.ttl / 3)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
