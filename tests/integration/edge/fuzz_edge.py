"""Fuzzing a real edge process over UDP and TCP (uvloop, as users run it).

    .venv/bin/python tests/integration/edge/fuzz_edge.py --messages 50000 --seed 7   # make fuzz

Seeded and reproducible: message i of a run is `mutate(seed_messages()[k], ops)` with `k`
and `ops` drawn from `random.Random(f"{seed}:{i}")`, so a failure names the seed and index
that rebuild it.  What is held, message after message:

* UDP: the edge does what `sipmesh parse` says (`wire.check_agreement`): the parser's
  status for what it refuses (never routed), never 400/500 for what it accepts;
* TCP (every `tcp_every`-th message, on its own connection, followed by an OPTIONS ping
  and a half-close): no 500 whatever the bytes;
* no traceback in the edge's log, ever;
* memory: the edge's resident set grows less than `max_growth_mb` over the run;
* a legitimate call placed by sipp in the middle of it all completes (the test suite's
  run; `make fuzz` reports the same figures without sipp).

`run()` is what `tests/integration/edge/test_edge_fuzz.py` calls with a few thousand
messages; `main()` is the long run of `make fuzz`.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[2])]

from edge_harness import Edge  # noqa: E402
from mutations import KINDS, Op, mutate, seed_messages  # noqa: E402
from wire import Wire, check_agreement, start_sink_edge  # noqa: E402


@dataclass
class Report:
    messages: int = 0
    udp: int = 0
    tcp: int = 0
    answered: dict[int, int] = field(default_factory=dict)
    forwarded: int = 0
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        codes = " ".join(f"{k}:{v}" for k, v in sorted(self.answered.items()))
        return (f"{self.messages} messages ({self.udp} UDP, {self.tcp} TCP) in "
                f"{self.seconds:.1f} s; answers {codes}; forwarded {self.forwarded}; "
                f"RSS {self.rss_start_kb // 1024} -> {self.rss_end_kb // 1024} MB")


def draw(seed: int, index: int, seeds: int) -> tuple[int, list[Op]]:
    rng = random.Random(f"{seed}:{index}")
    ops = [(rng.randrange(KINDS), rng.random(), rng.randrange(1000), rng.randrange(1000))
           for _ in range(rng.randint(1, 4))]
    return rng.randrange(seeds), ops


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tcp_exchange(edge: Edge, data: bytes, n: int) -> list[bytes]:
    """Send `data` then a ping on one connection, half-close, read until the edge closes."""
    ping = (f"OPTIONS sip:127.0.0.1:{edge.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-tping{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:p@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: tping-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    got = b""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as s:
        s.sendall(data + ping)
        s.shutdown(socket.SHUT_WR)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return [m for m in got.split(b"SIP/2.0 ")[1:]]


class FuzzFailure(AssertionError):
    pass


def run(edge: Edge, sink: socket.socket, *, messages: int, seed: int, tcp_every: int = 10,
        max_growth_mb: int = 64, between: object = None) -> Report:
    """Fuzz `edge` (made by `wire.start_sink_edge`); raise FuzzFailure on the first breach.

    `between(i)` is called every 500 messages (the test places its sipp call from there)."""
    seeds = seed_messages()
    wire = Wire(edge, sink)
    report = Report(rss_start_kb=rss_kb(edge.proc.pid))
    started = time.monotonic()
    log_seen = 0
    try:
        for i in range(messages):
            k, ops = draw(seed, i, len(seeds))
            data = mutate(seeds[k], ops, n=f"z{seed}-{i}", port=wire.port)
            where = f"seed {seed} index {i} (seed message {k}, ops {ops})"
            if tcp_every and i % tcp_every == tcp_every - 1:
                report.tcp += 1
                for answer in tcp_exchange(edge, data, i):
                    code = int(answer[:3]) if answer[:3].isdigit() else 0
                    report.answered[code] = report.answered.get(code, 0) + 1
                    if code == 500:
                        raise FuzzFailure(f"500 over TCP at {where}: {data!r}")
            else:
                report.udp += 1
                sent, answers, forwarded = wire.send(data)
                try:
                    check_agreement(sent, answers, forwarded)
                except AssertionError as exc:
                    raise FuzzFailure(f"{exc} at {where}") from None
                for answer in answers:
                    code = int(answer.split(b" ", 2)[1])
                    report.answered[code] = report.answered.get(code, 0) + 1
                report.forwarded += len(forwarded)
            report.messages += 1
            if i % 200 == 199:
                text = edge.log_text()
                if "Traceback (most recent" in text[log_seen:]:
                    raise FuzzFailure(f"traceback in the edge's log by {where}:\n"
                                      f"{text[log_seen:][-4000:]}")
                log_seen = len(text)
            if between is not None and i % 500 == 0:
                between(i)  # type: ignore[operator]
    finally:
        wire.close()
        report.seconds = time.monotonic() - started
        report.rss_end_kb = rss_kb(edge.proc.pid)
    if edge.tracebacks():
        raise FuzzFailure("traceback in the edge's log:\n" + edge.log_text()[-4000:])
    growth = (report.rss_end_kb - report.rss_start_kb) / 1024
    if growth > max_growth_mb:
        raise FuzzFailure(f"the edge grew by {growth:.0f} MB (bound {max_growth_mb} MB)")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--tcp-every", type=int, default=10)
    parser.add_argument("--max-growth-mb", type=int, default=96)
    args = parser.parse_args()
    print(f"fuzz_edge: seed {args.seed}, {args.messages} messages", flush=True)
    edge, sink = start_sink_edge()
    try:
        report = run(edge, sink, messages=args.messages, seed=args.seed,
                     tcp_every=args.tcp_every, max_growth_mb=args.max_growth_mb)
    except FuzzFailure as exc:
        print(f"FAILED (reproduce with --seed {args.seed}): {exc}", flush=True)
        return 1
    finally:
        edge.stop()
        sink.close()
    print(report.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
