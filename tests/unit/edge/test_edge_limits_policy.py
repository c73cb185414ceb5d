"""The sans-IO policies behind the edge's bounds: TCP caps and deadlines
(services/edge/tcp_limits.py), rate-limited logging (ratelog.py), UDP keep-alives."""

from __future__ import annotations

from typing import Any

from services.edge.keepalive import is_keepalive
from services.edge.ratelog import RateLimitedLog
from services.edge.tcp_limits import FD_RESERVE, ConnectionBudget, TcpLimits, deadline_reason
from tests.unit.edge.proxyharness import Harness


def test_the_global_cap_fits_under_the_descriptor_limit() -> None:
    limits = TcpLimits(max_connections=2048)
    assert limits.effective_cap(None) == 2048
    assert limits.effective_cap(1024) == 1024 - FD_RESERVE
    assert limits.effective_cap(100000) == 2048
    assert limits.effective_cap(10) == 1  # never zero


def test_budget_caps_per_address_and_globally_and_releases() -> None:
    budget = ConnectionBudget(cap=3, per_ip=2)
    assert budget.admit("10.0.0.1") is None
    assert budget.admit("10.0.0.1") is None
    assert budget.admit("10.0.0.1") == "per_ip"
    assert budget.admit("10.0.0.2") is None
    assert budget.admit("10.0.0.3") == "global"
    assert budget.admit(None) == "global"  # our own outbound ones count globally
    budget.release("10.0.0.1")
    assert budget.held_by("10.0.0.1") == 1
    assert budget.admit(None) is None
    budget.release(None)
    budget.release("10.0.0.1")
    budget.release("10.0.0.2")
    assert budget.total == 0 and budget.held_by("10.0.0.1") == 0


def test_deadlines_of_a_connection() -> None:
    limits = TcpLimits(idle_timeout=60, header_timeout=5)
    kw: dict[str, Any] = {"last_activity": 100.0, "partial_since": None,
                          "awaiting_first": False}
    assert deadline_reason(limits, 104.9, **kw) is None
    assert deadline_reason(limits, 160.0, **kw) == "idle_timeout"
    # A message begun at 101 must be whole by 106, whatever arrives in between.
    assert deadline_reason(limits, 105.9, **{**kw, "partial_since": 101.0}) is None
    assert deadline_reason(limits, 106.0, **{**kw, "partial_since": 101.0}) == "header_timeout"
    # A new inbound connection owes its first message within the same time.
    assert deadline_reason(limits, 105.0, **{**kw, "awaiting_first": True}) == "header_timeout"


def test_rate_limited_log_lets_a_burst_through_then_counts_what_it_held_back() -> None:
    lines: list[tuple[str, dict[str, Any]]] = []
    now = [0.0]
    log = RateLimitedLog(lambda event, **kw: lines.append((event, kw)), lambda: now[0],
                         rate=2.0, burst=3)
    written = [log("sip.malformed", n=i) for i in range(10)]
    assert written == [True] * 3 + [False] * 7
    assert log("tcp.refused")  # another event has a bucket of its own
    now[0] = 1.0  # two tokens back
    assert log("sip.malformed", n=10)
    assert lines[-1] == ("sip.malformed", {"n": 10, "suppressed": 7})
    assert log("sip.malformed", n=11) and not log("sip.malformed", n=12)


def test_keepalive_datagrams_are_recognised_and_counted_not_parsed() -> None:
    for data in (b"", b"\r\n", b"\r\n\r\n", b"\n"):
        assert is_keepalive(data)
    for data in (b"\r\n\r\n\r\n", b"x", b"\x00", b"OPTIONS"):
        assert not is_keepalive(data)
    h = Harness()
    assert h.feed(b"\r\n") == [] and h.feed(b"") == []
    assert h.core.counters.keepalives.value == 2
    assert h.core.counters.bad_msg_hdr.value == 0
