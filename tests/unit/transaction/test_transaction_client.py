"""Client transactions (RFC 3261 §17.1) on a fake clock: retransmissions, timeouts, ACK."""

from __future__ import annotations

from typing import Any

import pytest

from shared.sip import Request
from shared.transaction import (
    ResponseReceived,
    State,
    Terminated,
    TimedOut,
    TimerSettings,
    TransactionLayer,
    Transmit,
    TransportFailed,
)
from tests.support.sipmsg import parse_request
from tests.unit.transaction.sipmsg import request, response_to

DEST = ("10.0.0.2", 5060)


def start(layer: TransactionLayer, method: str = "INVITE",
          reliable: bool = False) -> tuple[Request, Any, list[Any]]:
    req = request(method, branch=f"z9hG4bK{method.lower()}1")
    txn, out = layer.create_client(req, req.serialize(), DEST, reliable, now=0.0)
    return req, txn, out


def transmits(events: list[Any]) -> list[Transmit]:
    return [e for e in events if isinstance(e, Transmit)]


def test_invite_sent_and_timer_a_doubles_until_timer_b() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5))
    req, txn, out = start(layer)
    assert transmits(out)[0].data == req.serialize()
    assert txn.state is State.CALLING
    fired: list[float] = []
    now = 0.0
    while True:
        deadline = layer.next_deadline()
        assert deadline is not None
        now = deadline
        events = layer.handle_timer(now)
        if any(isinstance(e, TimedOut) for e in events):
            break
        fired.extend(now for e in transmits(events) if e.retransmission)
    # §17.1.1.2: retransmit at T1, 2T1, 4T1, ... until Timer B = 64*T1 = 32 s.
    assert fired == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert now == pytest.approx(32.0)
    assert txn.state is State.TERMINATED
    assert layer.clients == {}


def test_reliable_transport_never_retransmits() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5))
    _req, _txn, _out = start(layer, reliable=True)
    assert layer.next_deadline() == pytest.approx(32.0)  # only Timer B
    events = layer.handle_timer(32.0)
    assert not transmits(events)
    assert any(isinstance(e, TimedOut) for e in events)


def test_provisional_stops_retransmissions_and_final_sends_ack() -> None:
    layer = TransactionLayer()
    req, txn, _ = start(layer)
    events = layer.receive_response(response_to(req, 180), 0.1)
    assert events is not None and isinstance(events[0], ResponseReceived)
    assert txn.state is State.PROCEEDING
    assert layer.handle_timer(10.0) == []  # Timers A and B are off in Proceeding
    busy = response_to(req, 486)
    events = layer.receive_response(busy, 11.0)
    assert events is not None
    acks = transmits(events)
    assert len(acks) == 1
    ack = parse_request(acks[0].data)
    # §17.1.1.3: same branch, Request-URI, Call-ID, CSeq number; To from the response.
    assert ack.method == "ACK"
    assert ack.top_via.branch == req.top_via.branch
    assert ack.uri == req.uri and ack.call_id == req.call_id
    assert ack.cseq.number == 1 and ack.cseq.method == "ACK"
    assert ack.to_tag == "uas1"
    assert [type(e) for e in events] == [Transmit, ResponseReceived]
    assert txn.state is State.COMPLETED
    # A retransmitted 486 gets the ACK again and is not passed up (absorbed).
    again = layer.receive_response(response_to(req, 486), 11.5)
    assert again is not None and [type(e) for e in again] == [Transmit]
    # Timer D (32 s on UDP) ends the transaction.
    assert [type(e) for e in layer.handle_timer(11.0 + 32.0)] == [Terminated]
    assert layer.clients == {}


def test_2xx_terminates_invite_client_at_once() -> None:
    layer = TransactionLayer()
    req, _txn, _ = start(layer)
    events = layer.receive_response(response_to(req, 200), 0.2)
    assert events is not None
    assert [type(e) for e in events] == [ResponseReceived, Terminated]
    assert not transmits(events)  # the ACK for a 2xx is the TU's business (§13.2.2.4)
    # A retransmitted 2xx matches nothing any more: the proxy forwards it statelessly.
    assert layer.receive_response(response_to(req, 200), 0.3) is None


def test_non_invite_timer_e_caps_at_t2_and_timer_f_times_out() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5, t2=4.0))
    _req, _txn, _ = start(layer, "OPTIONS")
    times: list[float] = []
    now = 0.0
    timed_out = False
    while not timed_out:
        now = layer.next_deadline() or 0.0
        events = layer.handle_timer(now)
        timed_out = any(isinstance(e, TimedOut) for e in events)
        times.extend(now for e in transmits(events))
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # 0.5, 1, 2, 4, 4 (capped at T2)
    assert now == pytest.approx(32.0)


def test_non_invite_proceeding_retransmits_every_t2_then_completed_waits_timer_k() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5, t2=4.0, t4=5.0))
    req, txn, _ = start(layer, "BYE")
    layer.receive_response(response_to(req, 100), 0.1)
    assert txn.state is State.PROCEEDING
    assert layer.next_deadline() == pytest.approx(0.5)
    events = layer.handle_timer(0.5)
    assert len(transmits(events)) == 1
    assert layer.next_deadline() == pytest.approx(4.5)  # §17.1.2.2: T2 in Proceeding
    answered = layer.receive_response(response_to(req, 200), 1.0)
    assert answered is not None and isinstance(answered[0], ResponseReceived)
    assert txn.state is State.COMPLETED
    assert layer.receive_response(response_to(req, 200), 2.0) == []  # absorbed
    assert [type(e) for e in layer.handle_timer(6.0)] == [Terminated]  # Timer K = T4


def test_response_matching_uses_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    req, _txn, _ = start(layer)
    # Same branch, method CANCEL: a different transaction (§17.1.3).
    cancel_resp = response_to(req, 200)
    cancel_resp.set_header("CSeq", "1 CANCEL")
    assert layer.receive_response(cancel_resp, 0.1) is None
    other = response_to(req, 180, vias=["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKother"])
    assert layer.receive_response(other, 0.1) is None


def test_transport_error_informs_the_tu() -> None:
    layer = TransactionLayer()
    _req, txn, _ = start(layer)
    events = layer.transport_error(txn, 0.1)
    assert [type(e) for e in events] == [TransportFailed, Terminated]
    assert layer.clients == {}
