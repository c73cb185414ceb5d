"""Server transactions (RFC 3261 §17.2) and matching (§17.2.3, §9.2) on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from shared.sip import make_response
from shared.transaction import (
    State,
    Terminated,
    TimedOut,
    TimerSettings,
    TransactionLayer,
    Transmit,
    server_key,
)
from shared.transaction.machine import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
)
from tests.support.sipmsg import parse_response
from tests.unit.transaction.sipmsg import request

SRC = ("10.0.0.1", 5060)


def sent(events: list[Any]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Transmit)]


def test_invite_server_sends_100_trying_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    txn, out = layer.create_server(inv, SRC, False, 0.0)
    assert len(sent(out)) == 1 and parse_response(sent(out)[0]).status == 100
    again = layer.find_server(request("INVITE"))
    assert again is txn
    # §17.2.1: a retransmitted INVITE in Proceeding gets the last provisional again.
    assert parse_response(sent(layer.absorb(txn, inv, 0.1))[0]).status == 100


def test_invite_server_final_retransmitted_by_timer_g_until_ack() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5, t2=4.0, t4=5.0))
    inv = request("INVITE")
    txn, _ = layer.create_server(inv, SRC, False, 0.0)
    out = layer.respond(txn, make_response(inv, 486, to_tag="x"), 1.0)
    assert parse_response(sent(out)[0]).status == 486
    assert txn.state is State.COMPLETED
    times = []
    for _ in range(4):
        now = layer.next_deadline()
        assert now is not None
        events = layer.handle_timer(now)
        times.append(now)
        assert parse_response(sent(events)[0]).status == 486
    assert times == pytest.approx([1.5, 2.5, 4.5, 8.5])  # Timer G: T1, 2T1, 4T1, T2
    ack = request("ACK", to_tag="x")
    found = layer.find_server(ack)
    assert found is txn
    assert layer.absorb(txn, ack, 9.0) == []
    assert txn.state is State.CONFIRMED
    assert layer.absorb(txn, ack, 9.1) == []  # ACK retransmission absorbed
    assert [type(e) for e in layer.handle_timer(9.0 + 5.0)] == [Terminated]  # Timer I = T4


def test_invite_server_timer_h_without_ack() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5))
    inv = request("INVITE")
    txn, _ = layer.create_server(inv, SRC, False, 0.0)
    layer.respond(txn, make_response(inv, 404, to_tag="x"), 0.0)
    events = layer.handle_timer(32.0)  # Timer H = 64*T1
    assert any(isinstance(e, TimedOut) for e in events)
    assert layer.servers == {}


@pytest.mark.parametrize(("wait_tick", "end"), [(0.0, 32.1), (1.0, 33.0)])
def test_invite_server_2xx_is_accepted_then_timer_l_ends_it(wait_tick: float,
                                                             end: float) -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5, wait_tick=wait_tick))
    inv = request("INVITE")
    txn, _ = layer.create_server(inv, SRC, False, 0.0)
    out = layer.respond(txn, make_response(inv, 200, to_tag="x"), 0.1)
    assert [type(e) for e in out] == [Transmit]
    assert txn.state is State.ACCEPTED  # RFC 6026 §7.1
    # A late INVITE retransmission is absorbed, not a new transaction.
    assert layer.find_server(inv) is txn
    assert layer.absorb(txn, inv, 1.0) == []
    # Another branch's 2xx still goes out (RFC 6026 §8.6).
    assert len(sent(layer.respond(txn, make_response(inv, 200, to_tag="y"), 1.5))) == 1
    # Timer L: 64*T1 after the 2xx, on the next whole second unless wait_tick is 0.
    assert layer.handle_timer(end - 0.001) == []
    assert layer.find_server(inv) is txn
    assert [type(e) for e in layer.handle_timer(end)] == [Terminated]
    assert layer.find_server(inv) is None


def test_non_invite_server_reliable_terminates_at_once() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="x")
    txn, out = layer.create_server(bye, SRC, True, 0.0)
    assert out == []  # no 100 for non-INVITE
    assert layer.absorb(txn, bye, 0.1) == []  # Trying: retransmission absorbed silently
    events = layer.respond(txn, make_response(bye, 200), 0.2)
    assert [type(e) for e in events] == [Transmit, Terminated]  # Timer J = 0 on TCP


@pytest.mark.parametrize(("wait_tick", "end"), [(0.0, 32.1), (1.0, 33.0)])
def test_non_invite_server_unreliable_resends_final_until_timer_j(wait_tick: float,
                                                                  end: float) -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5, wait_tick=wait_tick))
    bye = request("BYE", to_tag="x")
    txn, _ = layer.create_server(bye, SRC, False, 0.0)
    layer.respond(txn, make_response(bye, 200), 0.1)
    assert parse_response(sent(layer.absorb(txn, bye, 1.0))[0]).status == 200
    assert layer.respond(txn, make_response(bye, 500), 1.1) == []  # discarded in Completed
    # Timer J (64*T1), later on the next whole second: the 200 is still resent until then.
    assert parse_response(sent(layer.absorb(txn, bye, end - 0.001))[0]).status == 200
    assert [type(e) for e in layer.handle_timer(end)] == [Terminated]


def test_cancel_matches_the_invite_it_cancels() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    txn, _ = layer.create_server(inv, SRC, False, 0.0)
    cancel = request("CANCEL")
    assert layer.find_server(cancel) is None  # CANCEL is its own transaction (§9.2)
    assert layer.find_cancelled(cancel) is txn
    other = request("CANCEL", branch="z9hG4bKdifferent")
    assert layer.find_cancelled(other) is None


def test_sent_by_is_part_of_the_key() -> None:
    layer = TransactionLayer()
    layer.create_server(request("INVITE"), SRC, False, 0.0)
    assert layer.find_server(request("INVITE", via_port=5070)) is None
    assert layer.find_server(request("INVITE", via_host="10.9.9.9")) is None


def test_rfc2543_fallback_matching_without_magic_cookie() -> None:
    layer = TransactionLayer()
    inv = request("INVITE", branch="")
    txn, _ = layer.create_server(inv, SRC, False, 0.0)
    assert server_key(inv)[0] == "2543"
    assert layer.find_server(request("INVITE", branch="")) is txn
    assert layer.find_server(request("INVITE", branch="", cseq=2)) is None
    layer.respond(txn, make_response(inv, 486, to_tag="t486"), 0.1)
    # The ACK must carry the To tag of the response the transaction sent.
    assert layer.find_server(request("ACK", branch="", to_tag="t486")) is txn
    assert layer.find_server(request("ACK", branch="", to_tag="other")) is None
    assert layer.find_cancelled(request("CANCEL", branch="")) is txn
    # An old-style branch without the cookie is treated the same way.
    old = request("INVITE", branch="1234", call_id="call-2")
    txn2, _ = layer.create_server(old, SRC, False, 0.0)
    assert layer.find_server(request("INVITE", branch="1234", call_id="call-2")) is txn2


@pytest.mark.parametrize("table", [INVITE_CLIENT, NON_INVITE_CLIENT, INVITE_SERVER,
                                   NON_INVITE_SERVER])
def test_every_transition_names_its_rfc_section(table: dict[Any, Any]) -> None:
    for (_state, _event), (_next, _effects, section) in table.items():
        assert section.startswith("§17.") or section.startswith("RFC 6026")
    # Terminated is final: no row leaves it.
    assert all(state is not State.TERMINATED for state, _ in table)
