"""`sipmesh restart <service>` under REGISTER load drops nothing (issue 20).

`sipmesh up --nodes 2` with the gateway, the edge and two registrar nodes (full sharing);
sipp registers a new subscriber per call with digest through the edge at a steady rate
while the operator runs `sipmesh restart registrar`: node 1 is drained (it leaves
discovery, keeps serving while the edge moves to node 2, finishes what is in flight),
started again, and once it answers /ready (cluster data synced) node 2 gets the same.

`sipmesh restart edge`: the one edge drains (no new UDP transaction, the running ones
finish) and a new one takes its address; REGISTERs sent meanwhile are answered when sipp
retransmits them (as a phone does, within Timer F's 32 s: -max_non_invite_retrans 10).
The edges share `auth_secret`, as edges of one deployment do.

Every REGISTER of the load must be answered 200 (sipp counts no failed call, none is
left unanswered) and every acknowledged binding must be held by both nodes afterwards.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.edge.edge_harness import free_port, wait_until
from tests.integration.registrar.harness import SCENARIOS
from tests.integration.registrar.test_registrar_kill9 import (
    acknowledged,
    add_subscribers,
    register_once,
    start_mesh,
)
from tests.integration.spine.meshproc import MeshProcess

pytestmark = [pytest.mark.peers, pytest.mark.timeout(240)]
TIMERS = {"PING_INTERVAL": "0.5", "PING_TIMEOUT": "0.3", "SEED_FALLBACK_INTERVAL": "1"}


def node_dump(mi_url: str) -> set[str]:
    """The AORs one registrar node holds (its own MI, not the gateway's merge)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ul_dump",
                       "params": ["brief"]}).encode()
    req = urllib.request.Request(mi_url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return {a["AOR"] for d in answer["result"]["Domains"] for a in d["AORs"]}


def registrar_nodes(m: MeshProcess) -> dict[str, dict[str, str]]:
    """instance id -> metadata of every registered registrar (the embedded registry)."""
    url = f"{m.registry_url}/v1/instances?service=registrar&passing=1"
    with urllib.request.urlopen(url, timeout=10) as resp:
        listed = json.loads(resp.read())["instances"]
    return {i["id"]: i["meta"] for i in listed}


@pytest.mark.parametrize("service", ["registrar", "edge"])
def test_rolling_restart_under_register_load(service: str, tmp_path: Path) -> None:
    env = {f"SIPMESH_REGISTRAR_CLUSTER_{k}": v for k, v in TIMERS.items()}
    # Edges that replace each other share the digest secret (as several edges of one
    # deployment do), so a challenge of the old one is answered to the new one.
    env["SIPMESH_EDGE_AUTH_SECRET"] = "rolling-restart-test-secret"
    m, port = start_mesh(tmp_path, SIPMESH_MESH_NODES="2", **env)
    try:
        wait_until(lambda: len(registrar_nodes(m)) == 2, 30, "two registrar nodes")
        # A steady rate for as long as the restart takes (up to `seconds`), then sipp is
        # told to finish (SIGUSR1: no new calls, those running complete).
        rate, seconds = 80, 120.0
        users = [f"roll{i}" for i in range(int(rate * seconds))]
        add_subscribers(tmp_path / "sipmesh" / "subscribers.sqlite", [*users, "probe"])
        wait_until(lambda: register_once(tmp_path, port, "probe", free_port()), 30,
                   "registrar reachable through the edge", interval=0.5)
        inf = tmp_path / "users.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(
            f"{u};[authentication username={u} password=pw-{u}]\n" for u in users))
        log = tmp_path / "acknowledged.log"
        load = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIOS / "register_users_log.xml"), "-inf", str(inf),
             "-i", "127.0.0.1", "-p", str(free_port()), f"127.0.0.1:{port}",
             "-r", str(rate), "-m", str(len(users)), "-nostdin",
             "-timeout", f"{int(seconds) + 30}s", "-trace_logs", "-log_file", str(log),
             "-trace_err", "-error_file", str(tmp_path / "errors.log"),
             "-max_non_invite_retrans", "10"],  # 0.5 s doubling to 4 s: ~32 s, Timer F
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: len(acknowledged(log)) >= rate * 2, 30,
                       "the load is being served", interval=0.05)
            before = len(acknowledged(log))
            started = time.monotonic()
            restarted = m.cli("restart", service, "--timeout", "60", timeout=200)
            took = time.monotonic() - started
            during = len(acknowledged(log)) - before
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            steps = restarted.stdout.strip().splitlines()
            expected = ["registrar.1", "registrar.2"] if service == "registrar" else ["edge"]
            assert [s.split(":")[0] for s in steps] == expected, steps
            assert all(re.search(r"pid \d+ -> \d+ ready in", s) for s in steps), steps
            # The load goes on after the restart, served by both restarted nodes.
            wait_until(lambda: len(acknowledged(log)) >= before + during + rate, 30,
                       "load served after the restart", interval=0.05)
            assert load.poll() is None, "the load ended before the restart did"
            load.send_signal(signal.SIGUSR1)
            rc = load.wait(60)
            errors = tmp_path / "errors.log"
            assert rc == 0, (f"sipp counted failed REGISTERs: {len(acknowledged(log))} of "
                             f"{len(users)} acknowledged; "
                             + (errors.read_text()[-3000:] if errors.exists() else ""))
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(10)
        done = {f"{u}@127.0.0.1" for u in acknowledged(log)}
        assert len(done) > before + during, "the load was served after the restart"
        nodes = registrar_nodes(m)
        assert len(nodes) == 2
        for meta in nodes.values():
            held = node_dump(meta["mi_url"])
            missing = sorted(done - held)
            assert not missing, f"node {meta.get('cluster_node_id')} lost {missing[:10]}"
        print(f"\nrolling restart of {service} ({len(steps)} instance(s)) under {rate} "
              "REGISTER/s: "
              f"{took:.1f} s, {during} REGISTERs acknowledged meanwhile, "
              f"{len(done)} acknowledged in all, 0 failed, 0 lost; steps: {steps}")
    finally:
        m.stop()
