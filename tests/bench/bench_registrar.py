"""Benchmark: REGISTER with digest authentication, SipMesh (edge + registrar) vs Kamailio;
memory per binding; replication lag between two full-sharing registrar nodes.

1. REGISTER/s: sipp (tests/bench/registrar/register_load.xml: REGISTER, 401, REGISTER with
   credentials, 200) at rising rates against (a) one edge worker + one registrar process
   and (b) Kamailio with one UDP worker (tests/bench/registrar/kamailio_registrar.cfg:
   auth_db on db_text, qop=auth, save() in memory).  A step passes when at most 0.1% of its
   registrations failed, it ended within 10% (+0.5 s) of its length and at most 1% of the
   requests were retransmitted (the server kept up; see `climb`); the figure is the last
   rate that passed.  Goal: SipMesh >= 0.5x.
   Also (`workers`), for information: the edge with 2 workers (one per core here); and
   (`users`) SipMesh again with 20,000 subscribers taken in turn, so that credentials are
   rarely cached, as with real phones (Kamailio's db_text is no fair peer for that: it
   scans the table on every lookup).
2. Memory per binding: 100,000 AORs with one binding each saved into the registrar's
   location table in this process (tracemalloc, bytes per binding).  Goal: <= 2 KB.
3. CPU per registration (`cpu`): the registrar's and the edge's CPU time (/proc) per
   REGISTER at a fixed rate (`--cpu-rate`, default 1000/s), each one a new subscriber and
   so a new binding to store: what write-through costs, less disturbed by other load
   than the maximum rate.
4. CPU per REGISTER against Kamailio (`vs`): every process of each side summed (the
   edge and the registrar; Kamailio's whole session) at the same offered rates, the two
   taking turns step by step so that other load on the machine hits both; the ratio
   Kamailio/SipMesh.  Once with the one subscriber of the climbs (credentials cached at
   the edge) and once with `--users` subscribers taken in turn, Kamailio then reading
   them with auth_db from PostgreSQL (db_text scans its table on each lookup).
5. Scale-out (`scale`): CPU per REGISTER (all processes) and the maximum rate for 1 and 2
   edge workers x 1 and 2 registrar nodes (full-sharing: each binding replicated to the
   other node); the difference between 1 and 2 nodes is the replication cost per binding.
6. Replication lag: two registrar nodes in full-sharing; while sipp registers through an
   edge into node 1 at `--lag-rate`, markers added on node 1 (MI ul_add) are timed until
   node 2 shows them (MI ul_show_contact polled every 2 ms); median and p95 printed.

    .venv/bin/python tests/bench/bench_registrar.py [--step SECONDS]
                                    [--only sipmesh,kamailio,memory,lag,workers,users,
                                            cpu,vs,scale(,kamailio-users)] [--cpu-rate N]
                                    [--users N] [--vs-rates 500,1000] [--scale-rate N]
                                    [--edge-check-too] [--also NAME:VAR=VALUE,...]

`--also` (repeatable) adds to `vs` and `cpu` a SipMesh variant whose edge and registrar get
those environment variables, in the same rotation (e.g. `--also
fsync:SIPMESH_REGISTRAR_SQLITE_SYNCHRONOUS=full`).

Not a test: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench_edge import BUFF, Proxy, free_port, session_cpu, wait_ready  # noqa: E402

from shared import compiled  # noqa: E402

SCENARIO = HERE / "registrar" / "register_load.xml"
SCENARIO_USERS = HERE / "registrar" / "register_users.xml"  # subscribers from -inf
KAMAILIO_CFG = HERE / "registrar" / "kamailio_registrar.cfg"
RATES = [100, 200, 300, 400, 600, 800, 1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000,
         6000, 8000, 10000, 12500, 15000, 20000, 25000, 30000]
MAX_FAILED = 0.001
MAX_RETRANSMITTED = 0.01
USER, PASSWORD = "bench", "bench-pw"
# One UDP socket per registration: with several edge workers on one SO_REUSEPORT port the
# kernel spreads datagrams by source address, so one socket would feed one worker only.
MULTI_SOCKET = ["-t", "un", "-max_socket", "10000"]


_STATE: list[str] = []  # the processes' $XDG_STATE_HOME, made on first use


def _env() -> dict[str, str]:
    # A state directory of the bench's own: by default the edge writes its key
    # (services/edge/keyfile.py) and the tools their stores under ~/.local/state.
    if not _STATE:
        _STATE.append(tempfile.mkdtemp(prefix="bench-registrar-state-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIPMESH_EDGE_LOG_LEVEL="error",
               SIPMESH_REGISTRAR_LOG_LEVEL="error", XDG_STATE_HOME=_STATE[0])
    env.pop("SIPMESH_CONFIG", None)
    return env


def start_registrar(workdir: Path, name: str, extra: dict[str, str] | None = None
                    ) -> tuple[subprocess.Popen[str], str, str, str]:
    """(process, grpc address, MI URL, cluster URL or "")."""
    env = _env()
    env["SIPMESH_REGISTRAR_STORE"] = str(workdir / "subscribers.sqlite")
    env.update(extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "services.registrar"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=open(workdir / f"{name}.log", "wb"),
                            text=True, start_new_session=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if "registrar ready" not in line:
        raise RuntimeError(f"registrar did not start: {line!r}")
    words = line.split()
    cluster = words[words.index("cluster") + 1] if "cluster" in words else ""
    return proc, words[words.index("grpc") + 1], words[words.index("http") + 1] + "/mi", cluster


def stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def start_edge(workdir: Path, registrar: str, workers: int = 1,
               extra: dict[str, str] | None = None) -> Proxy:
    port = free_port()
    env = _env()
    env["SIPMESH_EDGE_REGISTRAR"] = registrar
    env.update(extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "services.edge", "--listen",
                             f"udp:127.0.0.1:{port}", "--workers", str(workers)],
                            cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=open(workdir / "edge.log", "wb"),
                            start_new_session=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        raise RuntimeError("edge did not print its ready line")
    wait_ready(port, proc)
    return Proxy("sipmesh", proc, port)


def start_kamailio(workdir: Path, users: int = 1, db_url: str | None = None) -> Proxy:
    """Kamailio with auth_db on db_text (written here), or on `db_url` (PostgreSQL)."""
    db = workdir / "kamdb"
    db.mkdir(exist_ok=True)
    (db / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\n")
    rows = ([f"1:{USER}:127.0.0.1:{PASSWORD}::\n"] if users == 1 else
            [f"{i + 1}:user{i}:127.0.0.1:pw{i}::\n" for i in range(users)])
    (db / "subscriber").write_text(
        "id(int,auto) username(string) domain(string) password(string) ha1(string,null) "
        "ha1b(string,null)\n" + "".join(rows))
    cfg = workdir / "kamailio_registrar.cfg"
    text = KAMAILIO_CFG.read_text().replace("DBURL", db_url or f"text://{db}")
    if db_url is not None:
        text = text.replace('loadmodule "db_text.so"', 'loadmodule "db_postgres.so"')
    cfg.write_text(text)
    port = free_port()
    cmd = ["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "1024", "-M", "32",
           "-l", f"udp:127.0.0.1:{port}", "-n", "1", "-P", str(workdir / "kam.pid"),
           "-w", str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "kamailio.log", "wb"), start_new_session=True)
    wait_ready(port, proc)
    return Proxy("kamailio", proc, port)


def pg_subscribers(users: int) -> str:
    """A PostgreSQL database of `users` Kamailio subscribers (user0/pw0, ...) on the local
    server; returns its Kamailio db_url.  Dropped by `drop_pg`."""
    name = f"kambench_{os.getpid()}"
    psql = ["psql", "-q", "-U", "postgres", "-h", "127.0.0.1", "-v", "ON_ERROR_STOP=1"]
    subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {name}", "-c",
                    f"CREATE DATABASE {name}"], check=True, capture_output=True, timeout=60)
    schema = (
        "CREATE TABLE version (table_name varchar(32) NOT NULL, "
        "table_version integer DEFAULT 0 NOT NULL);"
        "INSERT INTO version VALUES ('subscriber', 7);"
        "CREATE TABLE subscriber (id serial PRIMARY KEY, "
        "username varchar(64) NOT NULL DEFAULT '', domain varchar(64) NOT NULL DEFAULT '', "
        "password varchar(64) NOT NULL DEFAULT '', ha1 varchar(128) NOT NULL DEFAULT '', "
        "ha1b varchar(128) NOT NULL DEFAULT '', UNIQUE (username, domain));"
        "INSERT INTO subscriber (username, domain, password) SELECT 'user' || i, "
        f"'127.0.0.1', 'pw' || i FROM generate_series(0, {users - 1}) AS i;")
    subprocess.run([*psql, "-d", name, "-c", schema], check=True, capture_output=True,
                   timeout=120)
    return f"postgres://postgres@127.0.0.1/{name}"


def pg_cpu(db_url: str) -> float:
    """CPU seconds of the PostgreSQL backends serving `db_url`'s database (Kamailio's
    lookups cost the server too; SipMesh's subscriber store runs inside the registrar)."""
    name = db_url.rsplit("/", 1)[1].encode()
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if name not in (entry / "cmdline").read_bytes():
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def drop_pg(db_url: str) -> None:
    subprocess.run(["psql", "-q", "-U", "postgres", "-h", "127.0.0.1", "-c",
                    f"DROP DATABASE IF EXISTS {db_url.rsplit('/', 1)[1]}"],
                   capture_output=True, timeout=60)


def run_step(port: int, rate: int, step: float, workdir: Path, users: Path | None = None,
             sockets: list[str] | None = None) -> tuple[int, int, float, int]:
    """(successful, failed, seconds the step took, retransmissions sipp sent); `users`: a
    sipp injection file of subscribers taken in turn (else the one `USER`); `sockets`:
    sipp's transport options (default one UDP socket for every call)."""
    calls = max(1, int(rate * step))
    stat = workdir / f"stat-{port}-{rate}.csv"
    who = (["-sf", str(SCENARIO_USERS), "-inf", str(users)] if users is not None else
           ["-sf", str(SCENARIO), "-s", USER, "-au", USER, "-ap", PASSWORD])
    cmd = ["sipp", *who,
           "-i", "127.0.0.1", "-p", str(free_port()), f"127.0.0.1:{port}",
           "-r", str(rate), "-m", str(calls), "-nostdin", *BUFF, *(sockets or []),
           "-timeout", f"{int(step) + 20}s", "-timeout_error",
           "-trace_stat", "-stf", str(stat), "-fd", "1"]
    started = time.monotonic()
    subprocess.run(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=step + 60)
    took = time.monotonic() - started
    ok = failed = retrans = 0
    if stat.exists():
        with stat.open() as fh:
            rows = list(csv.reader(fh, delimiter=";"))
        if len(rows) >= 2:
            head, last = rows[0], rows[-1]
            ok = int(last[head.index("SuccessfulCall(C)")])
            failed = int(last[head.index("FailedCall(C)")])
            retrans = int(last[head.index("Retransmissions(C)")])
    return ok, max(failed, calls - ok), took, retrans


def climb(name: str, port: int, step: float, workdir: Path, users: Path | None = None,
          start: int = 0, sockets: list[str] | None = None) -> int:
    """The highest rate the server kept up with: at most 0.1% failed, the step over within
    10% (+0.5 s) of its length, and at most 1% of the requests retransmitted.  Success
    alone is not enough: sipp waits for late answers, so a server far behind (answering
    from a growing queue, every request retransmitted) would still pass."""
    best = 0
    for rate in RATES:
        if rate < start:
            continue
        ok, failed, took, retrans = run_step(port, rate, step, workdir, users, sockets)
        total = ok + failed
        share = failed / total if total else 1.0
        late = took > step * 1.1 + 0.5
        retransmitted = retrans / (2 * total) if total else 1.0  # two requests per call
        passed = share <= MAX_FAILED and not late and retransmitted <= MAX_RETRANSMITTED
        print(f"  {name:<9} {rate:>6} REGISTER/s: {ok:>7} ok {failed:>6} failed "
              f"({share:.3%}), {took:4.1f} s, {retransmitted:6.2%} retransmitted "
              f"{'ok' if passed else 'FAILED'}", flush=True)
        if not passed:
            break
        best = rate
    return best


def add_subscriber(workdir: Path) -> None:
    subprocess.run([sys.executable, "-m", "sipmesh.cli.main", "user", "add",
                    f"{USER}@127.0.0.1", PASSWORD, "--store",
                    str(workdir / "subscribers.sqlite")], cwd=ROOT, env=_env(), check=True,
                   capture_output=True, timeout=60)


def many_subscribers(workdir: Path, count: int) -> Path:
    """`count` subscribers (user0..) in the SipMesh store of `workdir` and a sipp injection
    file naming them; returns the file."""
    import asyncio
    import sqlite3

    from services.registrar.subscribers import DEFAULT_TABLE, SQLiteSubscribers, ha1_hashes

    path = workdir / "subscribers.sqlite"

    async def create() -> None:  # the store's own schema
        store = SQLiteSubscribers(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    rows = [(f"user{i}", "127.0.0.1", *ha1_hashes(f"user{i}", "127.0.0.1", f"pw{i}"))
            for i in range(count)]
    with sqlite3.connect(path) as db:
        db.executemany(f"INSERT OR REPLACE INTO {DEFAULT_TABLE} VALUES (?, ?, ?, ?)", rows)
    inf = workdir / "users.csv"
    write_injection(inf, count)
    return inf


def write_injection(path: Path, count: int) -> None:
    """sipp -inf lines `userN;[authentication ...]` (sipp fills keywords in from a field;
    it cannot nest a field inside the [authentication] keyword of a scenario)."""
    path.write_text("SEQUENTIAL\n" + "".join(
        f"user{i};[authentication username=user{i} password=pw{i}]\n" for i in range(count)))


def bench_sipmesh(step: float, workdir: Path, workers: int = 1, users: int = 1) -> int:
    inf = many_subscribers(workdir, users) if users > 1 else None
    if inf is None:
        add_subscriber(workdir)
    reg, grpc, _, _ = start_registrar(workdir, "registrar")
    try:
        edge = start_edge(workdir, grpc, workers)
        try:
            name = "sipmesh" if workers == 1 else f"sm-{workers}w"
            return climb(name if users == 1 else f"sm-{users}u", edge.port, step, workdir,
                         inf)
        finally:
            edge.stop()
    finally:
        stop(reg)


def bench_kamailio(step: float, workdir: Path, users: int = 1) -> int:
    kam = start_kamailio(workdir, users)
    inf = None
    if users > 1:
        inf = workdir / "users.csv"
        write_injection(inf, users)
    try:
        return climb("kamailio" if users == 1 else f"kam-{users}u", kam.port, step, workdir,
                     inf)
    finally:
        kam.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The edge checking REGISTER's digest itself (GetCredentials, then Save), as before the
# registrar verified it on Save (issue 22): `--edge-check-too` measures both.
EDGE_CHECK = {"SIPMESH_EDGE_REGISTER_DIGEST_ON_SAVE": "false"}


def cpu_per_register(step: float, workdir: Path, rate: int, users: int,
                     edge_env: dict[str, str] | None = None, label: str = "") -> None:
    """CPU of the registrar and of the edge per REGISTER at a fixed `rate`, each call a new
    subscriber (a new binding, so every registration is a row to store): a figure that
    other load on the machine changes far less than the maximum rate does."""
    inf = many_subscribers(workdir, users)
    reg, grpc, mi, _ = start_registrar(workdir, "registrar", edge_env)
    try:
        edge = start_edge(workdir, grpc, extra=edge_env)
        try:
            r0, e0 = cpu_seconds(reg.pid), cpu_seconds(edge.proc.pid)
            ok, failed, took, _ = run_step(edge.port, rate, step, workdir, inf)
            r1, e1 = cpu_seconds(reg.pid), cpu_seconds(edge.proc.pid)
        finally:
            edge.stop()
        stats = _mi(mi, "get_statistics", [["usrloc:"]])["result"]
    finally:
        stop(reg)
    writes = stats.get("usrloc:sql_writes")
    shared = f", {ok / writes:.1f} registrations per SQL transaction" if writes else ""
    how = f" ({label})" if label else " (edge-checked digest)" if edge_env else ""
    print(f"  CPU per REGISTER at {rate}/s{how} ({ok} ok, {failed} failed, {took:.1f} s): "
          f"registrar {(r1 - r0) / max(ok, 1) * 1e6:.0f} us, "
          f"edge {(e1 - e0) / max(ok, 1) * 1e6:.0f} us{shared}", flush=True)


class Stack:
    """SipMesh for a REGISTER load: `nodes` registrar processes (full-sharing when 2) and
    one edge with `workers` workers, every process in a session of its own."""

    def __init__(self, workdir: Path, *, users: int = 1, workers: int = 1,
                 nodes: int = 1, edge_env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.inf = many_subscribers(workdir, users) if users > 1 else None
        if self.inf is None:
            add_subscriber(workdir)
        self.registrars: list[subprocess.Popen[str]] = []
        try:
            if nodes == 1:
                reg, grpc, _, _ = start_registrar(workdir, "registrar", edge_env)
                self.registrars.append(reg)
                addresses = [grpc]
            else:
                common = {"SIPMESH_REGISTRAR_CLUSTER_MODE": "full-sharing",
                          "SIPMESH_REGISTRAR_CLUSTER_SECRET": "bench"}
                one, grpc1, _, url1 = start_registrar(workdir, "node1", {
                    **common, "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": "1",
                    "SIPMESH_REGISTRAR_CLUSTER_SEED": "true"})
                self.registrars.append(one)
                two, grpc2, mi2, _ = start_registrar(workdir, "node2", {
                    **common, "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": "2",
                    "SIPMESH_REGISTRAR_CLUSTER_SEEDS": f"1@{url1}"})
                self.registrars.append(two)
                addresses = [grpc1, grpc2]
                _wait_synced(mi2)
            self.edge = start_edge(workdir, ",".join(addresses), workers, edge_env)
        except BaseException:
            self.stop()
            raise

    @property
    def port(self) -> int:
        return int(self.edge.port)

    def cpu(self) -> tuple[float, float]:
        """(CPU seconds of every process, of which the registrar nodes')."""
        registrars = sum(session_cpu(r.pid) for r in self.registrars)
        return session_cpu(self.edge.proc.pid) + registrars, registrars

    def stop(self) -> None:
        if hasattr(self, "edge"):
            self.edge.stop()
        for reg in self.registrars:
            stop(reg)


def _wait_synced(mi: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        caps = _mi(mi, "clusterer_list_cap", [])["result"]["Clusters"][0]["Capabilities"]
        if all(c["state"] == "Ok" for c in caps):
            return
        time.sleep(0.05)  # waiting for the sync, with a deadline


def versus(step: float, workdir: Path, rates: list[int], users: int, rounds: int = 2,
           edge_check_too: bool = False, also: dict[str, dict[str, str]] | None = None
           ) -> None:
    """CPU per REGISTER, SipMesh (edge + registrar) against Kamailio, interleaved; with
    `edge_check_too` also SipMesh with the digest checked at the edge (the path before
    SaveWithDigest), in the same rotation."""
    label = "1 subscriber" if users == 1 else f"{users} subscribers in turn"
    db_url = pg_subscribers(users) if users > 1 else None
    stacks = {"sipmesh": Stack(workdir / f"vs-sipmesh-{users}", users=users)}
    try:
        if edge_check_too:
            stacks["edge-check"] = Stack(workdir / f"vs-edgecheck-{users}", users=users,
                                         edge_env=EDGE_CHECK)
        for name, env in (also or {}).items():
            stacks[name] = Stack(workdir / f"vs-{name}-{users}", users=users, edge_env=env)
        kamdir = workdir / f"vs-kamailio-{users}"
        kamdir.mkdir()
        kam = start_kamailio(kamdir, users, db_url)
        inf = stacks["sipmesh"].inf
        try:
            peer = "auth_db on PostgreSQL, its backends counted" if db_url else \
                "auth_db on db_text"
            print(f"CPU per REGISTER with digest, {label}, all processes summed ({peer}); "
                  f"interleaved, {rounds} x {step:g} s per side and rate:", flush=True)
            for rate in rates:
                sides = [*stacks, "kamailio"]
                spent = dict.fromkeys(sides, 0.0)
                done = dict.fromkeys(sides, 0)
                failed_any = dict.fromkeys(sides, 0)
                for _ in range(rounds):
                    for name, stack in stacks.items():
                        before, _ = stack.cpu()
                        ok, failed, _, _ = run_step(stack.port, rate, step, workdir, inf)
                        spent[name] += stack.cpu()[0] - before
                        done[name] += ok
                        failed_any[name] += failed
                    before = session_cpu(kam.proc.pid) + (pg_cpu(db_url) if db_url else 0)
                    ok, failed, _, _ = run_step(kam.port, rate, step, workdir, inf)
                    spent["kamailio"] += (session_cpu(kam.proc.pid) - before
                                          + (pg_cpu(db_url) if db_url else 0))
                    done["kamailio"] += ok
                    failed_any["kamailio"] += failed
                per = {k: spent[k] / max(1, done[k]) for k in spent}
                notes = "".join(f" ({k}: {n} failed)" for k, n in failed_any.items() if n)
                check = "".join(f", sipmesh {k} {per[k] * 1e6:5.0f} us" for k in stacks
                                if k != "sipmesh")
                print(f"  {rate:>5} REGISTER/s: sipmesh {per['sipmesh'] * 1e6:5.0f} us{check}, "
                      f"kamailio {per['kamailio'] * 1e6:5.0f} us; kamailio/sipmesh "
                      f"{per['kamailio'] / max(per['sipmesh'], 1e-9):.2f} (goal >= 0.5)"
                      f"{notes}", flush=True)
        finally:
            kam.stop()
    finally:
        for stack in stacks.values():
            stack.stop()
        if db_url is not None:
            drop_pg(db_url)


def scale_out(step: float, workdir: Path, rate: int, users: int) -> None:
    """1 and 2 edge workers x 1 and 2 registrar nodes: CPU per REGISTER at `rate` and the
    highest rate kept up with (from `rate` on)."""
    print(f"scale-out, {users} subscribers in turn, one sipp socket per registration: CPU "
          f"per REGISTER at {rate}/s (every process; registrar nodes' share) and the "
          f"maximum rate:", flush=True)
    rows = []
    for workers, nodes in ((1, 1), (2, 1), (1, 2), (2, 2)):
        stack = Stack(workdir / f"scale-{workers}w-{nodes}n", users=users, workers=workers,
                      nodes=nodes)
        try:
            total0, reg0 = stack.cpu()
            ok, failed, _, _ = run_step(stack.port, rate, step, workdir, stack.inf,
                                        MULTI_SOCKET)
            total1, reg1 = stack.cpu()
            best = climb(f"{workers}w/{nodes}n", stack.port, step, workdir, stack.inf,
                         start=rate, sockets=MULTI_SOCKET)
        finally:
            stack.stop()
        per, reg = (total1 - total0) / max(ok, 1), (reg1 - reg0) / max(ok, 1)
        rows.append((workers, nodes, per, reg, best, failed))
    print("  edge workers  registrar nodes  CPU/REGISTER  of which registrars  max REGISTER/s")
    for workers, nodes, per, reg, best, failed in rows:
        note = f"  ({failed} failed at {rate}/s)" if failed else ""
        print(f"  {workers:>12}  {nodes:>15}  {per * 1e6:9.0f} us  {reg * 1e6:16.0f} us"
              f"  {best:>14}{note}")
    one = next(r for r in rows if r[:2] == (1, 1))
    two = next(r for r in rows if r[:2] == (1, 2))
    print(f"  replication cost per binding (2 nodes - 1 node, 1 worker): "
          f"{(two[2] - one[2]) * 1e6:.0f} us of CPU", flush=True)


def memory_per_binding(count: int = 100_000) -> float:
    from services.registrar.location import Location, Origin
    from shared.sip import Request, parse_message

    template = ("REGISTER sip:example.com SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 10.{a}.{b}.{c}:5060;branch=z9hG4bK{i}\r\n"
                "From: <sip:user{i}@example.com>;tag={i}\r\nTo: <sip:user{i}@example.com>\r\n"
                "Call-ID: {i}-bench@10.0.0.1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
                "Contact: <sip:user{i}@10.{a}.{b}.{c}:5060;transport=udp>;expires=3600\r\n"
                "User-Agent: bench-phone/1.0\r\nContent-Length: 0\r\n\r\n")
    loc = Location()
    now = time.time()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
        msg = parse_message(template.format(i=i, a=a, b=b, c=c).encode())
        assert isinstance(msg, Request)
        result = loc.save(msg, Origin(f"10.{a}.{b}.{c}", 5060, "udp", "udp:127.0.0.1:5060"),
                          now)
        assert result.status == 200
        del msg, result
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert loc.contact_count == count
    return (after - before) / count


def _mi(url: str, method: str, params: object) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
        {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def replication_lag(workdir: Path, rate: int, markers: int = 30) -> list[float]:
    add_subscriber(workdir)
    common = {"SIPMESH_REGISTRAR_CLUSTER_MODE": "full-sharing",
              "SIPMESH_REGISTRAR_CLUSTER_SECRET": "bench"}
    one, grpc1, mi1, url1 = start_registrar(workdir, "node1", {
        **common, "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": "1",
        "SIPMESH_REGISTRAR_CLUSTER_SEED": "true"})
    two, _, mi2, _ = start_registrar(workdir, "node2", {
        **common, "SIPMESH_REGISTRAR_CLUSTER_NODE_ID": "2",
        "SIPMESH_REGISTRAR_CLUSTER_SEEDS": f"1@{url1}"})
    edge = start_edge(workdir, grpc1)
    load = None
    lags: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            caps = _mi(mi2, "clusterer_list_cap", [])["result"]["Clusters"][0]["Capabilities"]
            if all(c["state"] == "Ok" for c in caps):
                break
            time.sleep(0.05)  # waiting for the sync, with a deadline
        load = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIO), "-s", USER, "-au", USER, "-ap", PASSWORD, "-i",
             "127.0.0.1", "-p", str(free_port()), f"127.0.0.1:{edge.port}", "-r", str(rate),
             "-m", str(rate * 60), "-nostdin", *BUFF], cwd=workdir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1.0)  # let the load reach its rate before measuring under it
        for n in range(markers):
            aor = f"marker{n}@127.0.0.1"
            started = time.perf_counter()
            _mi(mi1, "ul_add", ["location", aor, f"sip:m{n}@10.9.9.9", 600, "1", 0, 0, 0])
            while "result" not in _mi(mi2, "ul_show_contact", ["location", aor]):
                if time.perf_counter() - started > 10:
                    raise RuntimeError(f"{aor} never reached node 2")
                time.sleep(0.002)
            lags.append((time.perf_counter() - started) * 1000)
    finally:
        if load is not None:
            stop(load)
        edge.stop()
        stop(two)
        stop(one)
    return lags


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step", type=float,
                        default=float(os.environ.get("BENCH_STEP_SECONDS", "5")))
    parser.add_argument("--only",
                        default="vs,sipmesh,kamailio,memory,lag,workers,users,cpu,scale")
    parser.add_argument("--users", type=int, default=20_000,
                        help="subscribers of the many-users climb (`users`)")
    parser.add_argument("--lag-rate", type=int, default=200)
    parser.add_argument("--cpu-rate", type=int, default=1000,
                        help="REGISTER/s of the CPU-per-registration measurement (`cpu`)")
    parser.add_argument("--vs-rates", default="500,1000",
                        help="offered REGISTER/s of the comparison with Kamailio (`vs`)")
    parser.add_argument("--edge-check-too", action="store_true",
                        help="`vs` and `cpu` also measure the digest checked at the edge "
                             "(GetCredentials + Save, the path before SaveWithDigest)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME:VAR=VALUE,...",
                        help="`vs` and `cpu` also measure SipMesh with these environment "
                             "variables (edge and registrar), in the same rotation")
    parser.add_argument("--scale-rate", type=int, default=500,
                        help="REGISTER/s of the scale-out CPU figure, and the climbs' start")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    also: dict[str, dict[str, str]] = {}
    for spec in args.also:
        name, _, assigns = spec.partition(":")
        also[name] = dict(a.split("=", 1) for a in assigns.split(",") if a)
    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None:
            print(f"{tool} missing: run tests/peers/ensure.sh (make bench does)")
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="bench-registrar-"))
    print(f"bench_registrar: {args.step:g} s steps, stop when the server falls behind: "
          f"> {MAX_FAILED:.1%} failed, late, or > {MAX_RETRANSMITTED:.0%} retransmitted "
          f"(work dir {workdir}; SIP core {compiled.mode()})", flush=True)
    results: dict[str, int] = {}
    if "vs" in wanted:
        rates = [int(r) for r in args.vs_rates.split(",")]
        versus(args.step, workdir, rates, 1, edge_check_too=args.edge_check_too, also=also)
        if args.users > 1:  # `--users 1`: the run above (twice would add the user twice)
            versus(args.step, workdir, rates, args.users, edge_check_too=args.edge_check_too,
                   also=also)
        print()
    if "sipmesh" in wanted:
        (workdir / "sipmesh").mkdir()
        results["sipmesh"] = bench_sipmesh(args.step, workdir / "sipmesh")
    if "kamailio" in wanted:
        results["kamailio"] = bench_kamailio(args.step, workdir)
    if "workers" in wanted:
        # Not the comparison (Kamailio runs one worker): what this machine gives a user who
        # runs the edge with one worker per core.
        (workdir / "sipmesh2").mkdir()
        results["sipmesh, 2 edge workers"] = bench_sipmesh(args.step, workdir / "sipmesh2", 2)
    if "users" in wanted:
        # Phones re-register every few minutes at best: with this many subscribers a
        # subscriber's credentials are rarely still in the edge's 2 s cache, as in real life
        # (the one-subscriber climbs above always hit it).  SipMesh only: Kamailio's
        # db_text scans its table for every lookup (~2,000/s at 20,000 subscribers here),
        # which says nothing about Kamailio on a real database.
        (workdir / "sipmesh-users").mkdir()
        results[f"sipmesh, {args.users} subscribers"] = bench_sipmesh(
            args.step, workdir / "sipmesh-users", users=args.users)
    if "kamailio-users" in wanted:  # opt-in: shows the db_text scan
        (workdir / "kamailio-users").mkdir()
        results[f"kamailio, {args.users} subscribers"] = bench_kamailio(
            args.step, workdir / "kamailio-users", users=args.users)
    print("\nREGISTER with digest auth, maximum rate the server kept up with:")
    for key, rate in results.items():
        print(f"  {key:<30} {rate:>6} REGISTER/s")
    if results.get("sipmesh") is not None and results.get("kamailio"):
        print(f"  ratio sipmesh / kamailio (1 worker each): "
              f"{results['sipmesh'] / results['kamailio']:.2f} (goal >= 0.5)")
    if "cpu" in wanted:
        (workdir / "cpu").mkdir()
        print("\nCPU per registration (each a new binding, default configuration):")
        cpu_per_register(args.step * 2, workdir / "cpu", args.cpu_rate, args.users)
        if args.edge_check_too:
            (workdir / "cpu-edge-check").mkdir()
            cpu_per_register(args.step * 2, workdir / "cpu-edge-check", args.cpu_rate,
                             args.users, EDGE_CHECK)
        for name, env in also.items():
            (workdir / f"cpu-{name}").mkdir()
            cpu_per_register(args.step * 2, workdir / f"cpu-{name}", args.cpu_rate,
                             args.users, env, name)
    if "scale" in wanted:
        print()
        scale_out(args.step, workdir, args.scale_rate, args.users)
    if "memory" in wanted:
        per = memory_per_binding()
        print(f"\nmemory per binding at 100,000 bindings: {per:.0f} bytes (goal <= 2048)")
    if "lag" in wanted:
        lagdir = workdir / "lag"
        lagdir.mkdir()
        lags = replication_lag(lagdir, args.lag_rate)
        lags.sort()
        p95 = lags[min(len(lags) - 1, int(len(lags) * 0.95))]
        print(f"\nreplication lag node 1 -> node 2 under {args.lag_rate} REGISTER/s: "
              f"median {statistics.median(lags):.1f} ms, p95 {p95:.1f} ms "
              f"(includes the MI round trips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
