"""The state table itself: OpenSIPS's states and the RFC 3261 rules beside each row."""

from __future__ import annotations

import pytest

from services.dialog.states import TABLE, Effect, Event, State, transition


def test_states_have_opensips_numbers() -> None:
    assert [int(s) for s in State] == [1, 2, 3, 4, 5]


def test_deleted_is_terminal() -> None:
    for event in Event:
        assert transition(State.DELETED, event) is None
    assert not any(next_state is not State.DELETED and (state is State.DELETED)
                   for (state, _e), (next_state, _f, _r) in TABLE.items())


def test_every_row_names_its_rule() -> None:
    for row in TABLE.values():
        assert row[2].strip()


@pytest.mark.parametrize(("state", "event", "expected"), [
    (State.UNCONFIRMED, Event.RPL_1XX, State.EARLY),
    (State.UNCONFIRMED, Event.RPL_2XX, State.CONFIRMED_NA),
    (State.EARLY, Event.RPL_FAIL, State.DELETED),
    (State.CONFIRMED_NA, Event.REQ_ACK, State.CONFIRMED),
    (State.CONFIRMED, Event.REQ_BYE, State.DELETED),
    (State.CONFIRMED, Event.TIMEOUT, State.DELETED),
    (State.EARLY, Event.REQ_BYE, State.EARLY),
])
def test_transitions(state: State, event: Event, expected: State) -> None:
    row = transition(state, event)
    assert row is not None and row[0] is expected


def test_ack_before_2xx_and_late_1xx_change_nothing() -> None:
    assert transition(State.EARLY, Event.REQ_ACK) is None
    assert transition(State.CONFIRMED, Event.RPL_1XX) is None


def test_end_of_a_confirmed_dialog_sends_bye_and_writes_the_cdr() -> None:
    row = transition(State.CONFIRMED, Event.END)
    assert row is not None and row[1] == (Effect.SEND_BYE, Effect.CDR)
    early = transition(State.EARLY, Event.END)
    assert early is not None and early[1] == (Effect.SEND_CANCEL,) and early[0] is State.EARLY
