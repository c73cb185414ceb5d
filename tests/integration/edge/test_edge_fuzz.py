"""The fuzzing suite in `make test`: a few thousand seeded mutations over UDP and TCP to a
real edge on uvloop, with legitimate calls placed by sipp in the middle of it (issue 12).

`fuzz_edge.run` holds the edge to `sipmesh parse`'s verdict message by message, to no
500 over TCP, to no traceback, and to a bounded memory growth; the calls must complete.
The seed is fixed so a failure reproduces (`fuzz_edge.py --seed 20261206 --messages N`);
`make fuzz` runs the same with far more messages and a seed of the day.
"""

from __future__ import annotations

import subprocess

import pytest
from edge_harness import Sipp, free_port
from fuzz_edge import run
from wire import start_sink_edge

pytestmark = pytest.mark.peers

SEED = 20261206
MESSAGES = 3000


def test_fuzzing_the_edge_over_udp_and_tcp_while_calls_go_through(sipp: Sipp) -> None:
    uas = free_port()
    sipp.uas("uas", uas)
    # The edge trusts nobody: the calls reach the UAS as local user `service` of the local
    # domain 127.0.0.1, through a static route.
    edge, sink = start_sink_edge({"SIPMESH_EDGE_TIMER_C": "5"},
                                 routes=(f"service=sip:service@127.0.0.1:{uas}",))
    calls: list[subprocess.Popen[bytes]] = []

    def place_calls(i: int) -> None:
        if i == 0:  # the calls run while the fuzzing goes on
            calls.append(sipp.uac_background("uac", edge, f"127.0.0.1:{uas}",
                                             calls=10, rate=10))

    try:
        report = run(edge, sink, messages=MESSAGES, seed=SEED, tcp_every=10,
                     max_growth_mb=48, between=place_calls)
        print(report.line())
        [call] = calls
        assert call.wait(60) == 0, "the legitimate calls failed during the fuzzing"
        assert report.forwarded > 50 and report.tcp >= MESSAGES // 10
    finally:
        assert edge.stop() == 0
        sink.close()
    assert not edge.tracebacks(), edge.log_text()[-4000:]
