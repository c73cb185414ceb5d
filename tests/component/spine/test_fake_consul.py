"""The fake Consul agent, driven by py-consul's own asyncio client, behaves as Consul's
HTTP API documentation says (the parts SipMesh uses: services, TTL checks, health,
blocking queries, KV with cas/acquire/release, sessions)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import consul
import consul.aio
import pytest

from shared.discovery.testing.fake_consul import FakeConsul, parse_duration
from tests.support.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Agent = tuple[FakeConsul, consul.aio.Consul, "Clock"]


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    clock = Clock()
    fake = FakeConsul(clock)
    addr = await fake.start()
    host, port = addr.split(":")
    client = consul.aio.Consul(host=host, port=int(port))
    yield fake, client, clock
    await client.close()
    await fake.stop()


async def test_ttl_check_starts_critical_and_passes_on_update(agent: Agent) -> None:
    _fake, c, clock = agent
    assert await c.agent.service.register("edge", service_id="e1", address="127.0.0.1",
                                          port=5060, check=consul.Check.ttl("10s"))
    _, nodes = await c.health.service("edge")
    assert [ch["Status"] for ch in nodes[0]["Checks"] if ch["CheckID"] == "service:e1"] == [
        "critical"]
    assert (await c.health.service("edge", passing=True))[1] == []
    assert await c.agent.check.ttl_pass("service:e1")
    assert len((await c.health.service("edge", passing=True))[1]) == 1
    clock.now += 10
    assert (await c.health.service("edge", passing=True))[1] == []
    assert not await c.agent.check.ttl_pass("service:nobody")


async def test_re_registering_keeps_the_check_status_and_output(agent: Agent) -> None:
    """As Consul (hashicorp/consul#868): a service re-registered (new metadata) keeps the
    state of its check instead of flapping back to critical."""
    fake, c, _ = agent
    assert await c.agent.service.register("edge", service_id="e1", check=consul.Check.ttl("10s"))
    assert await c.agent.check.ttl_pass("service:e1", notes="all good")
    assert await c.agent.service.register("edge", service_id="e1", meta={"ready": "1"},
                                          check=consul.Check.ttl("10s"))
    assert len((await c.health.service("edge", passing=True))[1]) == 1
    assert fake.checks["service:e1"].output == "all good"
    assert await c.agent.service.deregister("e1")
    assert await c.agent.service.register("edge", service_id="e1", check=consul.Check.ttl("10s"))
    assert (await c.health.service("edge", passing=True))[1] == []  # new again: critical


async def test_register_keys_are_case_insensitive_and_checks_numbered(agent: Agent) -> None:
    fake, _, _ = agent
    async with aiohttp.ClientSession() as http:
        body = {"NAME": "reg", "Id": "r1", "port": 1,
                "Checks": [{"TTL": "5s"}, {"ttl": "5s", "Status": "passing"}]}
        async with http.put(f"http://127.0.0.1:{fake.port}/v1/agent/service/register",
                            json=body) as resp:
            assert resp.status == 200
    assert set(fake.checks) == {"service:r1:1", "service:r1:2"}
    assert fake.checks["service:r1:2"].status == "passing"


async def test_blocking_query_waits_for_a_change(agent: Agent) -> None:
    fake, c, _ = agent
    index, _ = await c.health.service("dlg")
    waiter = asyncio.create_task(c.health.service("dlg", index=index, wait="5s"))
    # Condition: the blocking query has reached the fake.
    await eventually(lambda: fake.requests.count(("GET", "/v1/health/service/dlg")) >= 2, 3,
                     "the blocking query")
    assert not waiter.done()  # it is held open while nothing changes
    await c.agent.service.register("dlg", service_id="d1")
    new_index, nodes = await asyncio.wait_for(waiter, 5)
    assert int(new_index) > int(index) and nodes[0]["Service"]["ID"] == "d1"


async def test_kv_cas_and_recurse(agent: Agent) -> None:
    _, c, _ = agent
    assert await c.kv.put("mesh/a", "1", cas=0)
    assert not await c.kv.put("mesh/a", "2", cas=0)  # cas=0: create only
    _, entry = await c.kv.get("mesh/a")
    assert entry["Value"] == b"1"
    assert not await c.kv.put("mesh/a", "3", cas=entry["ModifyIndex"] + 99)
    assert await c.kv.put("mesh/a", "3", cas=entry["ModifyIndex"])
    await c.kv.put("mesh/b", "x")
    _, entries = await c.kv.get("mesh/", recurse=True)
    assert [(e["Key"], e["Value"]) for e in entries] == [("mesh/a", b"3"), ("mesh/b", b"x")]
    assert await c.kv.delete("mesh/", recurse=True)
    assert (await c.kv.get("mesh/a"))[1] is None


async def test_locks_with_sessions_and_ttl_release(agent: Agent) -> None:
    _, c, clock = agent
    s1 = await c.session.create(name="leader-1", ttl=10, lock_delay=0)
    s2 = await c.session.create(name="leader-2", ttl=10, lock_delay=0)
    assert await c.kv.put("service/dialog/leader", "node1", acquire=s1)
    assert not await c.kv.put("service/dialog/leader", "node2", acquire=s2)
    assert not await c.kv.put("service/dialog/leader", "x", release=s2)
    _, held = await c.kv.get("service/dialog/leader")
    assert held["Session"] == s1 and held["LockIndex"] == 1
    clock.now += 5
    assert await c.session.renew(s1)
    clock.now += 9  # 14 s after creation, 9 after renewal: s1 alive, s2 expired
    assert (await c.session.info(s1))[1] is not None
    assert (await c.session.info(s2))[1] is None
    clock.now += 2  # s1 expires: its lock is released, value kept (behavior=release)
    _, free = await c.kv.get("service/dialog/leader")
    assert "Session" not in free and free["Value"] == b"node1"
    s3 = await c.session.create(ttl=10, behavior="delete")
    assert await c.kv.put("eph", "v", acquire=s3)
    assert await c.session.destroy(s3)
    assert (await c.kv.get("eph"))[1] is None


def test_go_durations() -> None:
    assert parse_duration("10s") == 10 and parse_duration("1m") == 60
    assert parse_duration("500ms") == 0.5 and parse_duration("15") == 15
    with pytest.raises(ValueError):
        parse_duration("soon")
