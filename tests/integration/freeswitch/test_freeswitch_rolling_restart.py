"""`sipmesh restart freeswitch` under load loses nothing the bridge promises (issue 20).

`sipmesh up` with the gateway, the edge and the FreeSWITCH bridge, one fake FreeSWITCH
box (a sipp UAS as its SIP side) configured in a TOML file.  While the operator runs
`sipmesh restart freeswitch`, three loads run at once:

* the box fires numbered CUSTOM events (subscribed by the box's URL) at a steady rate; a
  UDP subscriber at the gateway must get each as E_FREESWITCH exactly once;
* `fs_api status` through the gateway's MI at a steady rate: every command answered;
* sipp calls to `conference@edge`, routed by the edge to the box the bridge's view
  offers: every call completes.

The bridge's subscriptions come back on the new process: the box sees its event
subscription on the new ESL link, and the edge's Watch stream follows the new bridge
(the box stays usable in the edge's view, which the calls prove).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from services.freeswitch.testing.fake_freeswitch import FakeThread, Load
from tests.integration.dialog.harness import CallLoad, wait_for
from tests.integration.dialog.test_gateway_rolling_restart import UdpSubscriber
from tests.integration.edge.edge_harness import free_port
from tests.integration.freeswitch.harness import (
    SCENARIOS,
    mi,
    start_box,
    start_mesh,
    stop_boxes,
    wait_usable,
    write_config,
)

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

HEARTBEAT = 0.2
SUBCLASS = "sipmesh::rolling"


class Target:
    """What CallLoad needs: a work directory and the edge's address."""

    def __init__(self, tmp: Path, edge_port: int) -> None:
        self.tmp = tmp
        self.edge = f"127.0.0.1:{edge_port}"


class Steady:
    """Calls `step()` every `period` s on a thread until stopped; counts and keeps each
    outcome (the loads the restart happens under)."""

    def __init__(self, step: Any, period: float) -> None:
        self.step, self.period = step, period
        self.outcomes: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):  # the load's pace, not a synchronisation
            try:
                self.outcomes.append(self.step())
            except Exception as exc:  # every failure is an outcome to count
                self.outcomes.append(exc)

    def stop(self) -> list[Any]:
        self._stop.set()
        self._thread.join(20)
        return self.outcomes


def test_rolling_restart_of_the_freeswitch_bridge_under_load(tmp_path: Path) -> None:
    thread = FakeThread()
    boxes = []
    mesh = None
    subscriber = UdpSubscriber()
    loads: list[Steady] = []
    calls: CallLoad | None = None
    try:
        boxes = [start_box(thread, tmp_path, "fs-rr", Load(5, 1000, 95.0),
                           heartbeat=HEARTBEAT)]
        box = boxes[0]
        config = tmp_path / "sipmesh.toml"
        write_config(config, boxes, events=f"CUSTOM {SUBCLASS}", heartbeat=HEARTBEAT,
                     store=tmp_path / "freeswitch.sqlite")
        edge_port = free_port()
        mesh = start_mesh(tmp_path, config, edge_port)
        gateway = mesh.gateway_url
        wait_usable(gateway, {box.id: True})
        assert mi(gateway, "event_subscribe", ["E_FREESWITCH", subscriber.socket, 600]) == "OK"

        def fire() -> int:
            return thread.call(lambda: box.fake.fire("CUSTOM", {"X-Test": "rolling"},
                                                     subclass=SUBCLASS))

        def api() -> Any:
            return mi(gateway, "fs_api", [box.id, "status"])

        events = Steady(fire, 0.025)  # 40 events/s
        commands = Steady(api, 0.1)  # 10 fs_api/s
        loads = [events, commands]
        calls = CallLoad(Target(tmp_path, edge_port), edge_port, rate=10, most=600,
                         timeout=60, scenario=str(SCENARIOS / "uac_rr.xml"),
                         service="conference")

        def received() -> list[int]:
            with subscriber._lock:
                got = list(subscriber.got)
            return [int(json.loads(p["body"])["Event-Sequence"]) for p in got
                    if p.get("name") == "CUSTOM"]

        wait_for(lambda: len(received()) >= 40, 20, "events before the restart")
        wait_for(lambda: box.calls() >= 10, 20, "calls before the restart", interval=0.2)
        auths = len(box.fake.auth_times)
        started = time.monotonic()
        restarted = mesh.cli("restart", "freeswitch", "--timeout", "30", timeout=60)
        took = time.monotonic() - started
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        steps = restarted.stdout.strip().splitlines()
        assert [s.split(":")[0] for s in steps] == ["freeswitch"], steps
        # The new bridge's own ESL link, subscribed again to the box's events.
        assert len(box.fake.auth_times) > auths
        after = len(received())
        wait_for(lambda: len(received()) >= after + 40, 20, "events after the restart")
        fired = [o for o in events.stop() if isinstance(o, int)]
        answers = commands.stop()
        offered = calls.finish(30)
        assert len(fired) == len(events.outcomes), events.outcomes[-5:]
        try:
            wait_for(lambda: set(fired) <= set(received()), 10,
                     "every fired event at the subscriber")
        except AssertionError:
            pass  # the figures below say what is missing
        got = received()
        failed = [a for a in answers if not (isinstance(a, str) and a.startswith("UP "))]
        lost = sorted(set(fired) - set(got))
        copies = len(got) - len(set(got))
        print(f"\nrolling restart of the freeswitch bridge: {took:.1f} s; events fired "
              f"{len(fired)}, received {len(got)}, lost {len(lost)}, duplicated {copies}; "
              f"fs_api sent {len(answers)}, failed {len(failed)}; calls {offered} "
              f"completed, 0 failed; steps: {steps}")
        assert not lost, f"events lost: {lost[:20]}"
        assert copies == 0, "events delivered twice"
        assert not failed, f"fs_api failed: {failed[:5]}"
    finally:
        for load in loads:
            load.stop()
        if calls is not None:
            calls.kill()
        if mesh is not None:
            mesh.stop()
        stop_boxes(thread, boxes)
        subscriber.close()
