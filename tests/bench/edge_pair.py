"""Two edge builds under the same load at the same time: CPU per call of each, per round.

Consecutive runs of one build under `bench_edge.py` differ by up to 15% on this shared
machine, which hides any change of a few per cent.  Here two edges (one worker each) run
side by side, each with its own sipp UAC and UAS (stateful INVITE, record-route, zero hold
time, as `bench_edge.py`), and every round offers `--rate` calls/s to both at once for
`--step` s: a burst of other load hits both, so the ratio of the two within a round moves
by 1-5% (docs/perf.md, "Ninth round, INVITE: wake-ups per call").  The two take turns
starting their caller first.  Printed per round: CPU per successful call of each (every
process of its session, from /proc), voluntary context switches per call, the ratio
second/first; at the end the median, mean and spread of the ratio.

    .venv/bin/python tests/bench/edge_pair.py A=/work/main B=.[,VAR=VALUE...]
                                             [--rate 300] [--step 5] [--rounds 8]

Each side is TAG=ROOT: a tree with its own .venv (and, for the compiled core, its own
`make compiled`); VAR=VALUE pairs after the root go into that edge's environment, to
compare two settings of one tree.  Run an A/A pair of one build first to see the spread:
two different trees differ by a few per cent on their own.

Not a test: needs sipp; the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_edge import (
    Proxy,
    free_port,
    run_step,
    session_cpu,
    start_uas,
    wait_ready,
)


def voluntary_switches(sid: int) -> int:
    """Voluntary context switches of every thread of every process of session `sid`."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) != sid:
                continue
            for task in (entry / "task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def start(tag: str, root: Path, env_extra: dict[str, str], workdir: Path) -> Proxy:
    port = free_port()
    env = dict(os.environ, SIPMESH_EDGE_LOG_LEVEL="error", PYTHONPATH=str(root),
               SIPMESH_EDGE_RR_SECRET=os.urandom(16).hex(), **env_extra)
    env.pop("SIPMESH_CONFIG", None)
    proc = subprocess.Popen([str(root / ".venv" / "bin" / "python"), "-m", "services.edge",
                             "--listen", f"udp:127.0.0.1:{port}", "--workers", "1"],
                            cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=open(workdir / f"{tag}.log", "wb"), start_new_session=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        raise RuntimeError(f"edge {tag} did not print its ready line")
    wait_ready(port, proc)
    return Proxy(tag, proc, port)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("sides", nargs=2, metavar="TAG=ROOT[,VAR=VALUE...]")
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--step", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warm", type=float, default=3.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="edge-pair-"))
    edges: list[Proxy] = []
    uases: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for side in args.sides:
            tag, rest = side.split("=", 1)
            root, *pairs = rest.split(",")
            env = dict(pair.split("=", 1) for pair in pairs)
            edges.append(start(tag, Path(root).resolve(), env, workdir))
            uases.append(start_uas(workdir))

        def both(step: float, first: int) -> dict[str, tuple[float, int, float]]:
            results: dict[str, tuple[float, int, float]] = {}

            def one(edge: Proxy, uas_port: int) -> None:
                sid = edge.proc.pid
                cpu, switches = session_cpu(sid), voluntary_switches(sid)
                ok, _, _, _ = run_step(edge, uas_port, args.rate, step, workdir)
                calls = max(ok, 1)
                results[edge.name] = ((session_cpu(sid) - cpu) / calls, ok,
                                      (voluntary_switches(sid) - switches) / calls)

            order = [first, 1 - first]
            threads = [threading.Thread(target=one, args=(edges[i], uases[i][1]))
                       for i in order]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return results

        both(args.warm, 0)
        a, b = edges[0].name, edges[1].name
        ratios: list[float] = []
        for n in range(args.rounds):
            res = both(args.step, n % 2)
            ratio = res[b][0] / res[a][0] - 1 if res[a][0] > 0 else 0.0
            ratios.append(ratio)
            cells = "  ".join(f"{t} {res[t][0] * 1e6:5.0f} us ({res[t][1]} ok, "
                              f"{res[t][2]:.2f} vol. switches/call)" for t in (a, b))
            print(f"round {n}: {cells}  {b}/{a} {ratio:+.1%}  "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
        spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
        print(f"{b}/{a}: median {statistics.median(ratios):+.1%}, "
              f"mean {statistics.mean(ratios):+.1%}, sd {spread:.1%}")
    finally:
        for edge in edges:
            edge.stop()
        for uas, _ in uases:
            uas.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
