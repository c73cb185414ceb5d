"""The four transaction automata of RFC 3261 §17 as explicit transition tables.

Theory of operation (h11 `_state.py` style): every state change of every transaction lives
in this file.  A table maps `(state, event)` to `(next state, effects, RFC section)`.  The
transaction objects in `transaction.py` only classify what happened into an `Event`, look
the pair up and carry out the effects in order; a pair that is absent from a table is
absorbed (dropped) without any effect - those drops are listed as explicit rows where the
RFC says so, so reading a table tells the whole behaviour.

Events come from three sides: the network (responses for client transactions, requests and
ACKs for server transactions), the transaction user (responses to send), and timers.  The
machines do not know which transport they run on: Timers D, I, J and K last zero seconds on
reliable transports (Table 4) and Timers A, E and G are simply never armed there
(§17.1.1.2, §17.1.2.2, §17.2.1), which is decided when a timer is started.

INVITE client transactions follow RFC 3261 (a 2xx terminates the transaction and further
2xx retransmissions are forwarded statelessly by the proxy core, §16.7 / §17.1.1.2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shared.transaction.timers import Timer


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"  # RFC 6026 §7.1 (INVITE server transactions)
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"

    # Members are singletons compared by identity: hash them by identity too (C level),
    # not by Enum's Python-level hash of the name - they key the hot timer and table dicts.
    __hash__ = object.__hash__


class Event(enum.Enum):
    # from the network
    RESPONSE_1XX = "1xx"
    RESPONSE_2XX = "2xx"
    RESPONSE_FINAL = "300-699"
    REQUEST = "request retransmission"
    ACK = "ACK"
    # from the transaction user
    TU_1XX = "TU 1xx"
    TU_2XX = "TU 2xx"
    TU_FINAL = "TU 300-699"
    # from the transport layer
    TRANSPORT_ERROR = "transport error"
    # timers
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"

    # Members are singletons compared by identity: hash them by identity too (C level),
    # not by Enum's Python-level hash of the name - they key the hot timer and table dicts.
    __hash__ = object.__hash__


TIMER_EVENT: dict[Timer, Event] = {
    Timer.A: Event.TIMER_A,
    Timer.B: Event.TIMER_B,
    Timer.D: Event.TIMER_D,
    Timer.E: Event.TIMER_E,
    Timer.F: Event.TIMER_F,
    Timer.G: Event.TIMER_G,
    Timer.H: Event.TIMER_H,
    Timer.I: Event.TIMER_I,
    Timer.J: Event.TIMER_J,
    Timer.K: Event.TIMER_K,
    Timer.L: Event.TIMER_L,
}


class Effect(enum.Enum):
    """What a transition does, carried out in the order listed."""

    PASS_TO_TU = "pass the response up"
    TIMEOUT_TO_TU = "inform the TU of a timeout"
    ERROR_TO_TU = "inform the TU of a transport error"
    RETRANSMIT = "send the stored request or last response again"
    SEND_ACK = "send the hop-by-hop ACK for a non-2xx final response"
    SEND = "send the TU's response and remember it"
    BACKOFF = "re-arm the retransmit timer with a doubled interval"
    BACKOFF_CAPPED = "re-arm the retransmit timer with a doubled interval capped at T2"
    AT_T2 = "re-arm the retransmit timer at T2"

    # Members are singletons compared by identity: hash them by identity too (C level),
    # not by Enum's Python-level hash of the name - they key the hot timer and table dicts.
    __hash__ = object.__hash__


@dataclass(frozen=True, slots=True)
class Start:
    timer: Timer


@dataclass(frozen=True, slots=True)
class Stop:
    timer: Timer


Action = Effect | Start | Stop
Row = tuple[State, tuple[Action, ...], str]
Table = dict[tuple[State, Event], Row]

S = State
E = Event
_ = Effect

# ---------------------------------------------------------------------------------------------
# INVITE client transaction, RFC 3261 §17.1.1, Figure 5.  Entered in Calling with Timers A
# (unreliable only) and B armed when the INVITE is sent.
INVITE_CLIENT: Table = {
    (S.CALLING, E.TIMER_A): (S.CALLING, (_.RETRANSMIT, _.BACKOFF), "§17.1.1.2 Timer A"),
    (S.CALLING, E.TIMER_B): (S.TERMINATED, (_.TIMEOUT_TO_TU,), "§17.1.1.2 Timer B"),
    (S.CALLING, E.RESPONSE_1XX): (
        S.PROCEEDING, (Stop(Timer.A), Stop(Timer.B), _.PASS_TO_TU), "§17.1.1.2 1xx"),
    (S.CALLING, E.RESPONSE_2XX): (S.TERMINATED, (_.PASS_TO_TU,), "§17.1.1.2 2xx"),
    (S.CALLING, E.RESPONSE_FINAL): (
        S.COMPLETED, (_.SEND_ACK, _.PASS_TO_TU, Start(Timer.D)), "§17.1.1.2 300-699"),
    (S.CALLING, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.1.1.2"),
    (S.PROCEEDING, E.RESPONSE_1XX): (S.PROCEEDING, (_.PASS_TO_TU,), "§17.1.1.2 1xx"),
    (S.PROCEEDING, E.RESPONSE_2XX): (S.TERMINATED, (_.PASS_TO_TU,), "§17.1.1.2 2xx"),
    (S.PROCEEDING, E.RESPONSE_FINAL): (
        S.COMPLETED, (_.SEND_ACK, _.PASS_TO_TU, Start(Timer.D)), "§17.1.1.2 300-699"),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.1.1.2"),
    # Retransmitted final responses get the ACK again but are not passed up.
    (S.COMPLETED, E.RESPONSE_FINAL): (S.COMPLETED, (_.SEND_ACK,), "§17.1.1.2 retransmission"),
    (S.COMPLETED, E.RESPONSE_1XX): (S.COMPLETED, (), "§17.1.1.2 absorbed"),
    (S.COMPLETED, E.RESPONSE_2XX): (S.COMPLETED, (), "§17.1.1.2 absorbed"),
    (S.COMPLETED, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.1.1.2"),
    (S.COMPLETED, E.TIMER_D): (S.TERMINATED, (), "§17.1.1.2 Timer D"),
}

# ---------------------------------------------------------------------------------------------
# Non-INVITE client transaction, RFC 3261 §17.1.2, Figure 6.  Entered in Trying with Timers
# E (unreliable only) and F armed.
NON_INVITE_CLIENT: Table = {
    (S.TRYING, E.TIMER_E): (S.TRYING, (_.RETRANSMIT, _.BACKOFF_CAPPED), "§17.1.2.2 Timer E"),
    (S.TRYING, E.TIMER_F): (S.TERMINATED, (_.TIMEOUT_TO_TU,), "§17.1.2.2 Timer F"),
    (S.TRYING, E.RESPONSE_1XX): (S.PROCEEDING, (_.PASS_TO_TU,), "§17.1.2.2 1xx"),
    (S.TRYING, E.RESPONSE_2XX): (
        S.COMPLETED, (Stop(Timer.E), Stop(Timer.F), _.PASS_TO_TU, Start(Timer.K)),
        "§17.1.2.2 200-699"),
    (S.TRYING, E.RESPONSE_FINAL): (
        S.COMPLETED, (Stop(Timer.E), Stop(Timer.F), _.PASS_TO_TU, Start(Timer.K)),
        "§17.1.2.2 200-699"),
    (S.TRYING, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.1.2.2"),
    # In Proceeding Timer E keeps firing, every T2.
    (S.PROCEEDING, E.TIMER_E): (S.PROCEEDING, (_.RETRANSMIT, _.AT_T2), "§17.1.2.2 Timer E"),
    (S.PROCEEDING, E.TIMER_F): (S.TERMINATED, (_.TIMEOUT_TO_TU,), "§17.1.2.2 Timer F"),
    (S.PROCEEDING, E.RESPONSE_1XX): (S.PROCEEDING, (_.PASS_TO_TU,), "§17.1.2.2 1xx"),
    (S.PROCEEDING, E.RESPONSE_2XX): (
        S.COMPLETED, (Stop(Timer.E), Stop(Timer.F), _.PASS_TO_TU, Start(Timer.K)),
        "§17.1.2.2 200-699"),
    (S.PROCEEDING, E.RESPONSE_FINAL): (
        S.COMPLETED, (Stop(Timer.E), Stop(Timer.F), _.PASS_TO_TU, Start(Timer.K)),
        "§17.1.2.2 200-699"),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.1.2.2"),
    # Completed buffers response retransmissions for Timer K.
    (S.COMPLETED, E.RESPONSE_1XX): (S.COMPLETED, (), "§17.1.2.2 absorbed"),
    (S.COMPLETED, E.RESPONSE_2XX): (S.COMPLETED, (), "§17.1.2.2 absorbed"),
    (S.COMPLETED, E.RESPONSE_FINAL): (S.COMPLETED, (), "§17.1.2.2 absorbed"),
    (S.COMPLETED, E.TIMER_K): (S.TERMINATED, (), "§17.1.2.2 Timer K"),
}

# ---------------------------------------------------------------------------------------------
# INVITE server transaction, RFC 3261 §17.2.1, Figure 7, with the Accepted state of RFC 6026
# §7.1: after a 2xx the transaction lives on for Timer L so that a late retransmission of the
# INVITE is absorbed instead of starting a new transaction (and a new forward), and further
# 2xx from other branches still go out through it.  The ACK for a 2xx is not absorbed there:
# the TU (the proxy core) forwards it end to end.  Entered in Proceeding; the layer sends
# 100 Trying at once (the TU is a proxy and may need longer than 200 ms).
INVITE_SERVER: Table = {
    (S.PROCEEDING, E.REQUEST): (S.PROCEEDING, (_.RETRANSMIT,), "§17.2.1 retransmitted INVITE"),
    (S.PROCEEDING, E.TU_1XX): (S.PROCEEDING, (_.SEND,), "§17.2.1 1xx from TU"),
    (S.PROCEEDING, E.TU_2XX): (
        S.ACCEPTED, (_.SEND, Start(Timer.L)), "§17.2.1 2xx from TU, RFC 6026 §8.5"),
    (S.ACCEPTED, E.REQUEST): (S.ACCEPTED, (), "§17.2.1 absorbed, RFC 6026 §7.1"),
    (S.ACCEPTED, E.TU_2XX): (S.ACCEPTED, (_.SEND,), "§17.2.1 2xx from TU, RFC 6026 §8.6"),
    (S.ACCEPTED, E.TIMER_L): (S.TERMINATED, (), "§17.2.1, RFC 6026 §8.7 Timer L"),
    (S.PROCEEDING, E.TU_FINAL): (
        S.COMPLETED, (_.SEND, Start(Timer.G), Start(Timer.H)), "§17.2.1 300-699 from TU"),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.2.1"),
    (S.COMPLETED, E.REQUEST): (S.COMPLETED, (_.RETRANSMIT,), "§17.2.1 retransmitted INVITE"),
    (S.COMPLETED, E.TIMER_G): (
        S.COMPLETED, (_.RETRANSMIT, _.BACKOFF_CAPPED), "§17.2.1 Timer G"),
    (S.COMPLETED, E.TIMER_H): (S.TERMINATED, (_.TIMEOUT_TO_TU,), "§17.2.1 Timer H"),
    (S.COMPLETED, E.ACK): (
        S.CONFIRMED, (Stop(Timer.G), Stop(Timer.H), Start(Timer.I)), "§17.2.1 ACK"),
    (S.COMPLETED, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.2.1"),
    # A late response from the TU after the final one is never sent twice.
    (S.COMPLETED, E.TU_1XX): (S.COMPLETED, (), "§17.2.1 absorbed"),
    (S.COMPLETED, E.TU_FINAL): (S.COMPLETED, (), "§17.2.1 absorbed"),
    (S.CONFIRMED, E.ACK): (S.CONFIRMED, (), "§17.2.1 ACK retransmission absorbed"),
    (S.CONFIRMED, E.REQUEST): (S.CONFIRMED, (), "§17.2.1 absorbed"),
    (S.CONFIRMED, E.TIMER_I): (S.TERMINATED, (), "§17.2.1 Timer I"),
}

# ---------------------------------------------------------------------------------------------
# Non-INVITE server transaction, RFC 3261 §17.2.2, Figure 8.  Entered in Trying.
NON_INVITE_SERVER: Table = {
    (S.TRYING, E.REQUEST): (S.TRYING, (), "§17.2.2 retransmission absorbed in Trying"),
    (S.TRYING, E.TU_1XX): (S.PROCEEDING, (_.SEND,), "§17.2.2 1xx from TU"),
    (S.TRYING, E.TU_2XX): (S.COMPLETED, (_.SEND, Start(Timer.J)), "§17.2.2 200-699 from TU"),
    (S.TRYING, E.TU_FINAL): (S.COMPLETED, (_.SEND, Start(Timer.J)), "§17.2.2 200-699 from TU"),
    (S.TRYING, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.2.2"),
    (S.PROCEEDING, E.REQUEST): (S.PROCEEDING, (_.RETRANSMIT,), "§17.2.2 resend provisional"),
    (S.PROCEEDING, E.TU_1XX): (S.PROCEEDING, (_.SEND,), "§17.2.2 1xx from TU"),
    (S.PROCEEDING, E.TU_2XX): (
        S.COMPLETED, (_.SEND, Start(Timer.J)), "§17.2.2 200-699 from TU"),
    (S.PROCEEDING, E.TU_FINAL): (
        S.COMPLETED, (_.SEND, Start(Timer.J)), "§17.2.2 200-699 from TU"),
    (S.PROCEEDING, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.2.2"),
    (S.COMPLETED, E.REQUEST): (S.COMPLETED, (_.RETRANSMIT,), "§17.2.2 resend final"),
    (S.COMPLETED, E.TU_1XX): (S.COMPLETED, (), "§17.2.2 discarded"),
    (S.COMPLETED, E.TU_2XX): (S.COMPLETED, (), "§17.2.2 discarded"),
    (S.COMPLETED, E.TU_FINAL): (S.COMPLETED, (), "§17.2.2 discarded"),
    (S.COMPLETED, E.TRANSPORT_ERROR): (S.TERMINATED, (_.ERROR_TO_TU,), "§17.2.2"),
    (S.COMPLETED, E.TIMER_J): (S.TERMINATED, (), "§17.2.2 Timer J"),
}

del S, E, _
