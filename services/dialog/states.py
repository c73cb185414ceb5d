"""The dialog state machine of OpenSIPS's `dialog` module as one explicit transition table.

Theory of operation (the style of `shared/transaction/machine.py`): every state change of
a dialog lives in `TABLE`, which maps `(state, event)` to `(next state, effects, rule)`.
`services.dialog.table.DialogTable` only classifies what happened into an `Event`, looks
the pair up and carries out the effects; a pair absent from the table changes nothing
(a late or repeated message - the table lists the RFC's explicit cases as rows too).

States are OpenSIPS's numbers (what `dlg_list` and `E_DLG_STATE_CHANGED` show):
1 unconfirmed (INVITE forwarded, no reply with a To tag yet), 2 early (a provisional
reply), 3 confirmed without ACK (a 2xx went upstream), 4 confirmed (the ACK passed),
5 deleted (ended: BYE, a final failure, a timeout, an operator's end).

Events: the replies relayed upstream for the dialog-forming INVITE (1xx above 100, 2xx,
300-699), the in-dialog requests the edge forwarded (ACK, BYE, others), and three of the
service's own: the dialog lifetime ran out (`TIMEOUT`, only on the dialog's owner), an
operator or a billing system ended the call (`END`: `dlg_end_dlg`), and an early dialog
that never got a final reply (`STALE`: the edge that held it went away).
"""

from __future__ import annotations

import enum


class State(enum.IntEnum):
    UNCONFIRMED = 1
    EARLY = 2
    CONFIRMED_NA = 3
    CONFIRMED = 4
    DELETED = 5


class Event(enum.Enum):
    RPL_1XX = "provisional reply (101-199)"
    RPL_2XX = "2xx reply"
    RPL_FAIL = "300-699 reply"
    REQ_ACK = "ACK"
    REQ_BYE = "BYE"
    REQ = "other in-dialog request"
    TIMEOUT = "dialog lifetime over (owner)"
    END = "dlg_end_dlg / billing"
    STALE = "early dialog without a final reply for too long"

    __hash__ = object.__hash__


class Effect(enum.Enum):
    START_LIFETIME = "arm the lifetime timer from the answer ([dialog] default_timeout)"
    SEND_BYE = "BYE to both sides through the edge (t_uac_dlg)"
    SEND_CANCEL = "cancel the pending INVITE at the edge"
    CDR = "write the call's CDR (owner only), raise E_ACC_CDR"
    MISSED = "write the missed call's CDR (owner only), raise E_ACC_MISSED_EVENT"

    __hash__ = object.__hash__


Row = tuple[State, tuple[Effect, ...], str]
S = State
E = Event
_ = Effect

TABLE: dict[tuple[State, Event], Row] = {
    # -- the INVITE's replies ---------------------------------------------------------------
    (S.UNCONFIRMED, E.RPL_1XX): (S.EARLY, (), "RFC 3261 §12.1: a provisional reply "
                                              "creates the early dialog"),
    (S.EARLY, E.RPL_1XX): (S.EARLY, (), "§13.2.2.1 more provisional replies"),
    (S.UNCONFIRMED, E.RPL_2XX): (S.CONFIRMED_NA, (_.START_LIFETIME,),
                                 "§13.2.2.4 / §12.1.2: the 2xx confirms the dialog"),
    (S.EARLY, E.RPL_2XX): (S.CONFIRMED_NA, (_.START_LIFETIME,), "§13.2.2.4"),
    # A 2xx retransmission, or a second 2xx of a forked INVITE (§13.2.2.4): the dialog
    # stays the one of the first 2xx, as OpenSIPS does.
    (S.CONFIRMED_NA, E.RPL_2XX): (S.CONFIRMED_NA, (), "§13.2.2.4 further 2xx"),
    (S.CONFIRMED, E.RPL_2XX): (S.CONFIRMED, (), "§13.2.2.4 further 2xx"),
    (S.UNCONFIRMED, E.RPL_FAIL): (S.DELETED, (_.MISSED,),
                                  "§13.2.2.3: a final failure ends the INVITE (acc missed)"),
    (S.EARLY, E.RPL_FAIL): (S.DELETED, (_.MISSED,), "§13.2.2.3, §12.3 early dialogs end"),
    # -- in-dialog requests ------------------------------------------------------------------
    (S.CONFIRMED_NA, E.REQ_ACK): (S.CONFIRMED, (), "§13.2.2.4 the ACK of the 2xx"),
    (S.CONFIRMED, E.REQ_ACK): (S.CONFIRMED, (), "§13.3.1.4 ACK retransmission / re-INVITE"),
    (S.CONFIRMED_NA, E.REQ_BYE): (S.DELETED, (_.CDR,), "§15.1.2 BYE ends the dialog"),
    (S.CONFIRMED, E.REQ_BYE): (S.DELETED, (_.CDR,), "§15.1.2 BYE ends the dialog"),
    # §15: the caller may send BYE on an early dialog; the callee then answers the INVITE
    # with 487 and that reply ends it. OpenSIPS marks the BYE and waits likewise.
    (S.UNCONFIRMED, E.REQ_BYE): (S.UNCONFIRMED, (), "§15 BYE in an early dialog"),
    (S.EARLY, E.REQ_BYE): (S.EARLY, (), "§15 BYE in an early dialog"),
    (S.EARLY, E.REQ): (S.EARLY, (), "§13.2.2.1 PRACK/UPDATE in an early dialog"),
    (S.CONFIRMED_NA, E.REQ): (S.CONFIRMED_NA, (), "§14 re-INVITE, §12.2 other requests"),
    (S.CONFIRMED, E.REQ): (S.CONFIRMED, (), "§14 re-INVITE, §12.2 other requests"),
    # -- the service's own events -------------------------------------------------------------
    (S.CONFIRMED_NA, E.TIMEOUT): (S.DELETED, (_.SEND_BYE, _.CDR),
                                  "OpenSIPS dialog timeout (create_dialog \"B\")"),
    (S.CONFIRMED, E.TIMEOUT): (S.DELETED, (_.SEND_BYE, _.CDR),
                               "OpenSIPS dialog timeout (create_dialog \"B\")"),
    (S.CONFIRMED_NA, E.END): (S.DELETED, (_.SEND_BYE, _.CDR), "dlg_end_dlg: BYE both ways"),
    (S.CONFIRMED, E.END): (S.DELETED, (_.SEND_BYE, _.CDR), "dlg_end_dlg: BYE both ways"),
    # dlg_end_dlg on an early dialog cancels the INVITE; its 487 then ends the dialog.
    (S.UNCONFIRMED, E.END): (S.UNCONFIRMED, (_.SEND_CANCEL,), "dlg_end_dlg: CANCEL if early"),
    (S.EARLY, E.END): (S.EARLY, (_.SEND_CANCEL,), "dlg_end_dlg: CANCEL if early"),
    (S.UNCONFIRMED, E.STALE): (S.DELETED, (_.MISSED,), "no final reply: Timer C passed"),
    (S.EARLY, E.STALE): (S.DELETED, (_.MISSED,), "no final reply: Timer C passed"),
}

del S, E, _


def transition(state: State, event: Event) -> Row | None:
    """The row for `(state, event)`, None when the event changes nothing in that state
    (every event in DELETED, an ACK before the 2xx, a late provisional reply...)."""
    return TABLE.get((state, event))
