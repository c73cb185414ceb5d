"""A transaction on its own, without a layer: it returns its timer actions (`Arm`, `Note`)
instead of reaching into the layer that keeps the heap of deadlines."""

from __future__ import annotations

import pytest

from shared.transaction.events import ResponseReceived, TransactionEvent, Transmit
from shared.transaction.key import client_key
from shared.transaction.machine import TIMER_EVENT
from shared.transaction.timers import Timer, TimerSettings
from shared.transaction.transaction import Action, Arm, ClientTransaction, Note
from tests.unit.transaction.sipmsg import request, response_to

SETTINGS = TimerSettings(t1=0.5, t2=4.0, t4=5.0)


def client(method: str, reliable: bool) -> ClientTransaction:
    req = request(method)
    return ClientTransaction(SETTINGS, req, req.serialize(), "peer", reliable,
                             client_key(req.top_via.branch or "", method))


def test_begin_returns_the_initial_timers_as_actions() -> None:
    txn = client("INVITE", reliable=False)
    out: list[TransactionEvent] = []
    acts: list[Action] = []
    txn.begin(100.0, out, acts)
    assert [type(e) for e in out] == [Transmit]
    # §17.1.1.2: Timer A = T1, Timer B = 64*T1, as deadlines on the caller's clock.
    assert acts == [Arm(Timer.A, 100.5), Arm(Timer.B, 132.0)]
    assert txn.timers == {Timer.A: 100.5, Timer.B: 132.0}


def test_retransmission_backoff_and_termination_are_returned() -> None:
    txn = client("INVITE", reliable=False)
    txn.begin(0.0, [], [])
    out: list[TransactionEvent] = []
    acts: list[Action] = []
    del txn.timers[Timer.A]  # what the layer does when it pops the deadline
    assert txn.fire(TIMER_EVENT[Timer.A], 0.5, out, acts, timer=Timer.A)
    assert out and all(isinstance(e, Transmit) and e.retransmission for e in out)
    assert acts == [Note.RETRANSMITTED, Arm(Timer.A, 1.5)]  # doubled to 2*T1
    out, acts = [], []
    # A 200 ends an INVITE client transaction at once (§17.1.1.2): it says so, the layer
    # (not the transaction) forgets it.
    assert txn.request is not None
    txn.receive(response_to(txn.request, 200), 0.7, out, acts)
    assert [type(e) for e in out] == [ResponseReceived]
    assert acts == [Note.TERMINATED]
    assert txn.timers == {}


def test_reliable_non_invite_terminates_through_a_zero_length_timer_k() -> None:
    txn = client("OPTIONS", reliable=True)
    acts: list[Action] = []
    txn.begin(0.0, [], acts)
    assert acts == [Arm(Timer.F, 32.0)]  # no Timer E on a reliable transport
    acts.clear()
    assert txn.request is not None
    txn.receive(response_to(txn.request, 200), 1.0, [], acts)
    assert acts == [Note.TERMINATED]  # Timer K is zero on TCP: fires within the call


def test_a_final_response_leaves_the_client_transaction_only_what_it_resends() -> None:
    # What waits out Timer K (or D) keeps no request, no bytes to retransmit, and only the
    # retransmission timers' intervals (none for K): fewer objects kept for seconds.
    txn = client("BYE", reliable=False)
    txn.begin(0.0, [], [])
    assert txn.intervals == {Timer.E: 0.5}  # Timer F (no backoff) keeps no interval
    req = txn.request
    assert req is not None
    txn.receive(response_to(req, 200), 0.2, [], [])
    assert txn.request is None and txn.data == b""
    assert txn.timers == {Timer.K: 6.0}  # T4 after 0.2, on the next whole second


def test_a_non_2xx_ack_is_built_before_the_invite_request_goes() -> None:
    txn = client("INVITE", reliable=False)
    txn.begin(0.0, [], [])
    req = txn.request
    assert req is not None
    out: list[TransactionEvent] = []
    txn.receive(response_to(req, 486), 0.2, out, [])
    assert txn.request is None
    assert [type(e) for e in out] == [Transmit, ResponseReceived]
    ack = out[0]
    assert isinstance(ack, Transmit) and ack.data.startswith(b"ACK ")
    out = []
    txn.receive(response_to(req, 486), 0.3, out, [])  # retransmitted: the same ACK again
    assert [e.data for e in out if isinstance(e, Transmit)] == [ack.data]


def test_wait_timers_end_on_the_next_wait_tick_retransmission_timers_exactly() -> None:
    # §17.1.2.2: Timer K keeps the Completed state T4 "to buffer response retransmissions";
    # ending it later only absorbs longer.  Timer E's retransmissions are what a peer sees:
    # exact.
    settings = TimerSettings(t1=0.5, t2=4.0, t4=5.0, wait_tick=1.0)
    req = request("BYE")
    txn = ClientTransaction(settings, req, req.serialize(), "peer", False,
                            client_key(req.top_via.branch or "", "BYE"))
    acts: list[Action] = []
    txn.begin(0.3, [], acts)
    assert acts == [Arm(Timer.E, 0.8), Arm(Timer.F, 32.3)]
    acts.clear()
    txn.receive(response_to(req, 200), 0.35, [], acts)
    assert acts == [Arm(Timer.K, 6.0)]


def test_wait_deadline_is_the_next_multiple_never_earlier() -> None:
    settings = TimerSettings(wait_tick=0.25)
    for deadline in (0.0, 0.1, 0.25, 0.3, 1e5 + 0.7, 123456.789, 0.1 + 0.2, 5.2, 32.1):
        end = settings.wait_deadline(deadline)
        assert deadline <= end < deadline + 0.25 + 1e-9
        assert end / 0.25 == round(end / 0.25)
    assert settings.wait_deadline(0.5) == 0.5  # on a boundary: not a tick later
    assert TimerSettings(wait_tick=0.0).wait_deadline(5.2) == 5.2  # 0: exact


def test_wait_tick_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        TimerSettings(wait_tick=-1.0)
