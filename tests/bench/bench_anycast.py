"""Benchmark: the cost of anycast (services/edge/anycast.py) on an edge node.

Three figures, on the anycast harness of tests/support/anycast.py (edge processes on one
address, a reuseport cBPF program steering datagrams by source address):

1. capacity: the call rate of ONE edge node with anycast off, against the same node in a
   2-node anycast cluster where the caller's packets all reach node 1 (the owner) and the
   callee's replies are spread at random over both nodes - half of them reach the wrong
   node and cross the cluster. sipp built-in `uac`/`uas`, `-d 0`. Measured as CPU per
   call of the node at a fixed rate (`--rate`, default 250 calls/s for `--seconds` 10,
   off and on alternated `--repeat` 3 times, medians):
   the calls/s one core carries is 1 / (CPU s per call), and the ratio of the two is the
   figure (the issue's goal: >= 0.8x). CPU per call stays meaningful on a shared machine,
   where a rate climb measures the neighbours' load (`--climb` runs one anyway: the rate
   rises step by step, a step passes with at most 0.1% failed calls);
2. latency added to a replicated reply: a reply sent straight to the owner against one
   handed over by the other node (test sockets, one call at a time, p50/p99 in ms);
3. soak: 3 nodes, every datagram of sipp steered at random, 200 calls/s for 60 s
   (BENCH_ANYCAST_SOAK_RATE / _SECONDS): failed calls (the issue's goal: zero).

4. hold: the cost of the claim and hold (anycast.py) - CPU per call of node 1 of 2 with
   `[edge.tm] anycast_hold` 0 against 0.05 (alternated, medians), and the delay from the
   caller's INVITE to the callee's with each (p50/p99).

    .venv/bin/python tests/bench/bench_anycast.py [--step SECONDS]
        [--only capacity,latency,hold,soak]

Not a test: numbers depend on the machine and on whatever else runs on it (2 shared cores
here: in the anycast run the second node and sipp compete with the measured node).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.sip import Request, parse_message  # noqa: E402
from tests.support.anycast import (  # noqa: E402
    AnycastEdge,
    AnycastGroup,
    Endpoint,
    start_anycast_edges,
)
from tests.support.ports import reserve_port  # noqa: E402

ANYCAST = "127.0.0.100"
RATES = [100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200, 1500]
MAX_FAILED = 0.001
BUFF = ["-buff_size", "1048576"]


def uas_process(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = reserve_port()
    proc = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.22", "-p", str(port),
                             "-nostdin", *BUFF], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # a benchmark, not a test: sipp binds well within this
    return proc, port


def run_step(port: int, uas_port: int, rate: int, seconds: float, workdir: Path
             ) -> tuple[int, int]:
    calls = max(1, int(rate * seconds))
    stat = workdir / f"stat-{port}-{rate}-{uuid.uuid4().hex[:6]}.csv"
    cmd = ["sipp", "-sn", "uac", "-i", "127.0.0.21", "-p", str(reserve_port()),
           "-rsa", f"{ANYCAST}:{port}", f"127.0.0.22:{uas_port}", "-r", str(rate),
           "-m", str(calls), "-d", "0", "-nostdin", *BUFF, "-timeout",
           f"{int(seconds) + 20}s", "-timeout_error", "-trace_stat", "-stf", str(stat),
           "-fd", "1"]
    subprocess.run(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=seconds + 60)
    ok = failed = 0
    if stat.exists():
        with stat.open() as fh:
            rows = list(csv.reader(fh, delimiter=";"))
        if len(rows) >= 2:
            head, last = rows[0], rows[-1]
            ok = int(last[head.index("SuccessfulCall(C)")])
            failed = int(last[head.index("FailedCall(C)")])
    return ok, max(failed, calls - ok)


def climb(name: str, port: int, uas_port: int, step: float, workdir: Path) -> int:
    best = 0
    for rate in RATES:
        passed = False
        for attempt in (1, 2):  # the machine is shared: a failed step is tried once more
            ok, failed = run_step(port, uas_port, rate, step, workdir)
            share = failed / max(ok + failed, 1)
            passed = share <= MAX_FAILED
            print(f"  {name:<22} {rate:>5} calls/s: {ok:>6} ok {failed:>5} failed "
                  f"{'ok' if passed else 'FAILED'}{'  (attempt 2)' if attempt == 2 else ''}",
                  flush=True)
            if passed:
                break
        if not passed:
            break
        best = rate
    return best


def edges(count: int, *, anycast: bool = True, hold: float | None = None
          ) -> tuple[AnycastGroup, list[AnycastEdge]]:
    group = AnycastGroup(ANYCAST, reserve_port())
    extra = {} if anycast else {"SIPMESH_EDGE_TM_REPLICATION_CLUSTER": "false",
                                "SIPMESH_EDGE_LISTEN": f"udp:{ANYCAST}:{group.port}"}
    if hold is not None:
        extra["SIPMESH_EDGE_TM_ANYCAST_HOLD"] = str(hold)
    env = {"SIPMESH_EDGE_LOG_LEVEL": "warning", **extra}
    return group, start_anycast_edges(group, count, env_extra=env)


def stop(group: AnycastGroup, nodes: list[AnycastEdge]) -> None:
    for e in nodes:
        e.stop()
        e.log.unlink(missing_ok=True)
    group.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (proc(5) fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, nodes: list[AnycastEdge], port: int, uas_port: int, rate: int,
            seconds: float, workdir: Path) -> tuple[float, float]:
    """(CPU s per call of node 1, of all nodes) at `rate` for `seconds`."""
    before = [cpu_seconds(e.proc.pid) for e in nodes]
    ok, failed = run_step(port, uas_port, rate, seconds, workdir)
    used = [cpu_seconds(e.proc.pid) - b for e, b in zip(nodes, before, strict=True)]
    calls = max(ok, 1)
    print(f"  {name:<26} {rate} calls/s x {seconds:g} s: {ok} ok {failed} failed; CPU per "
          f"call node 1 {1000 * used[0] / calls:.3f} ms, all nodes "
          f"{1000 * sum(used) / calls:.3f} ms", flush=True)
    return used[0] / calls, sum(used) / calls


def capacity(rate: int, seconds: float, step: float, climb_too: bool, repeat: int,
             workdir: Path) -> tuple[float, float, float, int, int]:
    """(CPU per call off, node 1 on, all nodes on - medians of `repeat` alternated runs;
    climbed maxima off/on, or 0)."""
    uas, uas_port = uas_process(workdir)
    off_max = on_max = 0
    offs: list[float] = []
    ons: list[float] = []
    alls: list[float] = []
    try:
        for _ in range(repeat):
            print("capacity: one node, anycast off", flush=True)
            group, nodes = edges(1, anycast=False)
            group.steer({21: 1, 22: 1})
            try:
                offs.append(measure("anycast off", nodes, group.port, uas_port, rate,
                                    seconds, workdir)[0])
                if climb_too and not off_max:
                    off_max = climb("anycast off", group.port, uas_port, step, workdir)
            finally:
                stop(group, nodes)
            print("capacity: node 1 of 2, anycast on, the callee's replies at random",
                  flush=True)
            group, nodes = edges(2)
            group.steer({21: 1})  # the caller always reaches node 1; 127.0.0.22 at random
            try:
                on, on_all = measure("anycast on, 1/2 replies moved", nodes, group.port,
                                     uas_port, rate, seconds, workdir)
                ons.append(on)
                alls.append(on_all)
                moved = nodes[1].stat("tm:replies_out")
                print(f"  replies node 2 handed to node 1: {moved}", flush=True)
                if climb_too and not on_max:
                    on_max = climb("anycast on, 1/2 moved", group.port, uas_port, step,
                                   workdir)
            finally:
                stop(group, nodes)
    finally:
        uas.terminate()
        uas.wait(10)
    median = statistics.median
    return median(offs), median(ons), median(alls), off_max, on_max


def _invite(uac: Endpoint, uas: Endpoint) -> str:
    return (f"INVITE sip:bob@{uas.home}:{uas.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {uac.home}:{uac.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\n"
            f"To: <sip:bob@example.com>\r\nCall-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:alice@{uac.home}:{uac.port}>\r\nContent-Length: 0\r\n\r\n")


def _answer(req: Request, status: int) -> str:
    vias = "".join(f"Via: {v}\r\n" for v in req.get_all("Via"))
    return (f"SIP/2.0 {status} X\r\n{vias}From: {req.get('From')}\r\nTo: {req.get('To')};tag=b"
            f"\r\nCall-ID: {req.call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


def _wait_for(ep: Endpoint, status: int) -> float:
    while True:
        data = ep.recv(5.0)
        if data is None:
            raise RuntimeError(f"no {status} arrived")
        if data.startswith(f"SIP/2.0 {status}".encode()):
            return time.perf_counter()


def latency(samples: int) -> tuple[list[float], list[float]]:
    group, nodes = edges(2)
    group.steer({21: 1, 22: 1, 31: 1, 41: 1, 42: 2})
    uac = Endpoint(21, {1: 31}, reserve_port())
    uas = Endpoint(22, {1: 41, 2: 42}, reserve_port())
    direct: list[float] = []
    moved: list[float] = []
    try:
        for i in range(samples):
            uac.send(1, _invite(uac, uas), (ANYCAST, group.port))
            while True:
                data = uas.recv(5.0)
                if data is None:
                    raise RuntimeError("no INVITE arrived")
                req = parse_message(data)
                if isinstance(req, Request) and req.method == "INVITE":
                    break
            # alternate which reply crosses the cluster, so message size does not decide
            first, second = (1, 2) if i % 2 == 0 else (2, 1)
            for status, node in ((180, first), (200, second)):
                t0 = time.perf_counter()
                uas.send(node, _answer(req, status), (ANYCAST, group.port))
                (direct if node == 1 else moved).append(_wait_for(uac, status) - t0)
    finally:
        uac.close()
        uas.close()
        stop(group, nodes)
    return direct, moved


def setup_delay(hold: float, samples: int) -> list[float]:
    """INVITE sent to node 1 -> INVITE at the callee (s), one call at a time, 2 nodes."""
    group, nodes = edges(2, hold=hold)
    group.steer({21: 1, 22: 1, 31: 1, 41: 1})
    uac = Endpoint(21, {1: 31}, reserve_port())
    uas = Endpoint(22, {1: 41}, reserve_port())
    delays: list[float] = []
    try:
        for _ in range(samples):
            t0 = time.perf_counter()
            uac.send(1, _invite(uac, uas), (ANYCAST, group.port))
            while True:
                data = uas.recv(5.0)
                if data is None:
                    raise RuntimeError("no INVITE arrived")
                req = parse_message(data)
                if isinstance(req, Request) and req.method == "INVITE":
                    break
            delays.append(time.perf_counter() - t0)
            uas.send(1, _answer(req, 486), (ANYCAST, group.port))
            _wait_for(uac, 486)
    finally:
        uac.close()
        uas.close()
        stop(group, nodes)
    return delays


def hold_cost(rate: int, seconds: float, repeat: int, samples: int, workdir: Path
              ) -> tuple[float, float, list[float], list[float]]:
    """The claim and hold's cost: CPU per call of node 1 of 2 (every packet at node 1)
    with `[edge.tm] anycast_hold` 0 and 0.05, medians of `repeat` alternated runs, and
    the INVITE's setup delays with each."""
    uas, uas_port = uas_process(workdir)
    offs: list[float] = []
    ons: list[float] = []
    try:
        for _ in range(repeat):
            for hold, runs in ((0.0, offs), (0.05, ons)):
                group, nodes = edges(2, hold=hold)
                group.steer({21: 1, 22: 1})
                try:
                    runs.append(measure(f"anycast on, hold {hold:g}", nodes, group.port,
                                        uas_port, rate, seconds, workdir)[0])
                finally:
                    stop(group, nodes)
    finally:
        uas.terminate()
        uas.wait(10)
    return (statistics.median(offs), statistics.median(ons), setup_delay(0.0, samples),
            setup_delay(0.05, samples))


def soak(rate: int, seconds: float, workdir: Path) -> tuple[int, int]:
    uas, uas_port = uas_process(workdir)
    group, nodes = edges(3)
    group.steer({})  # every datagram at random over the three nodes
    try:
        ok, failed = run_step(group.port, uas_port, rate, seconds, workdir)
        moved = sum(e.stat("tm:replicated_in") for e in nodes)
        print(f"  messages that crossed the cluster: {moved}", flush=True)
    finally:
        stop(group, nodes)
        uas.terminate()
        uas.wait(10)
    return ok, failed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step", type=float,
                        default=float(os.environ.get("BENCH_STEP_SECONDS", "5")))
    parser.add_argument("--only", default="capacity,latency,hold,soak")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--climb", action="store_true", help="also climb the call rate")
    parser.add_argument("--repeat", type=int, default=3, help="alternated off/on runs")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        print("sipp missing: run tests/peers/ensure.sh (make bench does)")
        return 1
    only = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="bench-anycast-"))
    results: list[str] = []
    if "latency" in only:
        direct, moved = latency(args.samples)
        added50 = pct(moved, 0.5) - pct(direct, 0.5)
        added99 = pct(moved, 0.99) - pct(direct, 0.99)
        results.append(
            f"reply latency (ms): direct p50 {pct(direct, 0.5):.2f} p99 {pct(direct, 0.99):.2f}"
            f"; replicated p50 {pct(moved, 0.5):.2f} p99 {pct(moved, 0.99):.2f}"
            f"; added p50 {added50:.2f} p99 {added99:.2f}"
            f" (mean added {1000 * (statistics.mean(moved) - statistics.mean(direct)):.2f})")
    if "capacity" in only:
        off, on, on_all, off_max, on_max = capacity(args.rate, args.seconds, args.step,
                                                    args.climb, args.repeat, workdir)
        results.append(
            f"capacity (calls/s one core carries = 1 / CPU per call, at {args.rate} calls/s, "
            f"median of {args.repeat}):"
            f" anycast off {1 / off:.0f}, anycast on with half the replies at the wrong node "
            f"{1 / on:.0f} (owner node alone): ratio {off / on:.2f}x (goal >= 0.8x); "
            f"counting the other node's CPU too: {off / on_all:.2f}x")
        if args.climb:
            results.append(f"climb ({args.step:g} s steps, shared machine): anycast off "
                           f"{off_max}, on {on_max} calls/s")
    if "hold" in only:
        off, on, d_off, d_on = hold_cost(args.rate, args.seconds, args.repeat,
                                         min(args.samples, 100), workdir)
        results.append(
            f"claim and hold (anycast_hold 0 vs 0.05, node 1 of 2, at {args.rate} calls/s, "
            f"median of {args.repeat}): CPU per call {1000 * off:.3f} vs {1000 * on:.3f} ms "
            f"({on / off:.2f}x); INVITE to the callee p50 {pct(d_off, 0.5):.1f} vs "
            f"{pct(d_on, 0.5):.1f} ms, p99 {pct(d_off, 0.99):.1f} vs {pct(d_on, 0.99):.1f} ms")
    if "soak" in only:
        rate = int(os.environ.get("BENCH_ANYCAST_SOAK_RATE", "200"))
        seconds = float(os.environ.get("BENCH_ANYCAST_SOAK_SECONDS", "60"))
        ok, failed = soak(rate, seconds, workdir)
        results.append(f"soak: 3 nodes, packets at random, {rate} calls/s x {seconds:g} s: "
                       f"{ok} ok, {failed} failed (goal: 0 failed)")
    print("\n== anycast")
    for line in results:
        print(line)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
