"""The layer's timer wheel: the same timers fire, in the same order, whatever the bucket size.

`TransactionLayer(tick=...)` buckets deadlines by `tick`; `handle_timer(now)` must still fire
every timer whose deadline is not after `now`, earliest first (equal deadlines in arming
order), and `next_deadline()` must name the earliest timer still armed.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from shared.transaction import (
    ResponseReceived,
    Terminated,
    TimedOut,
    TimerSettings,
    TransactionLayer,
    Transmit,
)
from tests.unit.transaction.sipmsg import request, response_to

DEST = ("10.0.0.2", 5060)


def _describe(events: list[Any]) -> list[tuple[str, str, bool]]:
    out = []
    for e in events:
        key = "/".join(e.transaction.key)
        if isinstance(e, Transmit):
            out.append(("transmit", key, e.retransmission))
        elif isinstance(e, ResponseReceived):
            out.append(("response", key, False))
        else:
            out.append((type(e).__name__, key, False))
    return out


def _scenario(tick: float, seed: int, wait_tick: float = 0.0) -> list[Any]:
    """Client transactions started at random times, some answered (their timers stopped,
    others armed), the clock moved in random steps: everything the layer said."""
    rnd = random.Random(seed)
    settings = TimerSettings(t1=0.5, t4=rnd.choice([0.0, 5.0]), wait_tick=wait_tick)
    layer = TransactionLayer(settings, tick=tick)
    log: list[Any] = []
    now = 0.0
    pending = []
    for i in range(120):
        now += rnd.choice([0.0, 0.001, 0.003, 0.01, 0.04, 0.26])
        if rnd.random() < 0.6:
            method = rnd.choice(["INVITE", "BYE", "OPTIONS"])
            req = request(method, branch=f"z9hG4bK{i}", call_id=f"c{i}")
            _txn, out = layer.create_client(req, req.serialize(), DEST, False, now)
            pending.append(req)
            log.append(("start", now, _describe(out)))
        elif pending:
            req = pending.pop(rnd.randrange(len(pending)))
            status = rnd.choice([100, 180, 200, 486])
            events = layer.receive_response(response_to(req, status), now) or []
            log.append(("answer", now, status, _describe(events)))
        if rnd.random() < 0.3:
            now += rnd.choice([0.0, 0.005, 0.5, 1.7, 4.0])
            log.append(("timer", now, _describe(layer.handle_timer(now))))
        log.append(("next", layer.next_deadline()))
    while (deadline := layer.next_deadline()) is not None:
        now = max(now, deadline) + rnd.choice([0.0, 0.002, 0.3])
        log.append(("timer", now, _describe(layer.handle_timer(now))))
    return log


@pytest.mark.parametrize("wait_tick", [0.0, 1.0])
@pytest.mark.parametrize("seed", range(6))
def test_bucket_size_does_not_change_what_fires_or_when(seed: int, wait_tick: float) -> None:
    # A huge tick puts every deadline in one bucket (a sorted list); a tiny one gives each
    # deadline its own bucket (a heap of deadlines): the layer's answers are the same.
    # With wait_tick the wait timers (D, K here) sit in their own lists, outside the wheel,
    # and still fire in (deadline, arming order) with the others.
    reference = _scenario(1e9, seed, wait_tick)
    assert _scenario(1e-6, seed, wait_tick) == reference
    assert _scenario(0.01, seed, wait_tick) == reference
    assert _scenario(0.25, seed, wait_tick) == reference


def _drive(layer: TransactionLayer, now: float) -> list[tuple[float, list[Any]]]:
    """What a worker does: wake up at `next_deadline()` and fire what is due, until no timer
    is left; the wake-ups that fired something, with what they fired."""
    wakes = []
    while (deadline := layer.next_deadline()) is not None:
        now = max(now, deadline)
        events = layer.handle_timer(now)
        if events:
            wakes.append((now, events))
    return wakes


def test_transactions_that_end_in_one_second_take_one_wake_up() -> None:
    # 100 BYEs answered within one second: each client transaction waits out Timer K (T4, 5 s,
    # §17.1.2.2) and each server transaction Timer J (64*T1, §17.2.2).  Exact deadlines
    # took 200 wake-ups; on whole seconds they take one per second, none of them early.
    layer = TransactionLayer(TimerSettings(t1=0.5, t4=5.0, wait_tick=1.0), tick=0.01)
    answered: dict[object, float] = {}
    for i in range(100):
        now = 0.005 + i * 0.0099
        bye = request("BYE", branch=f"z9hG4bKb{i}", call_id=f"b{i}", to_tag="t")
        server, _ = layer.create_server(bye, DEST, False, now)
        client, _ = layer.create_client(bye, bye.serialize(), DEST, False, now)
        layer.receive_response(response_to(bye, 200), now)
        layer.respond(server, response_to(bye, 200), now)
        answered[client] = answered[server] = now
    wakes = _drive(layer, 1.0)
    assert [(at, len(events)) for at, events in wakes] == [(6.0, 100), (33.0, 100)]
    for at, events in wakes:
        assert all(isinstance(e, Terminated) for e in events)
        assert all(at >= answered[e.transaction] + (5.0 if at < 10 else 32.0)
                   for e in events)
    assert len(layer) == 0


def test_retransmissions_keep_their_deadlines_beside_the_wait_timers() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5, t4=5.0, wait_tick=1.0), tick=0.01)
    bye = request("BYE", branch="z9hG4bKdone", call_id="done")
    layer.create_client(bye, bye.serialize(), DEST, False, 0.0)
    layer.receive_response(response_to(bye, 200), 0.1)  # Timer K: 5.1 -> 6.0
    assert layer.next_deadline() == 6.0
    inv = request("INVITE", branch="z9hG4bKretx", call_id="retx")
    layer.create_client(inv, inv.serialize(), DEST, False, 0.3)
    assert layer.next_deadline() == pytest.approx(0.8)  # Timer A, T1 after the INVITE
    assert _branches(layer.handle_timer(0.8)) == ["z9hG4bKretx"]
    assert layer.next_deadline() == pytest.approx(1.8)  # then 2*T1 (§17.1.1.2)
    layer.receive_response(response_to(inv, 180), 1.0)  # A and B stop
    assert layer.next_deadline() == 6.0
    assert layer.handle_timer(5.99) == []
    assert [type(e) for e in layer.handle_timer(6.0)] == [Terminated]


def _branches(events: list[Any]) -> list[str]:
    """The branches of the transactions that retransmitted, in order."""
    return [txn.key[0] for e in events
            if isinstance(e, Transmit) and (txn := e.transaction) is not None]


def test_timers_of_many_buckets_fire_in_deadline_order_and_later_ones_wait() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5), tick=1.0)
    reqs = {}
    for i, start in enumerate([0.9, 0.0, 0.3, 2.2, 0.6]):
        req = request("OPTIONS", branch=f"z9hG4bKw{i}", call_id=f"w{i}")
        layer.create_client(req, req.serialize(), DEST, False, start)
        reqs[req.top_via.branch] = start
    # Timer E of each: start + 0.5.  At 1.15 those of 0.0, 0.3 and 0.6 are due (buckets 0
    # and 1), the one of 0.9 (1.4, bucket 1) is not.
    assert layer.next_deadline() == pytest.approx(0.5)
    assert [reqs[b] for b in _branches(layer.handle_timer(1.15))] == [0.0, 0.3, 0.6]
    assert layer.next_deadline() == pytest.approx(1.4)
    assert [reqs[b] for b in _branches(layer.handle_timer(1.4))] == [0.9]


def test_a_stopped_timer_is_not_the_next_deadline() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5), tick=0.01)
    req = request("INVITE", branch="z9hG4bKs1")
    layer.create_client(req, req.serialize(), DEST, False, 0.0)
    other = request("OPTIONS", branch="z9hG4bKs2", call_id="s2")
    layer.create_client(other, other.serialize(), DEST, False, 0.2)
    assert layer.next_deadline() == pytest.approx(0.5)  # the INVITE's Timer A
    layer.receive_response(response_to(req, 180), 0.3)  # §17.1.1.2: Proceeding, A and B stop
    assert layer.next_deadline() == pytest.approx(0.7)  # the OPTIONS' Timer E
    events = layer.handle_timer(40.0)
    assert any(isinstance(e, TimedOut) for e in events)
    assert any(isinstance(e, Terminated) for e in events)
    assert layer.next_deadline() is None


def test_tick_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TransactionLayer(tick=0.0)
