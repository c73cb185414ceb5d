"""Dialog service figures (a script, not a test): run by `make bench`.

1. Call rate (sipp UAC -> proxy -> sipp UAS, built-in scenarios, zero hold time, rising
   rate, one proxy worker each, all in the same run):
   * the SipMesh edge alone (record-route, no dialog tracking);
   * the edge + the dialog service: every call tracked and one CDR written to
     PostgreSQL (the dialog table in the default SQLite file);
   * Kamailio 5.6 with `dialog` (dlg_manage) + `acc` (cdr_enable, CDRs into the same
     PostgreSQL): tests/bench/dialog/kamailio_dialog.cfg.
   A step passes when at most 0.1% of its calls failed *and* every successful call of
   the step has its CDR row within 3 s of the step's end (a tracker that falls behind
   does not pass by leaving its work in a buffer). Printed: each maximum, the cost of
   tracking (edge+dialog / edge alone; goal >= 0.85, i.e. tracking costs <= 15%) and the
   ratio to Kamailio.
2. Memory per dialog at 100,000 confirmed dialogs (the dialog table in this process,
   tracemalloc; goal <= 4 KB).
3. Full sync of 100,000 dialogs to a joining node: a dialog node loads them from its
   dialog table, a second one joins with an empty table; figure: the joiner's sync time
   from clusterer_list_sync (goal < 2 s).
4. CDR write throughput to PostgreSQL: the service's path (idempotent inserts of the CDRs
   piled up meanwhile, up to 500 per statement), rows/s; single-row inserts for comparison.

    .venv/bin/python tests/bench/bench_dialog.py [--step 5] [--only rate,memory,sync,cdr]

Numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_edge as be  # noqa: E402

from contracts.generated.sipmesh.dialog.v1 import dialog_pb2 as pb  # noqa: E402
from services.dialog.cdr import Cdr  # noqa: E402
from services.dialog.model import encode  # noqa: E402
from services.dialog.store import PostgresCdrStore, SQLiteDialogStore  # noqa: E402
from services.dialog.table import DialogTable  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
KAM_PG = "postgres://postgres@127.0.0.1/test"
KAM_CFG = Path(__file__).resolve().parent / "dialog" / "kamailio_dialog.cfg"
DIALOGS = 100_000


def psql(sql: str) -> str:
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atqc",
                          sql], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


def rows(table: str) -> int:
    return int(psql(f"SELECT count(*) FROM {table}") or 0)


# == 1. call rate =================================================================================

def start_dialog_service(workdir: Path, table: str, env_extra: dict[str, str] | None = None,
                         ) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, SIPMESH_DIALOG_CDR_URL=PG, SIPMESH_DIALOG_CDR_TABLE=table,
               SIPMESH_DIALOG_LOG_LEVEL="warning", XDG_STATE_HOME=str(workdir / "state"),
               PYTHONPATH=str(ROOT), **(env_extra or {}))
    env.pop("SIPMESH_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "services.dialog"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=open(workdir / f"{table}.log", "wb"),
                            text=True, start_new_session=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if "dialog ready" not in line:
        raise RuntimeError(f"dialog service did not start: {line!r}")
    return proc, line


def start_tracked_edge(workdir: Path, grpc: str) -> be.Proxy:
    port = be.free_port()
    env = dict(os.environ, SIPMESH_EDGE_LOG_LEVEL="error", PYTHONPATH=str(ROOT),
               SIPMESH_EDGE_DIALOG=grpc)
    env.pop("SIPMESH_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "services.edge", "--listen",
                             f"udp:127.0.0.1:{port}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=open(workdir / "edge-dlg.log", "wb"),
                            start_new_session=True)
    assert proc.stdout is not None
    select.select([proc.stdout], [], [], 30)
    be.wait_ready(port, proc)
    return be.Proxy("edge+dialog", proc, port)


def start_kamailio(workdir: Path, table: str) -> be.Proxy:
    port = be.free_port()
    cmd = ["kamailio", "-f", str(KAM_CFG), "-DD", "-E", "-m", "4096", "-M", "32",
           "-l", f"udp:127.0.0.1:{port}", "-n", "1", "-P", str(workdir / "kam.pid"),
           "-w", str(workdir), "-A", f'DBURL="{KAM_PG}"', "-A", f'CDRTABLE="{table}"']
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "kamailio.log", "wb"), start_new_session=True)
    be.wait_ready(port, proc)
    return be.Proxy("kamailio+dlg", proc, port)


def climb(proxy: be.Proxy, uas_port: int, step: float, workdir: Path,
          cdr_table: str | None, cpu: dict[int, float], attempts: int = 2,
          extra_sid: int | None = None) -> int:
    """bench_edge's climb, plus: with `cdr_table`, the step's CDRs must all be written.
    `cpu` gets the proxy's CPU per call (us) of each passed step (with `extra_sid`, the CPU
    of that session too: the dialog service's, reported apart)."""
    best = 0
    for rate in be.RATES:
        passed = False
        for attempt in range(1, attempts + 1):
            before = rows(cdr_table) if cdr_table else 0
            extra_before = be.session_cpu(extra_sid) if extra_sid else 0.0
            started = time.monotonic()
            ok, failed, proxy_cpu, uac_cpu = be.run_step(proxy, uas_port, rate, step, workdir)
            extra = (be.session_cpu(extra_sid) - extra_before) / min(
                step, time.monotonic() - started) if extra_sid else 0.0
            total = ok + failed
            share = failed / total if total else 1.0
            written = ok
            if cdr_table:
                deadline = time.monotonic() + 3.0
                while True:
                    written = rows(cdr_table) - before
                    if written >= ok or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)  # polling the table with a deadline
            passed = share <= be.MAX_FAILED and written >= ok
            note = "" if not cdr_table else f" cdrs {written:>6}"
            also = f" dialog {extra:4.0%}" if extra_sid else ""
            print(f"  {proxy.name:<13} {rate:>6} calls/s: {ok:>7} ok {failed:>6} failed "
                  f"({share:.3%}){note} {'ok' if passed else 'FAILED'}  cpu proxy "
                  f"{proxy_cpu:4.0%}{also} caller {uac_cpu:4.0%}"
                  f"{f'  (attempt {attempt})' if attempt > 1 else ''}", flush=True)
            if passed:
                cpu[rate] = proxy_cpu / rate * 1e6
                if extra_sid:
                    cpu[-rate] = extra / rate * 1e6
                break
        if not passed:
            break
        best = rate
    return best


def bench_rate(step: float, workdir: Path) -> tuple[dict[str, int], dict[str, dict[int, float]]]:
    tag = uuid.uuid4().hex[:8]
    ours, kams = f"bench_acc_{tag}", f"bench_kam_cdrs_{tag}"
    psql(f"CREATE TABLE {kams} (id serial primary key, start_time timestamp NOT NULL "
         "DEFAULT '2000-01-01 00:00:00', end_time timestamp NOT NULL DEFAULT "
         "'2000-01-01 00:00:00', duration real NOT NULL DEFAULT 0, callid varchar(255) "
         "NOT NULL DEFAULT '', src_ip varchar(64) NOT NULL DEFAULT '')")
    results: dict[str, int] = {}
    cpu: dict[str, dict[int, float]] = {"edge": {}, "edge+dialog": {}, "kamailio": {}}
    uas, uas_port = be.start_uas(workdir)
    try:
        proxy = be.start_edge(1, workdir)
        try:
            results["edge"] = climb(proxy, uas_port, step, workdir, None, cpu["edge"])
        finally:
            proxy.stop()
        dialog, line = start_dialog_service(workdir, ours)
        try:
            grpc = line.split()[line.split().index("grpc") + 1]
            proxy = start_tracked_edge(workdir, grpc)
            try:
                results["edge+dialog"] = climb(proxy, uas_port, step, workdir, ours,
                                               cpu["edge+dialog"], extra_sid=dialog.pid)
            finally:
                proxy.stop()
        finally:
            dialog.terminate()
            dialog.wait(20)
        proxy = start_kamailio(workdir, kams)
        try:
            results["kamailio"] = climb(proxy, uas_port, step, workdir, kams, cpu["kamailio"])
        finally:
            proxy.stop()
    finally:
        uas.terminate()
        uas.wait(5)
        psql(f"DROP TABLE IF EXISTS {kams}; DROP TABLE IF EXISTS {ours}")
    return results, cpu


# == 2. memory ====================================================================================

def confirmed_dialogs(table: DialogTable, n: int, t0: int = 1_800_000_000_000) -> None:
    """`n` calls as the edge reports them: INVITE (with a profile and an extra), 200, ACK."""
    rr = ["<sip:10.0.0.1:5060;lr>"]
    for i in range(n):
        callid, tag = f"{i:08x}-3c7f2a9b1e4d@10.1.{i % 250}.{i % 200}", f"ft{i:010d}"
        c = pb.Create(
            callid=callid, from_tag=tag, from_hdr=f"<sip:u{i % 5000}@a.example>;tag={tag}",
            to_hdr=f"<sip:{i:07d}@b.example>", ruri=f"sip:{i:07d}@b.example", cseq=1,
            contact=f"sip:u{i % 5000}@10.2.{i % 250}.{i % 200}:5060",
            source=f"udp:10.2.{i % 250}.{i % 200}:5060", socket="udp:10.0.0.1:5060",
            destination=f"sip:{i:07d}@10.3.0.{i % 250}", edge_addrs=["10.0.0.1:5060"],
            edge_uac="10.0.0.1:7000")
        c.profiles.add(name="caller", value=f"u{i % 5000}", has_value=True)
        c.extra["account"] = f"acct{i % 5000}"
        table.create(c, t0 + i)
        table.reply(pb.Reply(callid=callid, from_tag=tag, to_tag=f"tt{i:010d}", status=200,
                             reason="OK", contact=f"sip:{i:07d}@10.3.0.{i % 250}:5060",
                             record_route=rr, source=f"udp:10.3.0.{i % 250}:5060"), t0 + i + 900)
        table.in_dialog(pb.InDialog(callid=callid, from_tag=tag, to_tag=f"tt{i:010d}",
                                    method="ACK", cseq=1), t0 + i + 910)


def bench_memory() -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = DialogTable()
    confirmed_dialogs(table, DIALOGS)
    for d in table:
        encode(d)  # as the service does when it stores them: the record's bytes are kept
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(table) == DIALOGS
    return (after - before) / DIALOGS


# == 3. full sync ==================================================================================

def mi(url: str, method: str) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["result"]


def bench_sync(workdir: Path) -> tuple[float, float]:
    db = workdir / "donor.sqlite"

    async def fill() -> None:
        table = DialogTable()
        confirmed_dialogs(table, DIALOGS, t0=int(time.time() * 1000))
        store = SQLiteDialogStore(db)
        await store.open()
        batch = [(d.callid, d.from_tag, int(d.state), encode(d)) for d in table]
        await store.write(batch, [])
        await store.close()

    asyncio.run(fill())
    common = {"SIPMESH_DIALOG_CLUSTER": "true", "SIPMESH_DIALOG_CLUSTER_SECRET": "bench",
              "SIPMESH_DIALOG_CLUSTER_PING_INTERVAL": "0.5",
              "SIPMESH_DIALOG_CLUSTER_SEED_FALLBACK_INTERVAL": "0.5"}
    table = f"bench_sync_acc_{uuid.uuid4().hex[:8]}"
    donor, line = start_dialog_service(workdir, table, {
        **common, "SIPMESH_DIALOG_DB_URL": str(db), "SIPMESH_DIALOG_CLUSTER_NODE_ID": "1",
        "SIPMESH_DIALOG_CLUSTER_SEED": "true"})
    joiner = None
    try:
        url = line.split()[line.split().index("cluster") + 1]
        donor_mi = line.split()[line.split().index("http") + 1] + "/mi"
        deadline = time.monotonic() + 60
        while len(mi(donor_mi, "dlg_list")["Dialogs"]) < DIALOGS:
            if time.monotonic() > deadline:
                raise RuntimeError("the donor did not load its dialogs")
            time.sleep(0.5)
        started = time.monotonic()
        joiner, jline = start_dialog_service(workdir, table, {
            **common, "SIPMESH_DIALOG_DB_URL": "none", "SIPMESH_DIALOG_CLUSTER_NODE_ID": "2",
            "SIPMESH_DIALOG_CLUSTER_SEEDS": f"1@{url}"})
        joiner_mi = jline.split()[jline.split().index("http") + 1] + "/mi"
        while True:
            caps = mi(joiner_mi, "clusterer_list_sync")["Clusters"][0]["Capabilities"]
            cap = next(c for c in caps if c["name"] == "dialog-dlg-repl")
            if cap["state"] == "Ok" and cap["records"] >= DIALOGS:
                break
            if time.monotonic() - started > 120:
                raise RuntimeError(f"the joiner did not sync: {cap}")
            time.sleep(0.05)  # polling MI with a deadline
        wall = time.monotonic() - started
        return float(cap["elapsed"]), wall
    finally:
        for proc in (joiner, donor):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        psql(f"DROP TABLE IF EXISTS {table}")


# == 4. CDR writes ================================================================================

def bench_cdr_writes(n: int = 20_000) -> tuple[float, float]:
    """(rows/s in the service's batches of up to 500, rows/s of single inserts 8 in flight)."""
    table = f"bench_cdr_{uuid.uuid4().hex[:8]}"

    def cdr(i: int, now: int) -> Cdr:
        return Cdr(cdr_id=f"c{i}@bench;ft", method="INVITE", from_tag="ft", to_tag="tt",
                   callid=f"c{i}@bench", sip_code=200, sip_reason="OK", time_ms=now,
                   duration=60, ms_duration=60_000, setuptime=2, created_ms=now,
                   caller="alice@a", callee="bob@b", source_ip="10.0.0.1",
                   destination="sip:bob@10.0.0.2", end_reason="caller-bye",
                   extra={"account": "1001"}, missed=False, node=1)

    async def run() -> tuple[float, float]:
        store = PostgresCdrStore(PG, table=table)
        await store.open()
        now = int(time.time() * 1000)
        started = time.perf_counter()
        for start in range(0, n, 500):
            made = await store.insert_many([cdr(i, now) for i in range(start, start + 500)])
            assert len(made) == 500
        batched = n / (time.perf_counter() - started)
        slots = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with slots:
                await store.insert(cdr(i, now))

        single_n = n // 4
        started = time.perf_counter()
        await asyncio.gather(*(one(n + i) for i in range(single_n)))
        single = single_n / (time.perf_counter() - started)
        await store.pool.execute(f"DROP TABLE {table}")
        await store.close()
        return batched, single

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step", type=float,
                        default=float(os.environ.get("BENCH_STEP_SECONDS", "5")))
    parser.add_argument("--only", default="rate,memory,sync,cdr")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="bench-dialog-"))
    print(f"bench_dialog (work dir {workdir})", flush=True)
    if "rate" in parts:
        for tool in ("sipp", "kamailio"):
            if shutil.which(tool) is None:
                print(f"{tool} missing: run tests/peers/ensure.sh (make bench does)")
                return 1
        print(f"call rate, {args.step:g} s steps, <= 0.1% failed and every CDR written:",
              flush=True)
        results, cpu = bench_rate(args.step, workdir)
        print("\nmaximum call rate (one worker each; on this 2-core machine the dialog "
              "service, sipp and PostgreSQL share the cores with the proxy):")
        for key, rate in results.items():
            print(f"  {key:<12} {rate:>6} calls/s")
        if results.get("edge"):
            print(f"  edge+dialog / edge = {results['edge+dialog'] / results['edge']:.2f}")
        if results.get("kamailio"):
            print(f"  edge+dialog / kamailio dialog+acc = "
                  f"{results['edge+dialog'] / results['kamailio']:.2f}")
        both = sorted(set(cpu["edge"]) & {r for r in cpu["edge+dialog"] if r > 0})
        if both:
            rate = both[-1]  # the highest rate both passed: CPU per call of the edge process
            plain, tracked = cpu["edge"][rate], cpu["edge+dialog"][rate]
            service = cpu["edge+dialog"].get(-rate, 0.0)
            print(f"  edge CPU per call at {rate} calls/s: alone {plain:.0f} us, tracking "
                  f"dialogs {tracked:.0f} us -> tracking costs the edge "
                  f"{1 - plain / tracked:.0%} of its call rate (goal <= 15%); the dialog "
                  f"service {service:.0f} us per call in its own process")
    if "memory" in parts:
        per = bench_memory()
        print(f"memory per confirmed dialog at {DIALOGS:,} dialogs: {per:,.0f} B "
              f"(goal <= 4,096 B)", flush=True)
    if "sync" in parts:
        elapsed, wall = bench_sync(workdir)
        print(f"full sync of {DIALOGS:,} dialogs to a joining node: {elapsed:.2f} s "
              f"(goal < 2 s; process start to synced {wall:.2f} s)", flush=True)
    if "cdr" in parts:
        batched, single = bench_cdr_writes()
        print(f"CDR writes to PostgreSQL (idempotent): {batched:,.0f} rows/s in batches of 500 "
              f"(the service's path); {single:,.0f} rows/s one row per statement, 8 in flight",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
