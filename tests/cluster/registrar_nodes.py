"""What the registrar cluster tests (full-sharing, full-sharing-cachedb, sql-only) share:
MI calls over JSON-RPC, a node's dump and sync state, registering natted phones through
an edge, and checking that natted bindings are pinged by exactly one node.

Nothing sleeps to synchronise: the pinging check waits on the clock with `wait_until`.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tests.integration.edge.edge_harness import Edge, free_port, summary, wait_until
from tests.integration.registrar.harness import SCENARIOS, Registrar


def mi(reg: Registrar, method: str, params: object = None) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    req = urllib.request.Request(reg.mi, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def aors(reg: Registrar) -> set[str]:
    dump = mi(reg, "ul_dump")["result"]
    return {a["AOR"] for a in dump["Domains"][0]["AORs"]}


def synced(reg: Registrar) -> bool:
    caps = mi(reg, "clusterer_list_cap")["result"]["Clusters"][0]["Capabilities"]
    return any(c["name"] == "usrloc-contact-repl" and c["state"] == "Ok" for c in caps)


def linked(*regs: Registrar) -> bool:
    """Every node lists the others with their link Up (synced alone is also true of a node
    that fell back to running alone: a seed, or a joiner before its link came up)."""
    for reg in regs:
        nodes = mi(reg, "clusterer_list")["result"]["Clusters"][0]["Nodes"]
        if len(nodes) < len(regs) - 1 or any(n.get("link_state") != "Up" for n in nodes):
            return False
    return True


def stop_all(*procs: Registrar | Edge | subprocess.Popen[bytes] | None) -> None:
    """Stops the processes at the same time: each drains (SIGTERM) for up to a few seconds,
    and one after the other that added up to most of a cluster test's wall time. A bare
    Popen (a load generator) is killed."""

    def stop(p: Registrar | Edge | subprocess.Popen[bytes]) -> None:
        if isinstance(p, subprocess.Popen):
            if p.poll() is None:
                p.kill()
                p.wait(5)
        else:
            p.stop()

    with ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
        for done in [pool.submit(stop, p) for p in procs if p is not None]:
            done.result()


A = TypeVar("A", Registrar, Edge)
B = TypeVar("B", Registrar, Edge)


def start_pair(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Runs two independent start-ups (a node and an edge that need only what is already
    up) at the same time. If one fails, the other is stopped before the failure is
    raised."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        one, two = pool.submit(first), pool.submit(second)
    error = one.exception() or two.exception()
    if error is not None:
        stop_all(*[f.result() for f in (one, two) if f.exception() is None])
        raise error
    return one.result(), two.result()


def cluster_url(reg: Registrar) -> str:
    words = reg.lines[0].split()
    return words[words.index("cluster") + 1]


def register_natted(workdir: Path, edge: Edge, users: list[str], password: str) -> None:
    """Each user registers once from one port with a Contact naming another: natted. The
    users register at the same time (one sipp each), as phones would."""
    runs = []
    for user in users:
        cmd = ["sipp", "-sf", str(SCENARIOS / "register_natted.xml"), "-i", "127.0.0.1",
               "-p", str(free_port()), edge.address, "-s", user, "-au", user, "-ap", password,
               "-key", "contact_port", str(free_port()), "-m", "1", "-nostdin",
               "-timeout", "15s", "-timeout_error"]
        runs.append((cmd, subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT)))
    try:
        for cmd, proc in runs:
            stdout, _ = proc.communicate(timeout=45)
            result = subprocess.CompletedProcess(cmd, proc.returncode, stdout)
            assert result.returncode == 0, summary(result)
    finally:
        for _, proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_pinged_once_per_round(first: Registrar, second: Registrar, bindings: int) -> None:
    """Both nodes ping every 0.3 s, each only its share of the natted bindings: over 3 s
    both send OPTIONS, and together one per binding per round (give or take a round at
    each end per node); both nodes pinging everything would be twice as many."""

    def sent(reg: Registrar) -> int:
        stats = mi(reg, "get_statistics", [["nathelper:sent"]])["result"]
        return int(stats["nathelper:sent"])

    start = time.monotonic()
    a0, b0 = sent(first), sent(second)
    wait_until(lambda: time.monotonic() - start >= 3.0, 5, "3 s of pinging")
    a1, b1 = sent(first), sent(second)
    rounds = (time.monotonic() - start) / 0.3
    total = (a1 - a0) + (b1 - b0)
    assert a1 > a0 and b1 > b0, "the work is split between the nodes"
    assert bindings * (rounds - 3) <= total <= bindings * (rounds + 3), (total, rounds)
