"""RFC 3261 §17 transactions, sans-IO: client and server, INVITE and non-INVITE.

`TransactionLayer` matches messages to transactions (`key.py`), runs the automata of
`machine.py` and keeps the timers of `timers.py` as deadlines on the caller's clock.
Nothing here touches a socket, a loop or the wall clock: time comes in as `now`.
"""

from shared.transaction.events import (
    ResponseReceived,
    Terminated,
    TimedOut,
    TransactionEvent,
    Transmit,
    TransportFailed,
)
from shared.transaction.key import MAGIC_COOKIE, client_key, sent_by, server_key
from shared.transaction.layer import TransactionLayer
from shared.transaction.machine import Event, State
from shared.transaction.timers import Timer, TimerSettings
from shared.transaction.transaction import ClientTransaction, ServerTransaction, build_ack

__all__ = [
    "MAGIC_COOKIE",
    "ClientTransaction",
    "Event",
    "ResponseReceived",
    "ServerTransaction",
    "State",
    "Terminated",
    "TimedOut",
    "Timer",
    "TimerSettings",
    "TransactionEvent",
    "TransactionLayer",
    "Transmit",
    "TransportFailed",
    "build_ack",
    "client_key",
    "sent_by",
    "server_key",
]
