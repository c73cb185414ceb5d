"""The full-sharing-cachedb ping index (`{p}ping:{n}`) against the real Redis at
127.0.0.1:6379: it holds exactly the bindings NAT pinging wants, each in its AOR's hash
partition; the partitions of two nodes together give every such binding once; reading a
node's share touches only its partitions' keys (seen with Redis MONITOR); an older table
without the index gets it built at open.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.registrar.cachedb import RedisLocationTable
from services.registrar.location import Binding
from services.registrar.natping import PARTITIONS, owned_partitions, owner_index, partition_of

REDIS = "redis://127.0.0.1:6379/0"
T0 = 1_800_000_000.0


def binding(user: int, *, natted: bool = True, expires: float = T0 + 600,
            uri: str = "") -> Binding:
    return Binding(aor=f"u{user}@example.com", uri=uri or f"sip:u{user}@10.0.0.{user % 250}",
                   expires=int(expires), callid=f"c{user}", cseq=1, last_modified=T0,
                   received="sip:198.51.100.7:4000" if natted else "",
                   socket="udp:127.0.0.1:5060")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test:pi{uuid.uuid4().hex[:10]}:"
    yield name
    client = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(match=f"{name}*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@contextlib.asynccontextmanager
async def opened(prefix: str, **kw: bool) -> AsyncIterator[RedisLocationTable]:
    table = RedisLocationTable(REDIS, prefix=prefix, **kw)
    await table.open()
    try:
        yield table
    finally:
        await table.close()


def uris(bindings: list[Binding]) -> list[str]:
    return sorted(b.uri for b in bindings)


async def share(table: RedisLocationTable, index: int, count: int) -> list[Binding]:
    return await table.load_partitions(owned_partitions(index, count), T0)


async def test_partitions_hold_the_natted_bindings_each_once(prefix: str) -> None:
    natted = [binding(n) for n in range(40)]
    plain = [binding(n, natted=False, uri=f"sip:plain{n}@10.1.0.1") for n in range(40)]
    async with opened(prefix) as table:
        await table.write(natted + plain, [])
        first, second = await share(table, 0, 2), await share(table, 1, 2)
        assert uris(first + second) == uris(natted), "every natted binding once, no other"
        assert all(partition_of(b.aor) % 2 == 0 for b in first)
        assert all(partition_of(b.aor) % 2 == 1 for b in second)
        thirds = [await share(table, i, 3) for i in range(3)]
        assert uris([b for part in thirds for b in part]) == uris(natted)
        assert await share(table, -1, 2) == [], "a node not synced reads nothing"

        # Registered again from its own address: no longer natted, out of the index.
        await table.write([binding(1, natted=False)], [])
        # Removed, and expired (purged): out of the index too.
        await table.write([], [(natted[2].aor, natted[2].key)])
        await table.write([binding(3, expires=T0 - 5)], [])
        assert await table.purge(T0) == 1
        everything = await share(table, 0, 1)
        assert uris(everything) == uris(natted[4:] + natted[:1])
        # The index carries the binding as the table has it (a latency written back).
        await table.write([dataclasses.replace(natted[0], latency=1234)], [])
        [again] = [b for b in await share(table, 0, 1) if b.aor == natted[0].aor]
        assert again.latency == 1234


async def test_ping_all_indexes_every_binding(prefix: str) -> None:
    bindings = [binding(n, natted=n % 2 == 0) for n in range(10)]
    async with opened(prefix, ping_all=True) as table:
        await table.write(bindings, [])
        assert uris(await share(table, 0, 1)) == uris(bindings)


async def test_an_older_table_gets_its_index_built_at_open(prefix: str) -> None:
    natted = [binding(n) for n in range(6)]
    plain = [binding(n, natted=False, uri=f"sip:plain{n}@10.1.0.1") for n in range(6)]
    async with opened(prefix) as table:
        await table.write(natted + plain, [])
        # As a version before the index left it: bindings, no index, no layout mark.
        await table.r.delete(*(f"{prefix}ping:{n}" for n in range(PARTITIONS)),
                             f"{prefix}pingidx")
        assert await share(table, 0, 1) == []
    async with opened(prefix) as table:
        assert uris(await share(table, 0, 1)) == uris(natted)
    async with opened(prefix, ping_all=True) as table:  # ping_nated_only turned off
        assert uris(await share(table, 0, 1)) == uris(natted + plain)
    async with opened(prefix) as table:  # and on again
        assert uris(await share(table, 0, 1)) == uris(natted)


async def test_reading_a_share_touches_only_its_partition_keys(prefix: str) -> None:
    async with opened(prefix) as table:
        await table.write([binding(n) for n in range(100)], [])
        watcher = await asyncio.create_subprocess_exec(
            "redis-cli", "-u", REDIS, "monitor", stdout=asyncio.subprocess.PIPE)
        assert watcher.stdout is not None
        try:
            assert (await asyncio.wait_for(watcher.stdout.readline(), 10)).strip() == b"OK"
            await share(table, 1, 4)
            await table.r.get(f"{prefix}end-of-test")  # marks the end of the reads
            seen: list[str] = []
            while not seen or "end-of-test" not in seen[-1]:
                line = (await asyncio.wait_for(watcher.stdout.readline(), 10)).decode()
                if prefix in line:
                    seen.append(line)
        finally:
            watcher.terminate()
            await watcher.wait()
    reads = [line.split('"')[1::2] for line in seen[:-1]]
    assert all(cmd == "HVALS" for cmd, _ in reads), reads
    assert sorted(int(key.rpartition(":")[2]) for _, key in reads) == owned_partitions(1, 4)
    assert all(key.startswith(f"{prefix}ping:") for _, key in reads)


def test_every_partition_and_every_aor_has_exactly_one_owner() -> None:
    aors = [f"user{n}@example.com" for n in range(500)]
    for count in (1, 2, 3, 5, 64, 70):
        shares = [owned_partitions(i, count) for i in range(count)]
        assert sorted(p for share in shares for p in share) == list(range(PARTITIONS))
        for aor in aors:
            owners = [i for i in range(count) if owner_index(aor, count) == i]
            assert len(owners) == 1
            assert partition_of(aor) in shares[owners[0]]
