"""Benchmark: the registrar's Session servicer in process, paced as at a given rate.

`RegistrarServicer.Session` is fed SessionRequests of K SaveWithDigest calls (each a new
binding of one of USERS subscribers taken in turn, digest qop=auth), decoded from bytes as
gRPC's deserializer does, and each reply encoded as its serializer does; the stores are
the default ones (the SQLite subscriber store, the write-through location table in the
same file, the event bus).  One message at a time, its reply awaited, then `--pace`
seconds of sleep (0: back to back).  Prints the CPU per REGISTER of the process (all
threads) and of the event loop's thread, from /proc.

At 500 REGISTER/s with ~12 REGISTERs per message the edge sends one every ~24 ms
(`--pace 0.024`): the same work then costs about twice what it costs back to back, the
process waking up from idle for each message and each trip to SQLite's thread
(docs/perf.md, seventh round).  Everything but the gRPC transport is in the figure.

    .venv/bin/python tests/bench/registrar_session.py [--users N] [--per-message K]
                                                      [--messages M] [--pace SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from bench_registrar import many_subscribers  # noqa: E402

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb  # noqa: E402
from services.registrar.app import RegistrarServicer  # noqa: E402
from services.registrar.location import Location  # noqa: E402
from services.registrar.persistence import LocationWriter, SQLiteLocationTable  # noqa: E402
from services.registrar.subscribers import SQLiteSubscribers  # noqa: E402
from services.registrar.usrloc import UserLocation  # noqa: E402
from shared.events.bus import BufferedEventBus  # noqa: E402
from shared.events.schema import EventCatalog  # noqa: E402
from shared.service.gc_policy import tune_collector  # noqa: E402
from shared.sip.digest import compute_response  # noqa: E402

NONCE = "abcdef0123456789abcdef0123456789"
URI = "sip:127.0.0.1:5060"


def messages(count: int, per_message: int, users: int, first: int,
             one_contact: bool = False) -> list[bytes]:
    """`count` serialized SessionRequests of `per_message` SaveWithDigest calls; with
    `one_contact` each subscriber's REGISTERs carry one Contact (as sipp's
    register_load.xml: one binding, replaced by each new Call-ID) instead of a new one."""
    out = []
    n = first
    for _ in range(count):
        batch = pb.SessionRequests()
        for _ in range(per_message):
            n += 1
            i = n % users
            port = 5100 + i % 1000
            user = f"user{i}"
            call = batch.calls.add()
            call.id = n
            save = call.save_with_digest
            save.message = (
                f"REGISTER {URI} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{n}-1;rport\r\n"
                f"From: <sip:{user}@127.0.0.1>;tag={n}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
                f"Call-ID: {n}-4242@127.0.0.1\r\nCSeq: 2 REGISTER\r\n"
                f"Contact: <sip:{user}@127.0.0.1:{port}{'' if one_contact else f';n={n}'}>"
                "\r\nMax-Forwards: 70\r\n"
                f"Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()
            save.source_host, save.source_port = "127.0.0.1", port
            save.transport, save.socket = "udp", "udp:127.0.0.1:5060"
            d = save.digest
            d.username, d.realm, d.nonce, d.uri = user, "127.0.0.1", NONCE, URI
            d.algorithm, d.qop, d.nc, d.cnonce = "MD5", "auth", "00000001", "c1"
            d.response = compute_response(
                username=user, password=f"pw{i}", realm="127.0.0.1", method="REGISTER",
                uri=URI, nonce=NONCE, qop="auth", nc="00000001", cnonce="c1")
        out.append(batch.SerializeToString())
    return out


def thread_ticks() -> dict[str, int]:
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks[tid] = int(fields[11]) + int(fields[12])
    return ticks


async def run(args: argparse.Namespace, workdir: Path) -> None:
    path = workdir / "subscribers.sqlite"
    store = SQLiteSubscribers(path)
    await store.open()
    table = SQLiteLocationTable(path)
    await table.open()
    writer = LocationWriter(table, write_through=True)
    writer.start()
    bus = BufferedEventBus(EventCatalog.load(), service="registrar", node="bench")
    ul = UserLocation(Location(), store, events=bus, writer=writer)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[Any]:
        while (raw := await queue.get()) is not None:
            yield pb.SessionRequests.FromString(raw)

    replies = RegistrarServicer(ul).Session(requests(), None)

    async def feed(batch: list[bytes]) -> None:
        for raw in batch:
            await queue.put(raw)
            reply = await replies.__anext__()
            reply.SerializeToString()
            first = reply.replies[0].save_with_digest
            assert first.status == 200, first
            bus._buffer.clear()  # no gateway here: nothing drains it
            if args.pace:
                await asyncio.sleep(args.pace)

    await feed(messages(20, args.per_message, args.users, 10**9, args.one_contact))  # warm-up
    measured = messages(args.messages, args.per_message, args.users, 0, args.one_contact)
    tune_collector()
    cpu0, ticks0 = time.process_time(), thread_ticks()
    await feed(measured)
    cpu1, ticks1 = time.process_time(), thread_ticks()
    count = args.messages * args.per_message
    loop = str(os.getpid())
    per_tick = 1e6 / os.sysconf("SC_CLK_TCK") / count
    print(f"{args.per_message} per message, pace {args.pace:g} s, {args.users} subscribers: "
          f"CPU {(cpu1 - cpu0) / count * 1e6:.0f} us per REGISTER (event loop "
          f"{(ticks1[loop] - ticks0[loop]) * per_tick:.0f} us), {writer.writes} writes")
    await queue.put(None)
    await writer.stop()
    await table.close()
    await store.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--per-message", type=int, default=12)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--pace", type=float, default=0.024)
    parser.add_argument("--one-contact", action="store_true",
                        help="one Contact per subscriber, as sipp sends in the bench (with "
                             "--users 1: its 1-subscriber case); else a new binding each")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="registrar-session-"))
    many_subscribers(workdir, args.users)
    import uvloop

    uvloop.run(run(args, workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
