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

from pathlib import Path
from typing import Any

import pytest

from tests.integration.dialog.harness import CallLoad, DialogMesh, wait_for
from tests.integration.dialog.rabbit import AMQP, Consumer, delete, names

pytestmark = [pytest.mark.peers, pytest.mark.timeout(240)]


@pytest.mark.parametrize("service", ["dialog", "edge"])
def test_calls_cdrs_and_events_survive_a_rolling_restart(service: str, tmp_path: Path) -> None:
    exchange, queue = names()
    consumer = Consumer(tmp_path, exchange, queue)
    mesh: DialogMesh | None = None
    load: CallLoad | None = None
    try:
        # An edge is ready only once it knows a registrar: the edge case runs one.
        services = "gateway,edge,dialog" if service == "dialog" else \
            "gateway,edge,registrar,dialog"
        mesh = DialogMesh(tmp_path, nodes=2, services=services,
                          SIPMESH_EVENTS_RABBITMQ_URL=AMQP,
                          SIPMESH_EVENTS_EXCHANGE=exchange)
        uas = mesh.uas()
        rate = 10  # calls/s; sipp is told to finish once the restart is done
        load = mesh.call_load(uas, rate=rate, most=1200, timeout=200)
        wait_for(lambda: len(mesh.cdrs()) >= rate * 2, 60, "calls completing", interval=0.2)
        before = len(mesh.cdrs())
        took, steps = mesh.restart(service, drain_timeout=60, timeout=200)
        expected = ["dialog.1", "dialog.2"] if service == "dialog" else ["edge"]
        assert [s.split(":")[0] for s in steps] == expected, steps
        during = len(mesh.cdrs()) - before
        # Calls go on after the restart, through the restarted nodes.
        wait_for(lambda: len(mesh.cdrs()) >= before + during + rate * 2, 60,
                 "calls completing after the restart", interval=0.2)
        calls = load.finish(60)
        cdrs = mesh.wait_cdrs(calls, 30)
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
        if load is not None:
            load.kill()
        if mesh is not None:
            mesh.stop()
        consumer.stop()
        delete(exchange, queue)
