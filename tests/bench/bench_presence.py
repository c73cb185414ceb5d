"""Presence figures (a script, not a test): run by `make bench`.

The same scenario against the SipMesh edge + presence service (standalone processes, the
presence store in its default SQLite file) and against Kamailio 5.6's presence server
(presence + presence_xml, written through to PostgreSQL: tests/bench/presence/
kamailio_presence.cfg):

1. 10,000 watchers (`--presentities` x `--watchers`, 1,000 x 10 by default) SUBSCRIBE, a
   window of 100 at a time; figure: SUBSCRIBE/s (answered 200).
2. Every presentity PUBLISHes once (a window of 50); figures: PUBLISH/s (answered 200)
   and NOTIFY/s: the NOTIFYs carrying the new state (a marker in the PIDF note) that
   reached the watchers, counted until the last one arrived.

One UDP socket plays every phone (watchers and publishers) and answers each NOTIFY 200.
Printed: each figure and the ratio SipMesh / Kamailio.

    .venv/bin/python tests/bench/bench_presence.py [--presentities 1000] [--watchers 10]

Numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_edge as be  # noqa: E402

from shared.sip import Request, Response, make_response, parse_message  # noqa: E402

KAM_CFG = Path(__file__).resolve().parent / "presence" / "kamailio_presence.cfg"
KAM_DB = "kam_presence_bench"
PRESENCE_MI = ""  # the presence service's MI endpoint, once started
PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:'
        'pidf" entity="sip:{user}@127.0.0.1"><tuple id="t1"><status><basic>open</basic>'
        "</status></tuple><note>{marker}</note></presence>")


class Phones(asyncio.DatagramProtocol):
    """Every watcher and publisher on one socket: requests out, answers matched by
    Call-ID + CSeq, NOTIFYs answered 200 and counted."""

    def __init__(self, marker: str) -> None:
        self.marker = marker.encode()
        self.transport: Any = None
        self.pending: dict[tuple[str, int], asyncio.Future[int]] = {}
        self.notifies = 0
        self.marked = 0
        self.seen: set[tuple[str, int]] = set()
        self.last_marked = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            msg = parse_message(data)
        except Exception:
            return
        if isinstance(msg, Request):
            key = (msg.call_id, msg.cseq.number)
            if msg.method == "NOTIFY" and key not in self.seen:  # not a retransmission
                self.seen.add(key)
                self.notifies += 1
                if self.marker in msg.body:
                    self.marked += 1
                    self.last_marked = time.monotonic()
            self.transport.sendto(make_response(msg, 200).serialize(), addr)
        elif isinstance(msg, Response) and msg.status >= 200:
            fut = self.pending.pop((msg.call_id, msg.cseq.number), None)
            if fut is not None and not fut.done():
                fut.set_result(msg.status)

    async def request(self, data: bytes, call_id: str, cseq: int, dest: tuple[str, int],
                      timeout: float = 8.0) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[(call_id, cseq)] = fut
        for wait in (0.5, 1.0, 2.0, 4.0):  # RFC 3261 §17.1.2.2 retransmissions, roughly
            self.transport.sendto(data, dest)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), wait)
            except TimeoutError:
                continue
        self.pending.pop((call_id, cseq), None)
        return 408


def subscribe(me: int, port: int, user: str, n: int, call_id: str) -> bytes:
    return (f"SUBSCRIBE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:w{n}@127.0.0.1>;tag=w{n}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:w{n}@127.0.0.1:{me}>\r\nMax-Forwards: 70\r\nEvent: presence\r\n"
            "Accept: application/pidf+xml\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
            ).encode()


def publish(me: int, port: int, user: str, marker: str, call_id: str) -> bytes:
    body = PIDF.format(user=user, marker=marker).encode()
    return (f"PUBLISH sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:{user}@127.0.0.1>;tag=p\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 PUBLISH\r\nMax-Forwards: 70\r\n"
            "Event: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def windowed(coros: list[Any], window: int) -> list[int]:
    sem = asyncio.Semaphore(window)

    async def one(c: Any) -> int:
        async with sem:
            result: int = await c
            return result

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def scenario(port: int, presentities: int, watchers: int) -> dict[str, float]:
    marker = f"bench-{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    transport, phones = await loop.create_datagram_endpoint(
        lambda: Phones(marker), local_addr=("127.0.0.1", 0))
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
    me = transport.get_extra_info("sockname")[1]
    dest = ("127.0.0.1", port)
    run = uuid.uuid4().hex[:6]
    try:
        subs = []
        for p in range(presentities):
            for w in range(watchers):
                cid = f"s{run}-{p}-{w}"
                subs.append(phones.request(subscribe(me, port, f"u{run}{p}", p * watchers + w,
                                                     cid), cid, 1, dest))
        t0 = time.monotonic()
        codes = await windowed(subs, 100)
        sub_time = time.monotonic() - t0
        ok_subs = sum(1 for c in codes if c == 200 or c == 202)
        # The NOTIFYs of the subscriptions themselves, before the PUBLISHes.
        deadline = time.monotonic() + 60
        while phones.notifies < ok_subs and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        pubs = [phones.request(publish(me, port, f"u{run}{p}", marker, f"p{run}-{p}"),
                               f"p{run}-{p}", 1, dest) for p in range(presentities)]
        t1 = time.monotonic()
        codes = await windowed(pubs, 50)
        pub_time = time.monotonic() - t1
        ok_pubs = sum(1 for c in codes if c == 200)
        expected = ok_pubs * watchers
        deadline = time.monotonic() + 120
        while phones.marked < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        notify_time = (phones.last_marked or time.monotonic()) - t1
        return {"subscribed": ok_subs, "subscribe_per_s": ok_subs / sub_time,
                "published": ok_pubs, "publish_per_s": ok_pubs / pub_time,
                "notified": phones.marked, "expected": expected,
                "notify_per_s": phones.marked / notify_time if notify_time > 0 else 0.0}
    finally:
        transport.close()


def start_sipmesh(workdir: Path) -> list[be.Proxy]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_STATE_HOME=str(workdir / "state"))
    env.pop("SIPMESH_CONFIG", None)
    grpc_port = be.free_port()
    pres_env = dict(env, SIPMESH_PRESENCE_LOG_LEVEL=os.environ.get("BENCH_PRESENCE_LOG", "error"),
                    SIPMESH_PRESENCE_GRPC_PORT=str(grpc_port))
    pres = subprocess.Popen([sys.executable, "-m", "services.presence"], cwd=ROOT,
                            env=pres_env, stdout=subprocess.PIPE,
                            stderr=open(workdir / "presence.log", "wb"), start_new_session=True)
    assert pres.stdout is not None
    ready, _, _ = select.select([pres.stdout], [], [], 30)
    if not ready:
        raise RuntimeError("presence did not print its ready line")
    words = pres.stdout.readline().decode().split()
    global PRESENCE_MI
    PRESENCE_MI = words[words.index("http") + 1] + "/mi"
    port = be.free_port()
    edge_env = dict(env, SIPMESH_EDGE_LOG_LEVEL="error",
                    SIPMESH_EDGE_RR_SECRET=os.urandom(16).hex(),
                    SIPMESH_EDGE_PRESENCE=f"127.0.0.1:{grpc_port}")
    edge = subprocess.Popen([sys.executable, "-m", "services.edge", "--listen",
                             f"udp:127.0.0.1:{port}"], cwd=ROOT, env=edge_env,
                            stdout=subprocess.PIPE, stderr=open(workdir / "edge.log", "wb"),
                            start_new_session=True)
    be.wait_ready(port, edge)
    return [be.Proxy("edge", edge, port), be.Proxy("presence", pres, grpc_port)]


def presence_stats() -> dict[str, int]:
    import json
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "get_statistics",
                       "params": [["presence:"]]}).encode()
    req = urllib.request.Request(PRESENCE_MI, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, int] = json.loads(resp.read())["result"]
    return {k.removeprefix("presence:"): v for k, v in result.items()
            if k.endswith(("notify_sent", "notify_failed", "active_watchers",
                           "publications"))}


def psql(sql: str, db: str = "test") -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-q", "-c", sql],
                   check=True, capture_output=True, timeout=60)


def start_kamailio(workdir: Path) -> be.Proxy:
    psql(f"DROP DATABASE IF EXISTS {KAM_DB}")
    psql(f"CREATE DATABASE {KAM_DB}")
    for script in ("standard-create.sql", "presence-create.sql"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", KAM_DB, "-q", "-f",
                        f"/usr/share/kamailio/postgres/{script}"],
                       check=True, capture_output=True, timeout=60)
    port = be.free_port()
    cmd = ["kamailio", "-f", str(KAM_CFG), "-DD", "-E", "-m", "1024", "-M", "32",
           "-l", f"udp:127.0.0.1:{port}", "-n", "1",
           "-A", f'DBURL="postgres://postgres@127.0.0.1/{KAM_DB}"',
           "-A", f'SRVADDR="sip:127.0.0.1:{port}"',
           "-P", str(workdir / "kam.pid"), "-w", str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "kamailio.log", "wb"), start_new_session=True)
    be.wait_ready(port, proc)
    return be.Proxy("kamailio", proc, port)


def show(name: str, r: dict[str, float]) -> None:
    print(f"  {name:9} subscribed {r['subscribed']:.0f} ({r['subscribe_per_s']:.0f}/s), "
          f"published {r['published']:.0f} ({r['publish_per_s']:.0f}/s), NOTIFYs with "
          f"the new state {r['notified']:.0f}/{r['expected']:.0f} "
          f"({r['notify_per_s']:.0f}/s)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presentities", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=10)
    parser.add_argument("--only", default="sipmesh,kamailio")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-presence-"))
    results: dict[str, dict[str, float]] = {}
    print(f"presence: {args.presentities} presentities x {args.watchers} watchers")
    if "sipmesh" in args.only:
        procs = start_sipmesh(workdir)
        try:
            results["sipmesh"] = asyncio.run(scenario(procs[0].port, args.presentities,
                                                      args.watchers))
            show("sipmesh", results["sipmesh"])
            print(f"  sipmesh presence statistics: {presence_stats()}")
        finally:
            for proc in procs:
                proc.stop()
    if "kamailio" in args.only:
        kam = start_kamailio(workdir)
        try:
            results["kamailio"] = asyncio.run(scenario(kam.port, args.presentities,
                                                       args.watchers))
            show("kamailio", results["kamailio"])
        finally:
            kam.stop()
            psql(f"DROP DATABASE IF EXISTS {KAM_DB}")
    if len(results) == 2:
        s, k = results["sipmesh"], results["kamailio"]
        for key in ("subscribe_per_s", "publish_per_s", "notify_per_s"):
            ratio = s[key] / k[key] if k[key] else float("nan")
            print(f"  {key.replace('_per_s', '/s'):12} sipmesh / kamailio = {ratio:.2f}")
    print(f"  (logs in {workdir})")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
