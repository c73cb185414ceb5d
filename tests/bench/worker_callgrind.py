"""A real edge worker's instructions per call, counted by callgrind: the figure a loaded
machine (or one without a PMU, like this VM) does not move, with everything the worker
runs per call - uvloop, the datagram glue, the core, the routing, its threads.

One edge worker started under `valgrind --tool=callgrind --instr-atstart=no` (so the
start-up runs at a fifth of native speed, uncounted), a sipp UAS, a warm-up step, then
the count switched on (`callgrind_control -i on`) for one step of `--rate` calls/s for
`--step` s (sipp's `uac` scenario: stateful INVITE, record-route, zero hold time, as
`bench_edge.py`) and dumped at its end.  Prints the instructions of the step per
successful call.  Valgrind runs the worker ~50 times slower: keep the rate low (15 calls/s
runs without retransmissions here).  At a low rate the worker's idle work (its 10 ms loop
timer while wait timers remain, the load sampler, gRPC's threads) is a larger part of each
call than at 300 calls/s: `--rate 0` counts that idle work alone, per second.

    .venv/bin/python tests/bench/worker_callgrind.py [--rate 15] [--step 12] [--keep FILE]

Not a test: needs sipp and valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_edge import Proxy, free_port, options_ok, run_step, start_uas  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=15, help="calls/s (0: idle, per second)")
    parser.add_argument("--step", type=float, default=12.0)
    parser.add_argument("--keep", type=Path, help="copy the step's callgrind output here")
    args = parser.parse_args()
    for tool in ("sipp", "valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} missing")
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="worker-callgrind-"))
    uas, uas_port = start_uas(workdir)
    port = free_port()
    env = dict(os.environ, SIPMESH_EDGE_LOG_LEVEL="error", PYTHONPATH=str(ROOT),
               SIPMESH_EDGE_RR_SECRET=os.urandom(16).hex())
    env.pop("SIPMESH_CONFIG", None)
    out = workdir / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={out}.%p", sys.executable, "-m", "services.edge",
           "--listen", f"udp:127.0.0.1:{port}", "--workers", "1"]
    with open(workdir / "edge.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True)
    edge = Proxy("edge under callgrind", proc, port)
    try:
        deadline = time.monotonic() + 240
        while not options_ok(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the edge under valgrind did not answer OPTIONS")
            time.sleep(1)
        if args.rate:
            run_step(edge, uas_port, args.rate, 4.0, workdir)  # warm-up
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                       capture_output=True)
        if args.rate:
            ok, failed, _, _ = run_step(edge, uas_port, args.rate, args.step, workdir)
            unit = "call"
        else:
            time.sleep(args.step)
            ok, failed, unit = max(1, round(args.step)), 0, "second idle"
        subprocess.run(["callgrind_control", "-d", "step", str(proc.pid)], check=True,
                       capture_output=True)
        dumps = sorted(workdir.glob("callgrind.out.*.1"))
        if not dumps:
            raise RuntimeError("no callgrind dump of the step")
        text = dumps[0].read_text(errors="replace")
        found = re.search(r"^totals: (\d+)", text, re.M)
        assert found, "no totals in the callgrind output"
        if args.keep is not None:
            shutil.copy(dumps[0], args.keep)
        print(f"{ok} calls ok, {failed} failed at {args.rate}/s: "
              f"{int(found.group(1)) / max(1, ok) / 1e6:.3f} M instructions per {unit} "
              f"(load {os.getloadavg()[0]:.1f})")
    finally:
        edge.stop()
        uas.terminate()
        uas.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
