"""SaveWithDigest in one trip to SQLite's thread (issue 22, docs/perf.md seventh round):
with the default stores (write-through location table in the subscribers' SQLite file),
the calls of one Session message have their subscribers read, their digests checked and
the bindings they allow stored in one trip, over a real loopback gRPC stream.

A right password is answered 200 with its binding already stored, a wrong one or an
unknown user 401 (digest rejected) with nothing stored; a second REGISTER of the same AOR
in the message (the whole message then), and a REGISTER whose AOR changed while the
trip ran, go the usual way; a message that comes while the previous message's trip still
runs takes one trip too, after it and the SQL copy ends as the table in memory is; a trip that
fails answers 503 and changes nothing."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from services.registrar import persistence
from services.registrar.location import Location
from services.registrar.persistence import LocationWriter, SQLiteLocationTable
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.sip.digest import compute_response
from tests.component.registrar.test_session_stream import Stream, serve
from tests.support.waiting import eventually

NONCE = "6f1a2b3c4d5e6f708192a3b4c5d6e7f8"
URI = "sip:example.com"


def save_with_digest(call_id: int, user: str, password: str, *, contact_port: int = 5062,
                     cseq: int = 1) -> Any:
    message = (
        f"REGISTER {URI} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:{contact_port};branch=z9hG4bK1\r\n"
        f"From: <sip:{user}@example.com>;tag=1\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: c-{user}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@10.0.0.5:{contact_port}>\r\nExpires: 120\r\n"
        f"Content-Length: 0\r\n\r\n").encode()
    response = compute_response(username=user, password=password, realm="example.com",
                                method="REGISTER", uri=URI, nonce=NONCE, qop="auth",
                                nc="00000001", cnonce="c1")
    return pb.SessionRequest(id=call_id, save_with_digest=pb.SaveRequest(
        message=message, source_host="10.0.0.5", source_port=contact_port, transport="udp",
        socket="udp:127.0.0.1:5060", digest=pb.Digest(
            username=user, realm="example.com", nonce=NONCE, uri=URI, response=response,
            algorithm="MD5", qop="auth", nc="00000001", cnonce="c1")))


@dataclass
class Registrar:
    ul: UserLocation
    table: SQLiteLocationTable
    writer: LocationWriter
    stream: Stream

    async def stored(self) -> dict[str, list[str]]:
        rows: dict[str, list[str]] = {}
        for b in await self.table.load(0):
            rows.setdefault(b.aor, []).append(b.uri)
        return {aor: sorted(uris) for aor, uris in rows.items()}

    def in_memory(self) -> dict[str, list[str]]:
        return {aor: sorted(b.uri for b in bs) for aor, bs in self.ul.location.records.items()}


@pytest.fixture
async def registrar(tmp_path: Path) -> AsyncIterator[Registrar]:
    path = tmp_path / "s.sqlite"  # subscribers and location in one file: the default
    store = SQLiteSubscribers(path)
    await store.open()
    for user in ("alice", "bob"):
        await store.add(user, "example.com", f"{user}-pw")
    table = SQLiteLocationTable(path)
    await table.open()
    writer = LocationWriter(table, write_through=True)
    writer.start()
    ul = UserLocation(Location(), store, writer=writer)
    server, channel, stub = await serve(ul)
    try:
        yield Registrar(ul, table, writer, Stream(stub))
    finally:
        await channel.close()
        await server.stop(0)
        await writer.stop()
        await table.close()
        await store.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions run on aiosqlite's threads (subscribers' and location's), in order."""
    seen: list[str] = []
    execute = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any,
                      **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await execute(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


@pytest.fixture
def held_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The location table's commits wait on SQLite's thread until the event is set (the
    test sets it; teardown too, so that a failed test leaves no thread waiting)."""
    release = threading.Event()
    commit = persistence._commit

    def held(conn: Any, statements: list[tuple[str, list[Any]]]) -> None:
        assert release.wait(10)
        commit(conn, statements)

    monkeypatch.setattr(persistence, "_commit", held)
    yield release
    release.set()


async def test_a_message_is_checked_and_stored_in_one_trip(registrar: Registrar,
                                                           trips: list[str]) -> None:
    registrar.stream.send(save_with_digest(1, "alice", "alice-pw"),
                          save_with_digest(2, "bob", "wrong"),
                          save_with_digest(3, "carol", "carol-pw"))
    got = await registrar.stream.replies(3)
    assert trips == ["read_then_write"]  # not a subscriber lookup, then a write
    assert got[1].save_with_digest.status == 200
    assert [(got[i].save_with_digest.status, got[i].save_with_digest.digest_rejected)
            for i in (2, 3)] == [(401, True), (401, True)]
    # stored before the 200 left, and only what a right digest allowed
    assert await registrar.stored() == {"alice@example.com": ["sip:alice@10.0.0.5:5062"]}
    assert registrar.in_memory() == await registrar.stored()
    assert registrar.writer.writes == 1 and registrar.ul.stats["digest_rejected"] == 2
    # The subscribers read are cached as before: alice again costs a write trip only.
    del trips[:]
    registrar.stream.send(save_with_digest(4, "alice", "alice-pw", cseq=2))
    assert (await registrar.stream.replies(1))[4].save_with_digest.status == 200
    assert trips == ["read_then_write"]


async def test_a_message_while_the_previous_trip_runs_takes_one_trip_after_it(
        registrar: Registrar, trips: list[str], held_commit: threading.Event) -> None:
    # The first message's commit is held on SQLite's thread until the second message is
    # waiting for the table: the second queues its own trip behind it, rather than a
    # subscriber lookup, a save and a write of the writer's.
    registrar.stream.send(save_with_digest(1, "alice", "alice-pw"))
    await eventually(lambda: registrar.table.busy, what="the first trip running")
    registrar.stream.send(save_with_digest(2, "bob", "bob-pw"))
    await eventually(lambda: registrar.table.queued == 2,
                     what="the second message waiting for the table")
    assert registrar.ul.stats["saves"] == 0  # nothing answered yet
    held_commit.set()
    got = await registrar.stream.replies(2)
    assert [got[i].save_with_digest.status for i in (1, 2)] == [200, 200]
    assert trips == ["read_then_write", "read_then_write"]
    assert registrar.writer.writes == 2  # the two trips' transactions, nothing else
    assert await registrar.stored() == {"alice@example.com": ["sip:alice@10.0.0.5:5062"],
                                        "bob@example.com": ["sip:bob@10.0.0.5:5062"]}


async def test_with_a_trip_running_and_one_waiting_a_message_goes_the_usual_way(
        registrar: Registrar, trips: list[str], held_commit: threading.Event) -> None:
    # The table is behind: a third trip would queue too (one transaction per message);
    # the usual way's writes are gathered by the writer for every message meanwhile.
    await registrar.ul.store.add("carol", "example.com", "carol-pw")
    registrar.stream.send(save_with_digest(1, "alice", "alice-pw"))
    await eventually(lambda: registrar.table.busy, what="the first trip running")
    registrar.stream.send(save_with_digest(2, "bob", "bob-pw"))
    await eventually(lambda: registrar.table.queued == 2, what="the second trip waiting")
    registrar.stream.send(save_with_digest(3, "carol", "carol-pw"))
    # carol's subscriber looked up, saved in memory, the writer's transaction waiting
    await eventually(lambda: registrar.table.queued == 3, what="the writer waiting")
    assert "carol@example.com" in registrar.in_memory()
    held_commit.set()
    got = await registrar.stream.replies(3)
    assert [got[i].save_with_digest.status for i in (1, 2, 3)] == [200, 200, 200]
    assert trips.count("read_then_write") == 2 and trips[-1] == "run"  # the writer's
    assert await registrar.stored() == registrar.in_memory()
    assert len(registrar.in_memory()) == 3


async def test_a_second_register_of_an_aor_in_the_message_goes_the_usual_way(
        registrar: Registrar, trips: list[str]) -> None:
    registrar.stream.send(save_with_digest(1, "alice", "alice-pw", contact_port=5062),
                          save_with_digest(2, "alice", "alice-pw", contact_port=5064, cseq=2))
    got = await registrar.stream.replies(2)
    assert [got[i].save_with_digest.status for i in (1, 2)] == [200, 200]
    assert "read_then_write" not in trips  # the subscriber's lookup, then the writer's
    both = ["sip:alice@10.0.0.5:5062", "sip:alice@10.0.0.5:5064"]
    assert registrar.in_memory() == {"alice@example.com": both}
    assert await registrar.stored() == {"alice@example.com": both}  # before the 200s


async def test_an_aor_changed_during_the_trip_is_saved_again_and_stored_as_in_memory(
        registrar: Registrar, monkeypatch: pytest.MonkeyPatch) -> None:
    registrar.stream.send(save_with_digest(1, "alice", "alice-pw", contact_port=5062))
    assert (await registrar.stream.replies(1))[1].save_with_digest.status == 200
    trip = registrar.table.read_then_write

    async def meanwhile(*args: Any) -> Any:  # an operator removes alice as the trip runs
        assert registrar.ul.remove_aor("alice@example.com")
        return await trip(*args)

    monkeypatch.setattr(registrar.table, "read_then_write", meanwhile)
    # planned as a new binding next to 5062 (gone by the time it is applied)
    registrar.stream.send(save_with_digest(2, "alice", "alice-pw", contact_port=5064,
                                           cseq=2))
    got = await registrar.stream.replies(1)
    assert got[2].save_with_digest.status == 200
    contacts = [h.value for h in got[2].save_with_digest.headers if h.name == "Contact"]
    assert contacts == ["<sip:alice@10.0.0.5:5064>;expires=120"]
    assert registrar.in_memory() == {"alice@example.com": ["sip:alice@10.0.0.5:5064"]}
    assert await registrar.stored() == registrar.in_memory()  # the 200 waited for it


async def test_a_failed_trip_answers_503_and_changes_nothing(
        registrar: Registrar, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any) -> Awaitable[Any]:
        raise OSError("disk full")

    monkeypatch.setattr(registrar.table, "read_then_write", broken)
    registrar.stream.send(save_with_digest(1, "alice", "alice-pw"),
                          save_with_digest(2, "bob", "wrong"))
    got = await registrar.stream.replies(2)
    for i in (1, 2):
        reply = got[i].save_with_digest
        assert reply.status == 503 and not reply.digest_rejected
        assert ("Retry-After", "5") in [(h.name, h.value) for h in reply.headers]
    assert registrar.in_memory() == {} and await registrar.stored() == {}
