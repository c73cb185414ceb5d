"""The asyncio ESL client against the fake FreeSWITCH, with faults: links dropped,
refused, stalled, split frames, late answers, wrong passwords, a restarted FreeSWITCH.

Nothing sleeps to synchronise: each test polls an observable (the client's state, the
fake's connections and authentications) with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from services.freeswitch.boxes import parse_fs_url
from services.freeswitch.client import (
    DOWN,
    UP,
    ClientConfig,
    EslClient,
    EslTimeout,
    EslUnavailable,
    backoff_delay,
)
from services.freeswitch.esl import Event
from services.freeswitch.testing.fake_freeswitch import FakeFreeswitch, Load

BACKOFF = 0.3  # backoff_initial of these tests (s)


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)  # polling an observable, bounded by the timeout
    assert predicate(), what


@pytest.fixture
async def fake() -> AsyncIterator[FakeFreeswitch]:
    f = await FakeFreeswitch(heartbeat_interval=0.1, load=Load(5, 100, 80.0)).start()
    yield f
    await f.stop()


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, _client: EslClient, event: Event) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]


def make_client(fake: FakeFreeswitch, rec: Recorder, *, password: str | None = None,
                **cfg: float) -> EslClient:
    spec = parse_fs_url(fake.url)
    if password is not None:
        spec = parse_fs_url(f"fs://:{password}@{fake.host}:{fake.port}")
    config = ClientConfig(**{"backoff_initial": BACKOFF, "backoff_max": 2.0,
                             "heartbeat_timeout": 1.0, "connect_timeout": 2.0, **cfg})
    client = EslClient(spec, ["HEARTBEAT", "BACKGROUND_JOB", "CHANNEL_CREATE", "CUSTOM"],
                       config, on_event=rec)
    client.start()
    return client


@pytest.fixture
async def linked(fake: FakeFreeswitch) -> AsyncIterator[tuple[EslClient, Recorder]]:
    rec = Recorder()
    client = make_client(fake, rec)
    await until(lambda: client.up, what="link up")
    yield client, rec
    await client.stop()


async def test_api_bgapi_and_events(fake: FakeFreeswitch,
                                    linked: tuple[EslClient, Recorder]) -> None:
    client, rec = linked
    assert (await client.api("status")).body.startswith("UP ")
    job, result = await client.bgapi("show calls")
    assert f"Job-UUID: {job}" in "\n".join(fake.commands) or any(
        c.startswith("bgapi show calls") for c in fake.commands)
    assert (await asyncio.wait_for(result, 5)).endswith("0 total.\n")
    call = fake.add_call(cid_num="1001")
    await until(lambda: any(e.headers.get("Unique-ID") == call
                            for e in rec.named("CHANNEL_CREATE")))
    await until(lambda: client.heartbeat is not None)
    assert client.heartbeat is not None
    assert (client.heartbeat.session_count, client.heartbeat.max_sessions,
            client.heartbeat.idle_cpu) == (6, 100, 80.0)


async def test_split_frames_and_non_ascii_bodies(fake: FakeFreeswitch,
                                                 linked: tuple[EslClient, Recorder]) -> None:
    client, rec = linked
    fake.split_writes = True  # every message 3 bytes at a time: UTF-8 cut mid-character
    text = "Grüße aus Zürich — ☎ 日本語"
    assert (await client.api(f"echo {text}")).body == text
    fake.fire("CUSTOM", {"Caller-ID-Name": "Ærøskøbing ☎"}, "body: naïve",
              subclass="sipmesh::test")
    await until(lambda: bool(rec.named("CUSTOM")))
    [ev] = rec.named("CUSTOM")
    assert ev.headers["Caller-ID-Name"] == "Ærøskøbing ☎" and ev.body == "body: naïve"


async def test_a_late_answer_never_reaches_the_next_caller(
        fake: FakeFreeswitch) -> None:
    rec = Recorder()
    client = make_client(fake, rec, command_timeout=0.5)
    try:
        await until(lambda: client.up)
        fake.api_delay = 0.7  # answered 0.2 s after the timeout, 0.3 s before the next one's
        with pytest.raises(EslTimeout):
            await client.api("echo first")
        fake.api_delay = 0.0
        # The box answers "first" late, then this one: each to its own caller.
        assert (await client.api("echo second")).body == "second"
        assert (await client.api("echo third")).body == "third"
    finally:
        await client.stop()


async def test_drop_reconnects_within_the_backoff_and_resubscribes(
        fake: FakeFreeswitch, linked: tuple[EslClient, Recorder]) -> None:
    client, rec = linked
    before = [fake.fire("CUSTOM", {"n": str(i)}, subclass="sipmesh::seq") for i in range(20)]
    await until(lambda: len(rec.named("CUSTOM")) == 20)
    dropped = time.monotonic()
    auths = len(fake.auth_times)
    fake.drop_connections()
    await until(lambda: client.state != UP)
    with pytest.raises(EslUnavailable):
        await client.api("status")  # never queued while the box is away
    await until(lambda: client.up and len(fake.auth_times) > auths, timeout=5)
    took = fake.auth_times[-1] - dropped
    # The first redial comes after a delay drawn in [B/2, B]; connect + auth on loopback
    # take milliseconds (0.25 s allowed for a loaded machine).
    assert took <= BACKOFF + 0.25, f"reconnected after {took:.3f} s"
    assert client.last_redial_delay <= BACKOFF
    # Re-subscribed: events fired now arrive again.
    after = [fake.fire("CUSTOM", {"n": str(i)}, subclass="sipmesh::seq") for i in range(20)]
    await until(lambda: len(rec.named("CUSTOM")) == 40)
    got = [e.sequence for e in rec.named("CUSTOM")]
    assert got == before + after  # each once, in order
    assert client.losses == 1 and client.connects == 2


async def test_duplicated_events_are_delivered_once(
        fake: FakeFreeswitch, linked: tuple[EslClient, Recorder]) -> None:
    client, rec = linked
    fake.duplicate_events = True
    fired = [fake.fire("CUSTOM", {"n": str(i)}, subclass="sipmesh::dup") for i in range(10)]
    await until(lambda: client.duplicates >= 10)
    assert [e.sequence for e in rec.named("CUSTOM")] == fired


async def test_a_restarted_freeswitch_numbers_afresh_and_nothing_is_lost(
        fake: FakeFreeswitch, linked: tuple[EslClient, Recorder]) -> None:
    client, rec = linked
    first = [fake.fire("CUSTOM", {}, subclass="sipmesh::r") for _ in range(5)]
    await until(lambda: len(rec.named("CUSTOM")) == 5)
    auths = len(fake.auth_times)
    fake.restart_process()  # new Core-UUID, Event-Sequence from 1 again
    await until(lambda: client.up and len(fake.auth_times) > auths)
    second = [fake.fire("CUSTOM", {}, subclass="sipmesh::r") for _ in range(5)]
    await until(lambda: len(rec.named("CUSTOM")) == 10)
    assert [e.sequence for e in rec.named("CUSTOM")] == first + second
    assert client.duplicates == 0


async def test_a_stalled_link_is_declared_stale_and_redialled(
        fake: FakeFreeswitch, linked: tuple[EslClient, Recorder]) -> None:
    client, rec = linked
    await until(lambda: client.heartbeat is not None)
    auths = len(fake.auth_times)
    fake.stall()  # the TCP connection stays open; nothing comes out of it
    stalled = time.monotonic()
    fired = [fake.fire("CUSTOM", {}, subclass="sipmesh::st") for _ in range(3)]
    await until(lambda: client.state != UP, timeout=5)
    assert time.monotonic() - stalled >= 0.9  # the heartbeat_timeout (1 s), not sooner
    assert "stale" in client.last_error
    await until(lambda: client.up and len(fake.auth_times) > auths, timeout=5)
    fake.unstall()  # the old connection's backlog: it was closed by the client
    later = [fake.fire("CUSTOM", {}, subclass="sipmesh::st") for _ in range(3)]
    await until(lambda: len(rec.named("CUSTOM")) >= 3)
    await client.api("status")  # a round trip: anything the fake had queued is in
    got = [e.sequence for e in rec.named("CUSTOM")]
    assert got == later, (got, fired)  # those fired into the stalled link are lost, once


async def test_refused_then_back(fake: FakeFreeswitch,
                                 linked: tuple[EslClient, Recorder]) -> None:
    client, _ = linked
    await fake.stop_listening()
    fake.drop_connections()
    await until(lambda: client.state == DOWN and "connect" in client.last_error, timeout=5)
    await fake.start_listening()
    await until(lambda: client.up, timeout=5)


async def test_a_wrong_password_backs_off_and_recovers_when_fixed(
        fake: FakeFreeswitch) -> None:
    rec = Recorder()
    client = make_client(fake, rec, password="wrong")
    try:
        await until(lambda: fake.auth_failures >= 3, timeout=10)
        assert not client.up and "authentication refused" in client.last_error
        # Redials back off: the n-th delay is drawn in [B 2^n / 2, B 2^n].
        t = fake.auth_failure_times
        assert t[1] - t[0] >= BACKOFF / 2 - 0.01 and t[2] - t[1] >= BACKOFF - 0.01
        fake.password = "wrong"  # the operator sets the password the bridge uses
        await until(lambda: client.up, timeout=10)
    finally:
        await client.stop()


def test_backoff_doubles_to_its_cap_and_stays_in_the_upper_half() -> None:
    assert backoff_delay(0, 0.5, 10, 0.0) == 0.25
    assert backoff_delay(0, 0.5, 10, 0.999999) == pytest.approx(0.5, abs=1e-5)
    assert backoff_delay(3, 0.5, 10, 1.0) == 4.0
    assert backoff_delay(10, 0.5, 10, 1.0) == 10.0
    assert backoff_delay(1000, 0.5, 10, 0.0) == 5.0
