"""The billing flow end to end, as the README tells operators to build it (OpenSIPS's
cgrates flow), on a real mesh with events on the real RabbitMQ:

1. routing authorizes each INVITE with the billing engine (examples/billing/routing.py ->
   SessionSv1.AuthorizeEvent): no credit is refused, limited credit becomes the dialog
   timeout and the call is cut with BYE to both sides when it runs out;
2. the billing engine ends a call by pushing SessionSv1.DisconnectSession to the mesh;
3. the example consumer (examples/billing/consumer.py) gets each E_ACC_CDR from RabbitMQ,
   once.

The billing engine is the fake CGRateS (services/dialog/testing/fake_cgrates.py): CGRateS
cannot be installed here.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from services.dialog.testing.fake_cgrates import FakeCGRateS
from tests.integration.dialog.harness import DialogMesh, sipp_output, wait_for
from tests.integration.dialog.rabbit import AMQP, Consumer, delete, names

pytestmark = pytest.mark.peers


class ThreadedFake:
    """The fake engine on an event loop of its own (the test itself is synchronous)."""

    def __init__(self) -> None:
        self.fake = FakeCGRateS()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.fake.start())

    def run(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(15)

    def close(self) -> None:
        self.run(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DialogMesh, ThreadedFake,
                                                                         Consumer]]:
    tmp = tmp_path_factory.mktemp("billing")
    engine = ThreadedFake()
    exchange, queue = names()
    consumer = Consumer(tmp, exchange, queue)
    mesh = None
    try:
        mesh = DialogMesh(tmp, routing="examples.billing.routing",
                          SIPMESH_BILLING_CGRATES=engine.fake.address,
                          SIPMESH_EVENTS_RABBITMQ_URL=AMQP, SIPMESH_EVENTS_EXCHANGE=exchange)
        yield mesh, engine, consumer
    finally:
        if mesh is not None:
            mesh.stop()
        consumer.stop()
        engine.close()
        delete(exchange, queue)


def only_cdr(mesh: DialogMesh, callid_like: str = "%") -> dict[str, Any]:
    rows = wait_for(lambda: mesh.cdrs(f"callid LIKE '{callid_like}'"), 15, "the CDR")
    assert len(rows) == 1, rows
    row: dict[str, Any] = rows[0]
    return row


def test_no_credit_is_refused(billing: tuple[DialogMesh, ThreadedFake, Consumer]) -> None:
    mesh, engine, _ = billing
    engine.fake.set_credit("sipp", 0)
    uas = mesh.uas()
    uac = mesh.uac("uac_expect_403.xml", uas, "1002")
    assert uac.returncode == 0, sipp_output(uac)  # 403 Insufficient Credit
    assert engine.fake.authorized[-1]["Account"] == "sipp"
    assert mesh.cdrs() == []  # never forwarded: no call, no CDR


def test_limited_credit_cuts_the_call_when_it_runs_out(
        billing: tuple[DialogMesh, ThreadedFake, Consumer]) -> None:
    mesh, engine, consumer = billing
    engine.fake.set_credit("sipp", 2)
    uas_port = mesh.uas(extra=["-m", "1"])
    uas = mesh.sipp[-1]
    uac = mesh.uac("uac_wait_bye.xml", uas_port, "1002")
    assert uac.returncode == 0, sipp_output(uac)  # the caller got the BYE
    assert uas.wait(10) == 0  # ... and the callee
    cdr = only_cdr(mesh)
    assert cdr["end_reason"] == "timeout" and cdr["duration"] == 2, cdr
    assert json.loads(cdr["extra"]) == {"account": "sipp"}
    got = wait_for(lambda: [r for r in consumer.records() if r["callid"] == cdr["callid"]],
                   15, "the CDR at the billing consumer")
    assert len(got) == 1 and not got[0]["duplicate"] and got[0]["account"] == "sipp"
    assert got[0]["duration"] == 2 and got[0]["cdr_id"] == f"{cdr['callid']};{cdr['from_tag']}"


def test_the_billing_engine_ends_a_call_with_disconnect_session(
        billing: tuple[DialogMesh, ThreadedFake, Consumer]) -> None:
    mesh, engine, consumer = billing
    engine.fake.set_credit("sipp", None)  # unlimited: only the engine's push ends it
    uas_port = mesh.uas(extra=["-m", "1"])
    uas = mesh.sipp[-1]
    uac = mesh.uac("uac_wait_bye.xml", uas_port, "1003", background=True)
    (entry,) = wait_for(lambda: [d for d in mesh.dialogs() if d["state"] == 4
                                 and d["to_uri"].startswith("sip:1003@")], 10,
                        "the call confirmed")
    # Unlimited: only [dialog] default_timeout (12 h) bounds it, no billing limit.
    assert entry["timeout"] - time.time() > 11 * 3600
    origin = f"{entry['callid']};{entry['caller_tag']}"
    answer = engine.run(engine.fake.disconnect(mesh.gateway, origin, "INSUFFICIENT_CREDIT"))
    assert answer.get("result") == "OK", answer
    assert uac.wait(20) == 0, sipp_output(uac)
    assert uas.wait(10) == 0
    cdr = only_cdr(mesh, entry["callid"])
    assert cdr["end_reason"] == "billing"
    wait_for(lambda: [r for r in consumer.records() if r["callid"] == entry["callid"]], 15,
             "the CDR at the billing consumer")
    again = engine.run(engine.fake.disconnect(mesh.gateway, origin))
    assert again["error"]["code"] == 404  # ended already


def test_every_cdr_reached_the_consumer_once(
        billing: tuple[DialogMesh, ThreadedFake, Consumer]) -> None:
    mesh, _, consumer = billing
    answered = {r["cdr_id"] for r in mesh.cdrs("NOT missed")}
    wait_for(lambda: {r["cdr_id"] for r in consumer.records()} >= answered, 15,
             "every CDR at the consumer")
    records = consumer.records()
    assert len(records) == len({r["cdr_id"] for r in records}) == len(answered)
    assert not any(r["duplicate"] for r in records)
