"""Instructions per REGISTER flow or call of whole processes, under callgrind (not a test).

The load-independent counterpart of `hotpath.py --callgrind` for the real processes and
for the peer: the proxy runs under `valgrind --tool=callgrind`, sipp sends a warm-up,
then (second run) N more flows, and the proxy is left idle until the same time after the
warm-up in both runs (what timer processes and gRPC's pollers do idle cancels); each
process's count is written when it ends; the difference of the two runs over N.
(`callgrind_control` does not reach Kamailio's forked children, hence two runs.)

- `register`: Kamailio with tests/bench/registrar/kamailio_registrar.cfg on db_text with
  one subscriber, as `bench_registrar.py`'s 1-subscriber case (REGISTER, 401, REGISTER
  with qop=auth, 200; register_load.xml); one UDP worker, -DD -E.
- `invite`: Kamailio with tests/bench/kamailio.cfg (stateful, record-route), sipp's
  `uac` through it to a sipp `uas`, zero hold time, as `bench_edge.py` runs it.
- `sipmesh-register`: the bench's registrar and edge (one worker) processes, one
  subscriber: the edge's and the registrar's counts.  At the low rate callgrind allows
  each Session message carries about one REGISTER: its per-message costs are not shared.
- `sipmesh-invite`: the standalone edge (one worker) as `bench_edge.py` runs it, the
  `invite` load.
- `one-process-register`: tests/bench/one_process.py's server (the edge's core and the
  registrar's Save in one process on uvloop, no gRPC).

    python tests/bench/flow_callgrind.py WORKLOAD [--flows N] [--warm W] [--rate R]

Slow (callgrind runs C ~50x slower, Python more): keep the rate low (40/s for Kamailio,
5-20/s for Python).
"""

from __future__ import annotations

import argparse
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_edge import BUFF, free_port, wait_ready  # noqa: E402
from bench_edge import KAMAILIO_CFG as EDGE_CFG  # noqa: E402
from bench_registrar import KAMAILIO_CFG as REG_CFG  # noqa: E402
from bench_registrar import PASSWORD, ROOT, SCENARIO, USER, _env, add_subscriber  # noqa: E402


def register_cfg(workdir: Path) -> Path:
    """The bench's db_text directory with its one subscriber and the config pointing at it
    (what `bench_registrar.start_kamailio(workdir, 1)` writes)."""
    db = workdir / "kamdb"
    db.mkdir()
    (db / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\n")
    (db / "subscriber").write_text(
        "id(int,auto) username(string) domain(string) password(string) ha1(string,null) "
        f"ha1b(string,null)\n1:{USER}:127.0.0.1:{PASSWORD}::\n")
    cfg = workdir / "kamailio_registrar.cfg"
    cfg.write_text(REG_CFG.read_text().replace("DBURL", f"text://{db}"))
    return cfg


def totals(workdir: Path, name: str) -> list[int]:
    """Instructions of each process or thread (final files cg.NAME.PID[-TID]), largest
    first."""
    found = []
    for path in workdir.glob(f"cg.{name}.*"):
        match = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"),
                          re.M)
        if match:
            found.append(int(match.group(1)))
    return sorted(found, reverse=True)


def bound(port: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    """Wait until a UDP socket is bound to `port` (and a little more for the workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        if f":{port:04X} " in Path("/proc/net/udp").read_text():
            time.sleep(10)
            return
        time.sleep(0.5)
    raise RuntimeError("proxy did not bind its port")


def valgrind(workdir: Path, name: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/cg.{name}.%p"]


def ready_line(proc: subprocess.Popen[bytes], what: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 600)
    line = proc.stdout.readline().decode() if ready else ""
    if "ready" not in line:  # the services' ready lines; one_process.py's "ready"
        raise RuntimeError(f"{what} did not start: {line!r}")
    return line


def start_sipmesh(workdir: Path, port: int) -> list[subprocess.Popen[bytes]]:
    """The bench's registrar and edge (one worker), each under callgrind."""
    add_subscriber(workdir)
    env = _env()
    env["SIPMESH_REGISTRAR_STORE"] = str(workdir / "subscribers.sqlite")
    registrar = subprocess.Popen(
        [*valgrind(workdir, "registrar"), sys.executable, "-m", "services.registrar"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=open(workdir / "registrar.log", "wb"), start_new_session=True)
    words = ready_line(registrar, "registrar").split()
    env = _env()
    env["SIPMESH_EDGE_REGISTRAR"] = words[words.index("grpc") + 1]
    edge = subprocess.Popen(
        [*valgrind(workdir, "edge"), sys.executable, "-m", "services.edge", "--listen",
         f"udp:127.0.0.1:{port}", "--workers", "1"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=open(workdir / "edge.log", "wb"),
        start_new_session=True)
    ready_line(edge, "edge")
    return [edge, registrar]


def run(workload: str, warm: int, flows: int, rate: int, span: float) -> list[int]:
    """One proxy under callgrind: `warm` flows, then `flows` more, then idle until
    `span` s after the warm-up; the instructions of each of its processes."""
    workdir = Path(tempfile.mkdtemp(prefix="flowcg-"))
    port = free_port()
    if workload == "sipmesh-register":
        procs = start_sipmesh(workdir, port)
    elif workload == "sipmesh-invite":  # the standalone edge bench_edge.py runs
        procs = [subprocess.Popen(
            [*valgrind(workdir, "edge"), sys.executable, "-m", "services.edge", "--listen",
             f"udp:127.0.0.1:{port}", "--workers", "1"], cwd=ROOT,
            env={**_env(), "SIPMESH_EDGE_RR_SECRET": "0" * 32}, stdout=subprocess.PIPE,
            stderr=open(workdir / "edge.log", "wb"), start_new_session=True)]
        ready_line(procs[0], "edge")
    elif workload == "one-process-register":
        procs = [subprocess.Popen(
            [*valgrind(workdir, "one"), sys.executable, str(HERE / "one_process.py"),
             "--serve", str(port)], env={**_env(), "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, start_new_session=True)]
        ready_line(procs[0], "one_process.py")
    else:
        cfg = register_cfg(workdir) if workload == "register" else EDGE_CFG
        cmd = [*valgrind(workdir, "kamailio"), "kamailio", "-f", str(cfg), "-DD", "-E",
               "-m", "1024", "-M", "32", "-l", f"udp:127.0.0.1:{port}", "-n", "1",
               "-P", str(workdir / "kam.pid"), "-w", str(workdir)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                  stderr=open(workdir / "kamailio.log", "wb"),
                                  start_new_session=True)]
    proc = procs[0]
    uas = None
    try:
        if workload.endswith("invite"):
            # Not OPTIONS: the stateful config relays an OPTIONS to itself until
            # Max-Forwards runs out, which under callgrind keeps it busy for minutes.
            bound(port, proc)
        else:
            wait_ready(port, proc, timeout=300)
        if workload.endswith("invite"):
            uas_port = free_port()
            uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p",
                                    str(uas_port), "-nostdin", *BUFF], cwd=workdir,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
            who = ["-sn", "uac", "-rsa", f"127.0.0.1:{port}", f"127.0.0.1:{uas_port}",
                   "-d", "0"]
        else:
            who = ["-sf", str(SCENARIO), "-s", USER, "-au", USER, "-ap", PASSWORD,
                   f"127.0.0.1:{port}"]

        def load(count: int) -> None:
            done = subprocess.run(
                ["sipp", *who, "-i", "127.0.0.1", "-p", str(free_port()), "-r",
                 str(rate), "-m", str(count), "-nostdin", *BUFF, "-timeout", "300s",
                 "-timeout_error"], cwd=workdir, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=600)
            print(f"  {count} flows: sipp exit {done.returncode}", flush=True)

        load(warm)
        warmed = time.monotonic()
        if flows:
            load(flows)
        # Both runs last as long after the warm-up: the timer processes' idle work
        # cancels in the difference.
        time.sleep(max(0.0, warmed + span - time.monotonic()))
    finally:
        if uas is not None:
            uas.terminate()
        for each in procs:
            each.terminate()
            try:
                each.wait(120)
            except subprocess.TimeoutExpired:
                each.kill()
    if workload == "sipmesh-register":  # per process, Python's threads summed
        return [sum(totals(workdir, "edge")), sum(totals(workdir, "registrar"))]
    if workload == "one-process-register":
        return totals(workdir, "one")
    if workload == "sipmesh-invite":
        return totals(workdir, "edge")
    return totals(workdir, "kamailio")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workload", choices=["register", "invite", "sipmesh-register",
                                             "sipmesh-invite", "one-process-register"])
    parser.add_argument("--flows", type=int, default=400)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--rate", type=int, default=40)
    args = parser.parse_args()
    # The edge's transactions end 32 s after their last message (Timers J, K): their
    # work is counted in both runs.
    span = args.flows / args.rate * 1.5 + (40 if args.workload == "sipmesh-invite" else 5)
    base = run(args.workload, args.warm, 0, args.rate, span)
    full = run(args.workload, args.warm, args.flows, args.rate, span)
    print(f"  processes, warm-up only: {base}")
    print(f"  processes, warm-up + {args.flows}: {full}")
    per = (sum(full) - sum(base)) / args.flows
    worker = (full[0] - base[0]) / args.flows
    if args.workload == "sipmesh-register":
        print(f"SipMesh register: {per:.0f} instructions per flow, edge {worker:.0f}, "
              f"registrar {(full[1] - base[1]) / args.flows:.0f} (callgrind, "
              f"{args.flows} flows at {args.rate}/s after {args.warm})")
        return 0
    if args.workload == "sipmesh-invite":
        print(f"SipMesh edge invite: {per:.0f} instructions per call (callgrind, "
              f"{args.flows} calls at {args.rate}/s after {args.warm})")
        return 0
    if args.workload == "one-process-register":
        print(f"one_process.py register: {per:.0f} instructions per flow (callgrind, "
              f"{args.flows} flows at {args.rate}/s after {args.warm})")
        return 0
    print(f"Kamailio {args.workload}: {per:.0f} instructions per flow over all "
          f"{len(full)} processes, {worker:.0f} in the busiest (the UDP worker) "
          f"(callgrind, {args.flows} flows at {args.rate}/s after {args.warm})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
