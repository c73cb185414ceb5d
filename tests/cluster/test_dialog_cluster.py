"""Three dialog nodes on loopback (`sipmesh up --nodes 3`: gateway, one edge, dialog.1-3),
dialogs only in memory (`db_url = none`: a restarted node gets them back by full sync),
CDRs in the real PostgreSQL, events on the real RabbitMQ read by the example billing
consumer.

Each round holds 200 sipp calls (140 ended by the caller after a hold, 50 ended by their
owner when the lifetime set by routing runs out, 10 owned by sharing tag `vip`), kills
-9 the dialog node the edge streams to while they are up, and checks that every call
still ends and PostgreSQL holds exactly one CDR per call - none lost, none doubled -
with profile counts exact on the survivors. The second round runs after the killed node
came back and synced the table from a donor. Through both rounds the consumer gets every
E_ACC_CDR exactly once.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.dialog.harness import DialogMesh, rpc, sipp_output, wait_for
from tests.integration.dialog.rabbit import AMQP, Consumer, delete, names

pytestmark = pytest.mark.peers

HOLD_MS = 9000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DialogMesh, Consumer]]:
    tmp = tmp_path_factory.mktemp("dialog-cluster")
    exchange, queue = names()
    consumer = Consumer(tmp, exchange, queue)
    mesh = None
    try:
        mesh = DialogMesh(
            tmp, nodes=3, SIPMESH_DIALOG_DB_URL="none",
            # A killed node stays down a while (the calls end without it), then returns.
            SIPMESH_MESH_BACKOFF_INITIAL="6",
            SIPMESH_DIALOG_CLUSTER_SHARING_TAGS="vip/3=backup",
            SIPMESH_EVENTS_RABBITMQ_URL=AMQP, SIPMESH_EVENTS_EXCHANGE=exchange)
        yield mesh, consumer
    finally:
        if mesh is not None:
            mesh.stop()
        consumer.stop()
        delete(exchange, queue)


def nodes(mesh: DialogMesh) -> dict[int, dict[str, str]]:
    """Dialog node id -> its registration metadata (MI URL...), from discovery."""
    with urllib.request.urlopen(f"{mesh.mesh.registry_url}/v1/instances", timeout=5) as r:
        instances = json.loads(r.read())
    items = instances if isinstance(instances, list) else instances.get("instances", [])
    out = {}
    for inst in items:
        meta = inst.get("meta", {})
        if inst.get("service") == "dialog" and meta.get("cluster_node_id"):
            out[int(meta["cluster_node_id"])] = meta
    return out


def node_mi(meta: dict[str, str], method: str, params: Any = None) -> Any:
    answer = rpc(meta["mi_url"], method, params)
    assert "error" not in answer, answer
    return answer["result"]


def node_dialogs(mesh: DialogMesh, node: int) -> list[dict[str, Any]]:
    answer = rpc(mesh.gateway, "dlg_list", {"node_id": node})
    return answer["result"]["Dialogs"] if "result" in answer else []


def pid_of(mesh: DialogMesh, node: int) -> int:
    found = [ln for ln in mesh.mesh.seen if re.match(rf"^started dialog\.{node} pid \d+", ln)]
    return int(found[-1].split()[-1])


def run_round(mesh: DialogMesh, tag: str) -> tuple[list[Any], int]:
    """200 held calls, the streamed-to node killed while they are up; returns the sipp
    processes (to wait for) and the killed node."""
    uas = mesh.uas()
    procs = [
        mesh.uac("uac", uas, f"hold{tag}", calls=140, rate=50, hold_ms=HOLD_MS,
                 background=True),
        mesh.uac("uac_wait_bye.xml", uas, f"t8{tag}", calls=50, rate=50, background=True),
        mesh.uac("uac", uas, f"tag{tag}", calls=10, rate=50, hold_ms=HOLD_MS, background=True),
    ]
    wait_for(lambda: len([d for d in node_dialogs(mesh, 1) + node_dialogs(mesh, 2)
                          + node_dialogs(mesh, 3) if d["state"] == 4]) >= 400, 20,
             "200 confirmed calls replicated to at least two nodes")
    streamed = {n: node_mi(meta, "get_statistics", [["dialog:create_sent"]])
                ["dialog:create_sent"] for n, meta in nodes(mesh).items()}
    victim = max(streamed, key=lambda n: streamed[n])
    survivors = [n for n in nodes(mesh) if n != victim]
    os.kill(pid_of(mesh, victim), signal.SIGKILL)
    # The survivors keep every call, and their profile counts stay exact.
    def calls_on(n: int) -> bool:
        answer = rpc(mesh.gateway, "profile_get_size", {"profile": "calls", "node_id": n})
        return bool(answer.get("result", {}).get("Profile", {}).get("count") == 200)

    for n in survivors:
        wait_for(functools.partial(calls_on, n), 10, f"profile calls = 200 on node {n}")
    return procs, victim


def check_round(mesh: DialogMesh, procs: list[Any], tag: str) -> None:
    for proc in procs:
        assert proc.wait(60) == 0, sipp_output(proc)
    where = f"extra::json->>'account' LIKE '%{tag}'"
    rows = wait_for(lambda: (r := mesh.cdrs(where)) and len(r) >= 200 and r, 30,
                    "200 CDRs")
    rows = mesh.cdrs(where)
    assert len(rows) == 200 and len({r["callid"] for r in rows}) == 200
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["end_reason"]] = reasons.get(r["end_reason"], 0) + 1
    assert reasons == {"caller-bye": 150, "timeout": 50}, reasons
    assert all(r["sip_code"] == "200" for r in rows)


def test_full_sync_on_join_gives_a_new_node_every_dialog(
        cluster: tuple[DialogMesh, Consumer]) -> None:
    """Calls held while a node restarts: once synced it lists every one of them."""
    mesh, _ = cluster
    wait_for(lambda: len(nodes(mesh)) == 3, 20, "three dialog nodes")
    uas = mesh.uas()
    proc = mesh.uac("uac", uas, "sync", calls=30, rate=30, hold_ms=16000, background=True)
    wait_for(lambda: all(len([d for d in node_dialogs(mesh, n) if d["state"] == 4]) == 30
                         for n in (1, 2, 3)), 15, "30 calls up on every node")
    # A node the edge does not stream to (the rounds below kill that one).
    streamed = {n: node_mi(meta, "get_statistics", [["dialog:create_sent"]])
                ["dialog:create_sent"] for n, meta in nodes(mesh).items()}
    target = min(streamed, key=lambda n: (streamed[n], -n))
    pid = pid_of(mesh, target)
    starts = len([ln for ln in mesh.mesh.seen if ln.startswith(f"started dialog.{target} ")])
    os.kill(pid, signal.SIGKILL)
    mesh.seen_lines(rf"^started dialog\.{target} pid \d+", starts + 1, 40)
    wait_for(lambda: len([d for d in node_dialogs(mesh, target) if d["state"] == 4]) == 30,
             20, "the restarted node lists the 30 calls (from its donor)")
    assert proc.wait(60) == 0, sipp_output(proc)
    wait_for(lambda: len(mesh.cdrs("extra::json->>'account' = 'sync'")) == 30, 20,
             "30 CDRs")


def test_dialogs_replicate_and_a_killed_owner_loses_no_call_and_doubles_no_cdr(
        cluster: tuple[DialogMesh, Consumer]) -> None:
    mesh, consumer = cluster
    wait_for(lambda: len(nodes(mesh)) == 3, 20, "three dialog nodes")
    procs, victim = run_round(mesh, "r1")
    check_round(mesh, procs, "r1")
    for n in nodes(mesh):
        if n != victim:
            size = rpc(mesh.gateway, "profile_get_size", {"profile": "calls", "node_id": n})
            assert size["result"]["Profile"]["count"] == 0  # never below zero either

    # The killed node comes back (the supervisor restarts it), empty: it pulls the table
    # from a donor (full sync on join) before it takes the edge's events.
    mesh.seen_lines(rf"^started dialog\.{victim} pid \d+", 2, 40)
    wait_for(lambda: victim in nodes(mesh), 20, "the restarted node registered")
    wait_for(lambda: any(c["name"] == "dialog-dlg-repl" and c["state"] == "Ok"
                         for c in rpc(nodes(mesh)[victim]["mi_url"], "clusterer_list_cap")
                         ["result"]["Clusters"][0]["Capabilities"]), 20,
             "the restarted node synced")

    procs, _ = run_round(mesh, "r2")
    check_round(mesh, procs, "r2")

    # The example consumer got every answered call's E_ACC_CDR, once.
    # (Every answered call of the module: the two rounds and the full-sync test's 30.)
    answered = {f"{r['callid']};{r['from_tag']}" for r in mesh.cdrs("NOT missed")}
    assert len(answered) >= 400
    wait_for(lambda: {r["cdr_id"] for r in consumer.records()} >= answered, 30,
             "every CDR at the billing consumer")
    records = consumer.records()
    assert not any(r["duplicate"] for r in records), [r for r in records if r["duplicate"]]
    assert len(records) == len(answered)
