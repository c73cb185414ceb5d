"""Fixtures of the edge integration tests: a running edge and sipp helpers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_harness import HERE, Edge, Sipp, start_edge

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: run tests/peers/ensure.sh (make test does)")
    proc = start_edge()  # uvloop, as users run it
    yield proc
    assert proc.stop() == 0, "the edge must stop cleanly on SIGTERM"
    assert not proc.tracebacks(), proc.log_text()[-4000:]


@pytest.fixture
def patient_edge() -> Iterator[Edge]:
    # Timer C of the shared fixture (3 s) is shorter than sipp's own retransmission back-off
    # under packet loss; this one keeps a realistic Timer C. And the RFC's T1 (500 ms, as
    # sipp's): a transaction must outlive its client's retransmissions (RFC 3261 §17.2.2,
    # Timer J = 64*T1 covers the client's Timer F = 64*T1 only when both use one T1). With
    # the shared fixture's 100 ms, sipp's 4th retransmission (7.5 s after the first send)
    # comes after the edge's Timer J or H (6.4 s): no transaction answers it from memory
    # and the call fails now and then (at 25% loss: 3 runs of 3; with 500 ms: 0 of 3),
    # as the registrar's loss test found (4aed793).
    proc = start_edge({"SIPMESH_EDGE_TIMER_C": "60", "SIPMESH_EDGE_T1": "0.5"})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def asyncio_edge() -> Iterator[Edge]:
    """The fallback event loop (`[edge] uvloop = false`), kept tested on a subset."""
    proc = start_edge(loop="asyncio")
    yield proc
    assert proc.stop() == 0
    assert not proc.tracebacks(), proc.log_text()[-4000:]


@pytest.fixture(scope="module")
def fork_edge() -> Iterator[Edge]:
    from edge_harness import free_port

    a, b = free_port(), free_port()
    proc = start_edge(
        {"SIPMESH_EDGE_ROUTING_MODULE": "routing_fork",
         "SIPMESH_EDGE_STATIC_ROUTES": f"fork=sip:a@127.0.0.1:{a}|sip:b@127.0.0.1:{b}"},
        extra_path=[str(HERE)])
    proc.lines.append(f"{a} {b}")
    yield proc
    proc.stop()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    runner = Sipp(tmp_path)
    yield runner
    runner.stop()
