"""sipp as UAC and UAS through a real edge process, over UDP and TCP (RFC 3261 §16, §17)."""

from __future__ import annotations

import json
import urllib.request

import pytest
from edge_harness import Edge, Sipp, free_port, summary, worker_statistic

pytestmark = pytest.mark.peers

TRANSPORTS = [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_basic_call_with_builtin_scenarios(edge: Edge, sipp: Sipp, transport: str) -> None:
    # The out-of-the-box path of the README: `sipp -sn uac -rsa EDGE UAS`.
    uas = free_port()
    sipp.uas("uas", uas, transport=transport)
    result = sipp.uac("uac", edge, f"127.0.0.1:{uas}", calls=5, transport=transport)
    assert result.returncode == 0, summary(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_call_follows_record_route(edge: Edge, sipp: Sipp, transport: str) -> None:
    uas = free_port()
    sipp.uas("uas_rr.xml", uas, transport=transport)
    result = sipp.uac("uac_rr.xml", edge, f"127.0.0.1:{uas}", calls=3, transport=transport)
    assert result.returncode == 0, summary(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_before_answer(edge: Edge, sipp: Sipp, transport: str) -> None:
    uas = free_port()
    sipp.uas("uas_ring_cancel.xml", uas, transport=transport, extra=["-m", "2"])
    result = sipp.uac("uac_cancel.xml", edge, f"127.0.0.1:{uas}", calls=2,
                      transport=transport, timeout=10)
    assert result.returncode == 0, summary(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_busy_486_is_relayed_and_acked(edge: Edge, sipp: Sipp, transport: str) -> None:
    uas = free_port()
    proc = sipp.uas("uas_busy.xml", uas, transport=transport, extra=["-m", "2"])
    result = sipp.uac("uac_expect_486.xml", edge, f"127.0.0.1:{uas}", calls=2,
                      transport=transport, timeout=10)
    assert result.returncode == 0, summary(result)
    # The UAS got the proxy's hop-by-hop ACK for both calls and ended successfully.
    assert proc.wait(10) == 0


def test_no_answer_times_out_with_408_after_timer_c(edge: Edge, sipp: Sipp) -> None:
    # Timer C is 3 s in these tests; the ringing branch is cancelled and the caller gets 408.
    uas = free_port()
    proc = sipp.uas("uas_ring_cancel.xml", uas, extra=["-m", "1"])
    result = sipp.uac("uac_expect_408.xml", edge, f"127.0.0.1:{uas}", calls=1, timeout=15)
    assert result.returncode == 0, summary(result)
    assert proc.wait(10) == 0, "the UAS must have received the proxy's CANCEL and ACK"


def test_unreachable_next_hop_gives_408_after_timer_b(edge: Edge, sipp: Sipp) -> None:
    # Nobody listens on the target: the INVITE is retransmitted until Timer B (64*T1 = 6.4 s).
    result = sipp.uac("uac_expect_408.xml", edge, f"127.0.0.1:{free_port()}", calls=1,
                      timeout=20)
    assert result.returncode == 0, summary(result)


def test_retransmissions_under_packet_loss(patient_edge: Edge, sipp: Sipp) -> None:
    # Loss on the caller's side: its INVITE/ACK/BYE and the responses it receives vanish 10%
    # of the time, so the edge absorbs retransmitted requests, resends its final responses
    # and relays retransmitted 2xx statelessly.  (A lossy sipp UAS is no use: when it drops
    # a first INVITE it still creates the call and then ignores every retransmission.)
    # sipp's simulated loss also hits its own retransmissions: with its default budget (a
    # BYE sent 6 times, each round trip surviving 0.9 x 0.9) a call fails by itself now and
    # then (FailedMaxUDPRetrans, seen at 30% loss on calls whose every INVITE was dropped
    # before reaching the edge).  A larger budget makes that outcome negligible (~1e-8 per
    # call) while any retransmission the edge mishandles still fails the call.
    uas = free_port()
    sipp.uas("uas", uas)
    result = sipp.uac("uac", patient_edge, f"127.0.0.1:{uas}", calls=30, rate=20, timeout=60,
                      extra=["-lost", "10", "-max_invite_retrans", "10",
                             "-max_non_invite_retrans", "10"])
    assert result.returncode == 0, summary(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_max_forwards_zero(edge: Edge, sipp: Sipp, transport: str) -> None:
    result = sipp.uac("uac_max_forwards_0.xml", edge, f"127.0.0.1:{free_port()}", calls=1,
                      transport=transport, timeout=10)
    assert result.returncode == 0, summary(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_parallel_forking_one_answers_other_cancelled(fork_edge: Edge, sipp: Sipp,
                                                      transport: str) -> None:
    a, b = (int(p) for p in fork_edge.lines[-1].split())
    sipp.uas("uas_rr.xml", a, transport=transport)
    ringing = sipp.uas("uas_ring_cancel.xml", b, transport=transport, extra=["-m", "2"])
    result = sipp.uac("uac_rr.xml", fork_edge, fork_edge.address, calls=2, timeout=15,
                      service="fork", transport=transport)
    assert result.returncode == 0, summary(result)
    assert ringing.wait(10) == 0, "the second UAS must have been cancelled (200, 487, ACK)"


def test_metrics_and_mi_statistics_count_the_traffic(edge: Edge, sipp: Sipp) -> None:
    uas = free_port()
    sipp.uas("uas", uas)
    assert sipp.uac("uac", edge, f"127.0.0.1:{uas}", calls=2).returncode == 0
    with urllib.request.urlopen(f"{edge.http}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'sipmesh_edge_requests_total{method="INVITE"}' in metrics
    assert "sipmesh_edge_transactions" in metrics
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "get_statistics",
                       "params": {"statistics": ["core:rcv_requests", "core:fwd_requests"]}})
    req = urllib.request.Request(f"{edge.http}/mi", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        stats = json.loads(resp.read())["result"]
    assert stats["core:rcv_requests"] >= 6  # INVITE, ACK and BYE of each call
    assert stats["core:fwd_requests"] >= 6


def test_two_workers_share_the_port(sipp: Sipp) -> None:
    # SO_REUSEPORT spreads callers over the workers; each worker's private Via port brings
    # the responses of its forwarded requests back to it.  One socket per call (-t un).
    from edge_harness import start_edge

    edge = start_edge({"SIPMESH_EDGE_WORKERS": "2"})
    try:
        uas = free_port()
        sipp.uas("uas", uas)
        result = sipp.uac("uac", edge, f"127.0.0.1:{uas}", calls=40, rate=40, transport="un",
                          extra=["-max_socket", "1000"])
        assert result.returncode == 0, summary(result)
        assert edge.proc.stdout is not None
        second = edge.proc.stdout.readline()  # the other worker's ready line
        urls = [line.split()[line.split().index("http") + 1]
                for line in (edge.lines[0], second)]
        counts = worker_statistic(urls, "core:fwd_requests")
        assert all(c > 0 for c in counts), counts  # both workers carried calls
        assert sum(counts) >= 3 * 40  # INVITE, ACK and BYE of every call
    finally:
        assert edge.stop() == 0


def test_untrusted_caller_authenticates_with_digest(sipp: Sipp) -> None:
    # Nothing trusted: sipp must answer the edge's 407 with credentials of a configured user.
    from edge_harness import start_edge

    edge = start_edge({"SIPMESH_EDGE_TRUSTED": "", "SIPMESH_EDGE_USERS": "sipp:secret"})
    try:
        uas = free_port()
        sipp.uas("uas_rr.xml", uas)
        result = sipp.uac("uac_proxy_auth.xml", edge, f"127.0.0.1:{uas}", calls=2, timeout=15)
        assert result.returncode == 0, summary(result)
        refused = sipp.uac("uac", edge, f"127.0.0.1:{uas}", calls=1, timeout=5)
        assert refused.returncode != 0  # no credentials: never relayed
    finally:
        edge.stop()
