"""`sipmesh restart dialog` and `sipmesh restart edge` under call load drop nothing
(issue 20).

`sipmesh up --nodes 2` with the gateway, the edge and two dialog nodes (a cluster that
replicates its dialogs), events on the real RabbitMQ and CDRs in the real PostgreSQL; sipp
places calls through the edge at a steady rate (each held 1 s, then BYE) to a sipp UAS
while the operator runs `sipmesh restart dialog`: node 1 drains (leaves discovery, keeps
serving while the edge moves to node 2, finishes its RPCs in flight), is started again,
and once it answers /ready node 2 gets the same. `sipmesh restart edge`: the one edge
drains (no new transaction, the running ones finish) and a new one takes its address;
requests sent meanwhile are answered when sipp retransmits them (the mesh then runs a
registrar too: an edge is ready only once it knows one).

Every call must succeed (sipp counts no failed call), every call must have exactly one CDR
row, and the billing consumer (examples/billing/consumer.py) must get each call's
E_ACC_CDR from RabbitMQ exactly once.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dialog.harness import DialogMesh, wait_for
from tests.integration.dialog.rabbit import AMQP, Consumer, delete, names
from tests.integration.edge.edge_harness import free_port

pytestmark = [pytest.mark.peers, pytest.mark.timeout(240)]


def _successful(stats: str) -> int:
    """sipp's final 'Successful call' cumulative count (the last column of that line)."""
    found = re.findall(r"Successful call\s*\|[^\n]*?(\d+)\s*$", stats, re.MULTILINE)
    assert found, stats[-2000:]
    return int(found[-1])


@pytest.mark.parametrize("service", ["dialog", "edge"])
def test_calls_cdrs_and_events_survive_a_rolling_restart(service: str, tmp_path: Path) -> None:
    exchange, queue = names()
    consumer = Consumer(tmp_path, exchange, queue)
    mesh: DialogMesh | None = None
    load: subprocess.Popen[bytes] | None = None
    try:
        # An edge is ready only once it knows a registrar: the edge case runs one.
        services = "gateway,edge,dialog" if service == "dialog" else \
            "gateway,edge,registrar,dialog"
        mesh = DialogMesh(tmp_path, nodes=2, services=services,
                          SIPMESH_EVENTS_RABBITMQ_URL=AMQP,
                          SIPMESH_EVENTS_EXCHANGE=exchange)
        uas = mesh.uas()
        rate, most = 10, 1200  # calls/s; sipp is told to finish once the restart is done
        out = tmp_path / "uac.out"
        with out.open("wb") as sink:
            load = subprocess.Popen(
                ["sipp", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()),
                 "-rsa", mesh.edge, f"127.0.0.1:{uas}", "-s", "1002", "-m", str(most),
                 "-r", str(rate), "-d", "1000", "-nostdin", "-timeout", "200s",
                 "-timeout_error", "-buff_size", "1048576", "-trace_err",
                 "-error_file", str(tmp_path / "uac_err.log")],
                cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
        wait_for(lambda: len(mesh.cdrs()) >= rate * 2, 60, "calls completing", interval=0.2)
        before = len(mesh.cdrs())
        started = time.monotonic()
        restarted = mesh.mesh.cli("restart", service, "--timeout", "60", timeout=200)
        took = time.monotonic() - started
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        steps = restarted.stdout.strip().splitlines()
        expected = ["dialog.1", "dialog.2"] if service == "dialog" else ["edge"]
        assert [s.split(":")[0] for s in steps] == expected, steps
        during = len(mesh.cdrs()) - before
        # Calls go on after the restart, through the restarted nodes.
        wait_for(lambda: len(mesh.cdrs()) >= before + during + rate * 2, 60,
                 "calls completing after the restart", interval=0.2)
        assert load.poll() is None, "the load ended before the restart did"
        load.send_signal(signal.SIGUSR1)  # no new calls; those running complete
        rc = load.wait(60)
        stats = out.read_text(errors="replace")
        errors = tmp_path / "uac_err.log"
        assert rc == 0, (f"sipp counted failed calls:\n{stats[-2500:]}\n"
                         + (errors.read_text()[-2000:] if errors.exists() else ""))
        calls = _successful(stats)
        def all_cdrs() -> list[dict[str, Any]] | None:
            rows = mesh.cdrs() if mesh is not None else []
            return rows if len(rows) >= calls else None

        cdrs = wait_for(all_cdrs, 30, "a CDR for every call")
        callids = [row["callid"] for row in cdrs]
        assert len(callids) == calls and len(set(callids)) == calls, (calls, len(callids))
        def all_events() -> list[dict[str, Any]] | None:
            rows = consumer.records()
            return rows if len(rows) >= calls else None

        got = wait_for(all_events, 30, "every E_ACC_CDR at the consumer")
        assert sorted(r["callid"] for r in got) == sorted(callids)  # each exactly once
        assert not any(r["duplicate"] for r in got)
        print(f"\nrolling restart of {service} ({len(steps)} instance(s)) under {rate} "
              f"calls/s: {took:.1f} s, "
              f"{during} calls ended meanwhile, {calls} calls in all, 0 failed, "
              f"{len(cdrs)} CDRs, {len(got)} E_ACC_CDR events; steps: {steps}")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(10)
        if mesh is not None:
            mesh.stop()
        consumer.stop()
        delete(exchange, queue)
