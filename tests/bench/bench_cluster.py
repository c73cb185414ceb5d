"""Clustering engine figures (a script, not a test): run by `make bench`.

Real demo nodes (``python -m examples.cluster_demo``) on loopback, one process each:

1. Full sync: a seed holds 100,000 records of 200 bytes; a node joins and syncs them.
   Figure: the joiner's own sync time (SYNC_REQ sent -> SYNC_END applied, from
   ``clusterer_list_sync``), goal < 2 s; also the wall time from process start to synced.
2. Replication: one node stores and broadcasts 50,000 updates of 200 bytes to 2 peers;
   figure: updates/s until both peers hold every update.
3. Failover: three nodes share the tag ``vip/1``; the active holder is killed with
   SIGKILL; figure: time until a backup reports the tag active (the tests' timers:
   ping_interval 0.2 s, ping_timeout 0.3 s, 3 retries: the link is declared Down
   ping_timeout x (retries + 1) = 1.2 s after the first unanswered ping, i.e. within
   ~1.4 s of the kill; the tag moves at once then).

Ceiling (the ratio's denominator): the same bytes over a raw grpc.aio bidirectional
stream between two processes-worth of code in this process -- the same frames of
``SyncChunk``/``Generic`` packets, no engine (no routing, link machine, capability
callbacks or sync state).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc loads: no GOAWAY chatter

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contracts.generated.sipmesh.cluster.v1 import cluster_pb2 as pb
from contracts.generated.sipmesh.cluster.v1 import cluster_pb2_grpc as pb_grpc
from shared.cluster.engine import GRPC_OPTIONS
from shared.cluster.state import MAX_FRAME
from tests.cluster.harness import Node, wait_until

RECORDS = 100_000
SIZE = 200
UPDATES = 50_000


def record(i: int, prefix: str = "k") -> bytes:
    return f"{prefix}{i:012d}".encode() + b"\0" + b"v" * (SIZE - 16)


# -- the ceiling: raw gRPC stream ----------------------------------------------------------
class _Sink(pb_grpc.ClusterServicer):
    def __init__(self) -> None:
        self.records = 0
        self.done = asyncio.Event()
        self.expect = 0

    async def Link(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for frame in request_iterator:
            for p in frame.packets:
                self.records += len(p.sync.records) if p.HasField("sync") else 1
            if self.records >= self.expect:
                self.done.set()
        return
        yield


async def raw_stream(packets: list[pb.Packet], expect: int, receivers: int = 1) -> float:
    sinks = [_Sink() for _ in range(receivers)]
    servers, ports = [], []
    for sink in sinks:
        sink.expect = expect
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_ClusterServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}", options=GRPC_OPTIONS)
                for p in ports]
    calls = [pb_grpc.ClusterStub(ch).Link()  # type: ignore[no-untyped-call]
             for ch in channels]
    started = time.perf_counter()
    for call in calls:
        batch: list[pb.Packet] = []
        size = 0
        for p in packets:
            batch.append(p)
            size += p.ByteSize()
            if size >= MAX_FRAME:
                await call.write(pb.Frame(packets=batch))
                batch, size = [], 0
        if batch:
            await call.write(pb.Frame(packets=batch))
    await asyncio.gather(*(s.done.wait() for s in sinks))
    elapsed = time.perf_counter() - started
    for call in calls:
        await call.done_writing()
    for ch in channels:
        await ch.close()
    for server in servers:
        await server.stop(0)
    return elapsed


def sync_packets() -> list[pb.Packet]:
    out, batch, size = [], [], 0
    for i in range(RECORDS):
        rec = record(i)
        batch.append(rec)
        size += len(rec) + 3
        if size >= 65536:
            out.append(pb.Packet(src=1, dst=2, sync=pb.SyncChunk(cap="c", sync_id=1,
                                                                 records=batch)))
            batch, size = [], 0
    if batch:
        out.append(pb.Packet(src=1, dst=2, sync=pb.SyncChunk(cap="c", sync_id=1,
                                                             records=batch)))
    return out


def update_packets() -> list[pb.Packet]:
    return [pb.Packet(src=1, dst=2, ttl=25, msg=pb.Generic(cap="c", payload=record(i, "u")))
            for i in range(UPDATES)]


# -- the engine ----------------------------------------------------------------------------
def bench_sync(tmp: Path) -> tuple[float, float]:
    seed = Node(1, tmp, seed=True, extra=["--fill", str(RECORDS), "--record-size", str(SIZE)])
    joiner = Node(2, tmp, seeds=[seed])
    try:
        seed.start()
        wait_until(seed.synced, 20, "seed synced")
        started = time.perf_counter()
        joiner.start()
        wait_until(joiner.synced, 60, "joiner synced")
        wall = time.perf_counter() - started
        assert joiner.count() == seed.count(), "joiner's data differs"
        return float(joiner.sync_progress()["elapsed"]), wall
    finally:
        joiner.kill9()
        seed.kill9()


def bench_replication(tmp: Path) -> float:
    n1 = Node(1, tmp, seed=True).start()
    nodes = [n1]
    try:
        nodes += [Node(i, tmp, seeds=[n1]).start() for i in (2, 3)]
        for n in nodes:
            wait_until(lambda: n.all_up([o.node_id for o in nodes if o is not n]), 20)
            wait_until(n.synced, 20)
        started = time.perf_counter()
        n1.mi("kv_burst", [UPDATES, SIZE], timeout=120)
        for n in nodes[1:]:
            wait_until(lambda: n.count()["count"] >= UPDATES, 120, "updates applied")
        elapsed = time.perf_counter() - started
        assert nodes[1].count() == n1.count() == nodes[2].count()
        return UPDATES / elapsed
    finally:
        for n in nodes:
            n.kill9()


def bench_failover(tmp: Path, rounds: int = 3) -> list[float]:
    results = []
    for r in range(rounds):
        tag = ["--sharing-tag", "vip/1=backup"]
        n1 = Node(1, tmp, seed=True, extra=tag).start()
        nodes = [n1]
        try:
            nodes += [Node(i, tmp, seeds=[n1], extra=tag).start() for i in (2, 3)]
            members = list(nodes)
            holder = wait_until(lambda: [n for n in members if n.active()], 20, "holder")[0]
            others = [n for n in nodes if n is not holder]
            holder.kill9()
            killed = time.perf_counter()
            while not any(n.active() for n in others):
                time.sleep(0.005)
                if time.perf_counter() - killed > 20:
                    raise AssertionError(f"round {r}: no takeover")
            results.append(time.perf_counter() - killed)
        finally:
            for n in nodes:
                n.kill9()
    return results


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sync_time, sync_wall = bench_sync(tmp)
        raw_sync = asyncio.run(raw_stream(sync_packets(), RECORDS))
        mb = RECORDS * SIZE / 1e6
        print(f"full sync of {RECORDS:,} records x {SIZE} B ({mb:.0f} MB) to a joining node: "
              f"{sync_time:.2f} s (goal < 2 s; {mb / sync_time:.0f} MB/s; "
              f"process start to synced {sync_wall:.2f} s)")
        print(f"  ceiling, raw gRPC stream of the same chunks: {raw_sync:.2f} s "
              f"-> engine/raw = {sync_time / raw_sync:.1f}x")

        rate = bench_replication(tmp)
        raw_rep = asyncio.run(raw_stream(update_packets(), UPDATES, receivers=2))
        raw_rate = UPDATES / raw_rep
        print(f"replication to 2 peers: {rate:,.0f} updates/s of {SIZE} B "
              f"(until both peers applied all {UPDATES:,})")
        print(f"  ceiling, raw gRPC streams of the same packets to 2 receivers: "
              f"{raw_rate:,.0f} updates/s -> engine = {rate / raw_rate:.0%} of raw")

        takeovers = bench_failover(tmp)
        print("failover, kill -9 of the active holder -> a backup active: "
              f"median {statistics.median(takeovers) * 1000:.0f} ms, "
              f"max {max(takeovers) * 1000:.0f} ms over {len(takeovers)} rounds "
              "(ping 0.2 s / timeout 0.3 s / 3 retries: Down within ~1.4 s)")


if __name__ == "__main__":
    main()
