"""`sipmesh restart gateway` under call load loses no event (issue 20).

`sipmesh up` with the gateway, the edge and the dialog service (CDRs in the real
PostgreSQL); a UDP subscriber (OpenSIPS event_datagram) subscribes to E_ACC_CDR through
the gateway's MI; sipp places calls through the edge at a steady rate (each held 1 s,
then BYE) while the operator runs `sipmesh restart gateway`: the gateway drains and a new
one takes over, reloading the subscription from its store.  The events of the calls that
end meanwhile wait upstream of the gateway: in the embedded mode in each service's
forwarding buffer (shared/events/forward.py), in the RabbitMQ mode in the gateway's
durable queue (`[events] consumer_queue`).

Every call must succeed and have its CDR, and the subscriber must get every call's
E_ACC_CDR (delivery is at least once: a batch whose answer was lost in the restart may
come twice, so copies are counted, not refused).
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest

from tests.integration.dialog.harness import CallLoad, DialogMesh, wait_for
from tests.integration.dialog.rabbit import AMQP, delete, names

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]


class UdpSubscriber:
    """A datagram socket collecting each JSON-RPC notification's params (a thread)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.got: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def socket(self) -> str:
        return f"udp:127.0.0.1:{self.sock.getsockname()[1]}"

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except OSError:
                return  # closed
            with self._lock:
                self.got.append(json.loads(data)["params"])

    def callids(self) -> list[str]:
        with self._lock:
            return [str(p["callid"]) for p in self.got]

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("mode", ["embedded", "rabbitmq"])
def test_no_event_is_lost_across_a_gateway_restart(mode: str, tmp_path: Path) -> None:
    exchange, queue = names()
    subscriber = UdpSubscriber()
    mesh: DialogMesh | None = None
    load: CallLoad | None = None
    env = {} if mode == "embedded" else {
        "SIPMESH_EVENTS_RABBITMQ_URL": AMQP, "SIPMESH_EVENTS_EXCHANGE": exchange,
        "SIPMESH_EVENTS_CONSUMER_QUEUE": queue}
    try:
        mesh = DialogMesh(tmp_path, services="gateway,edge,dialog", **cast(dict[str, Any], env))
        assert mesh.mi("event_subscribe", ["E_ACC_CDR", subscriber.socket, 600]) == "OK"
        uas = mesh.uas()
        rate = 10  # calls/s; sipp is told to finish once the restart is done
        load = mesh.call_load(uas, rate=rate, most=600, timeout=100)
        # The subscription works before the restart.
        wait_for(lambda: len(subscriber.callids()) >= rate * 2, 30, "events before",
                 interval=0.2)
        before = len(mesh.cdrs())
        took, steps = mesh.restart("gateway", drain_timeout=30, timeout=60)
        assert [s.split(":")[0] for s in steps] == ["gateway"], steps
        during = len(mesh.cdrs()) - before
        # Calls, and their events, go on after the restart, through the new gateway.
        got_after = len(subscriber.callids())
        wait_for(lambda: len(subscriber.callids()) >= got_after + rate * 2, 30,
                 "events after the restart", interval=0.2)
        calls = load.finish(30)
        callids = {row["callid"] for row in mesh.wait_cdrs(calls, 20)}
        assert len(callids) == calls, (calls, len(callids))

        def all_events() -> Counter[str] | None:
            seen = Counter(subscriber.callids())
            return seen if callids <= set(seen) else None

        seen = wait_for(all_events, 20, "every call's E_ACC_CDR at the subscriber")
        assert set(seen) == callids  # nothing lost, nothing of another call
        copies = sum(seen.values()) - len(seen)
        print(f"\nrolling restart of the gateway ({mode}) under {rate} calls/s: "
              f"{took:.1f} s, {during} calls ended meanwhile, {calls} calls in all, "
              f"0 failed, {len(seen)} E_ACC_CDR at the subscriber, none lost, "
              f"{copies} delivered twice; steps: {steps}")
    finally:
        if load is not None:
            load.kill()
        if mesh is not None:
            mesh.stop()
        subscriber.close()
        if mode == "rabbitmq":
            delete(exchange, queue)
