"""The edge worker's own cost per call under sipp: user-space instructions (perf stat) and
CPU time, the figure that a busy machine does not move.

One edge worker, sipp's `uac` scenario through it to a sipp UAS (stateful INVITE,
record-route, zero hold time: the setup of `bench_edge.py`), a warm-up step, then `--runs`
steps of `--rate` calls/s for `--step` s, each counted with `perf stat -e instructions:u`
attached to the worker, and its CPU time (user + system) from /proc.  Prints, per step,
the instructions and the CPU per successful call.  CPU time moves with the machine's load
(caches, frequency, other processes); the instruction count does not, so a change of a few
per cent in the interpreted code around the core shows in it where the interleaved
`bench_edge.py --only cpu` cannot tell it from noise.

    .venv/bin/python tests/bench/worker_stat.py [--rate 300] [--step 4] [--runs 2] [--pure]

Not a test: needs sipp and perf (perf_event_paranoid <= 2 is enough: user space of our own
process).  A virtual machine without a PMU (this 2-core VM) cannot count instructions:
the script then says so and prints the CPU per call alone; `perf record -e cpu-clock:u`
(a software event) still gives the worker's profile by function, whose shares do not move
with the load either (docs/perf.md, "Sixth round").
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_edge import (
    Proxy,
    run_step,
    session_cpu,
    start_edge,
    start_uas,
)


def counted_step(proxy: Proxy, uas_port: int, rate: int, step: float,
                 workdir: Path) -> tuple[int, int, float]:
    """One step with perf attached to the worker: (successful calls, instructions:u, CPU s)."""
    pid = proxy.proc.pid
    out = workdir / "perf-stat.csv"
    out.unlink(missing_ok=True)
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(out), "-e",
                             "instructions:u", "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = session_cpu(pid)
    ok, _, _, _ = run_step(proxy, uas_port, rate, step, workdir)
    cpu = session_cpu(pid) - before
    perf.send_signal(signal.SIGINT)
    perf.wait(10)
    instructions = 0
    for line in out.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            instructions = int(fields[0])
    return ok, instructions, cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--step", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--pure", action="store_true", help="the SIP core as pure Python")
    args = parser.parse_args()
    for tool in ("sipp", "perf"):
        if shutil.which(tool) is None:
            print(f"{tool} missing")
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="worker-stat-"))
    uas, uas_port = start_uas(workdir)
    edge = start_edge(1, workdir, pure=args.pure)
    try:
        run_step(edge, uas_port, args.rate, 2.0, workdir)  # warm-up
        for n in range(args.runs):
            ok, instructions, cpu = counted_step(edge, uas_port, args.rate,
                                                 args.step, workdir)
            calls = max(1, ok)
            counted = (f"{instructions / calls / 1e6:.3f} M instructions:u per call, "
                       if instructions else "instructions not counted (no PMU), ")
            print(f"run {n + 1}: {ok} calls at {args.rate}/s: {counted}"
                  f"{cpu / calls * 1e6:.0f} us CPU per call "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        edge.stop()
        uas.terminate()
        uas.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
