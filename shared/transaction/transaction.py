"""Client and server transactions: the interpreter of the tables in `machine.py`.

A transaction classifies what happened into a `machine.Event`, looks up its table and carries
out the effects.  It owns the bytes it may have to send again (the request for a client
transaction, the last response for a server transaction) so retransmissions never serialize
twice.  Timers are deadlines on the caller's clock.  A transaction never reaches into the
layer: besides the events for the TU (`out`) it returns its timer actions (`acts`: `Arm` a
timer at a deadline, count a retransmission, report that it terminated), and the layer, which
keeps the timer wheel of deadlines and the tables of transactions, carries them out (see
`layer.py`).  A zero-length timer (Timers D, I, J, K on reliable transports) fires inside the
same call.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, NamedTuple

from shared.transaction import machine
from shared.transaction.events import (
    ResponseReceived,
    TimedOut,
    Transmit,
    TransportFailed,
)
from shared.transaction.machine import Effect, Event, Start, State, Stop
from shared.transaction.timers import WAIT_TIMERS, Timer, TimerSettings

if TYPE_CHECKING:
    from shared.sip import Request, Response
    from shared.transaction.events import TransactionEvent
    from shared.transaction.key import ClientKey, ServerKey


class Arm(NamedTuple):
    """Timer action: `timer` of this transaction fires at `deadline` (caller's clock)."""

    timer: Timer
    deadline: float


# Arm is built per timer start; its generated __new__ is an interpreted lambda (compiled or
# not): tuple.__new__ builds the same tuple.
_new_tuple = tuple.__new__


class Note(enum.Enum):
    """Timer actions that carry no data."""

    RETRANSMITTED = "retransmitted"  # one more retransmission, for the layer's counter
    TERMINATED = "terminated"  # reached Terminated (§17.1.1.2, §17.2.1): forget it

    __hash__ = object.__hash__


Action = Arm | Note


def response_event(status: int) -> Event:
    if status < 200:
        return Event.RESPONSE_1XX
    if status < 300:
        return Event.RESPONSE_2XX
    return Event.RESPONSE_FINAL


def tu_event(status: int) -> Event:
    if status < 200:
        return Event.TU_1XX
    if status < 300:
        return Event.TU_2XX
    return Event.TU_FINAL


class _Transaction:
    __slots__ = (
        "destination", "intervals", "is_invite", "key", "owner", "reliable",
        "settings", "state", "table", "timers",
    )

    def __init__(
        self,
        settings: TimerSettings,
        request: Request,
        destination: Any,
        reliable: bool,
        table: machine.Table,
        state: State,
    ) -> None:
        self.settings = settings
        self.destination = destination
        self.reliable = reliable
        self.table = table
        self.state = state
        self.is_invite = request.method == "INVITE"
        self.timers: dict[Timer, float] = {}  # armed timer -> deadline
        self.intervals: dict[Timer, float] = {}  # current retransmit interval (A, E, G)
        self.owner: Any = None  # the TU's object (a proxy branch, a response context)
        self.key: Any = None

    # -- timers -----------------------------------------------------------------------------
    def _start(self, timer: Timer, now: float, acts: list[Action]) -> bool:
        """Arm `timer`; return True when it is zero-length and must fire at once."""
        settings = self.settings
        if timer in (Timer.A, Timer.E, Timer.G) and self.reliable:
            return False  # retransmissions are for unreliable transports only
        duration = settings.initial(timer, self.reliable)
        if duration <= 0:
            return True
        deadline = now + duration
        if timer is Timer.A or timer is Timer.E or timer is Timer.G:
            # Only the retransmission timers back off from their last interval; the others
            # (B, D, F, H, J, K, L) leave the dict empty: no keys table per transaction.
            self.intervals[timer] = duration
        elif timer in WAIT_TIMERS:
            deadline = settings.wait_deadline(deadline)  # may end later: see WAIT_TIMERS
        self.timers[timer] = deadline
        acts.append(_new_tuple(Arm, (timer, deadline)))
        return False

    def _rearm(self, timer: Timer, interval: float, now: float, acts: list[Action]) -> None:
        self.intervals[timer] = interval
        self.timers[timer] = now + interval
        acts.append(_new_tuple(Arm, (timer, now + interval)))

    # -- the interpreter --------------------------------------------------------------------
    def fire(
        self,
        event: Event,
        now: float,
        out: list[TransactionEvent],
        acts: list[Action],
        message: Response | None = None,
        timer: Timer | None = None,
    ) -> bool:
        """Apply `event`; return False when the table absorbs it without a row.

        Events for the TU go to `out`, timer actions for the layer to `acts`."""
        row = self.table.get((self.state, event))
        if row is None:
            return False
        next_state, actions, _section = row
        self.state = next_state
        immediate: list[Timer] = []
        for action in actions:
            if isinstance(action, Start):
                if self._start(action.timer, now, acts):
                    immediate.append(action.timer)
            elif isinstance(action, Stop):
                self.timers.pop(action.timer, None)
            else:
                self._effect(action, now, out, acts, message, timer)
        if next_state is State.TERMINATED:
            self.timers.clear()
            acts.append(Note.TERMINATED)
            return True
        for t in immediate:
            self.fire(machine.TIMER_EVENT[t], now, out, acts, timer=t)
        return True

    def _effect(
        self,
        effect: Effect,
        now: float,
        out: list[TransactionEvent],
        acts: list[Action],
        message: Response | None,
        timer: Timer | None,
    ) -> None:
        raise NotImplementedError


class ClientTransaction(_Transaction):
    """RFC 3261 §17.1: sends one request and passes responses up to the TU."""

    __slots__ = ("ack_data", "data", "last_status", "request")

    def __init__(
        self,
        settings: TimerSettings,
        request: Request,
        data: bytes,
        destination: Any,
        reliable: bool,
        key: ClientKey,
    ) -> None:
        invite = request.method == "INVITE"
        super().__init__(
            settings, request, destination, reliable,
            machine.INVITE_CLIENT if invite else machine.NON_INVITE_CLIENT,
            State.CALLING if invite else State.TRYING,
        )
        # Until the final response: what the ACK of a non-2xx is built from (§17.1.1.3)
        # and what a CANCEL copies (§9.1); None afterwards (see `_effect`).
        self.request: Request | None = request
        self.key = key
        self.data = data
        self.ack_data: bytes | None = None
        self.last_status = 0

    def begin(self, now: float, out: list[TransactionEvent], acts: list[Action]) -> None:
        """Send the request and arm the initial timers (§17.1.1.2, §17.1.2.2)."""
        out.append(Transmit(self.data, self.destination, False, self))
        if self.is_invite:
            self._start(Timer.A, now, acts)
            self._start(Timer.B, now, acts)
        else:
            self._start(Timer.E, now, acts)
            self._start(Timer.F, now, acts)

    def receive(self, response: Response, now: float, out: list[TransactionEvent],
                acts: list[Action]) -> None:
        self.fire(response_event(response.status), now, out, acts, response)

    def _effect(
        self,
        effect: Effect,
        now: float,
        out: list[TransactionEvent],
        acts: list[Action],
        message: Response | None,
        timer: Timer | None,
    ) -> None:
        if effect is Effect.PASS_TO_TU:
            assert message is not None
            self.last_status = message.status
            if message.status >= 200:
                # Final: nothing is sent from the request again (its ACK, if any, is built
                # by SEND_ACK before this effect, §17.1.1.3), and a finished transaction
                # waits out Timer D or K (up to 32 s): the parsed request and its bytes go
                # now rather than then (fewer objects for the collector to walk).
                self.request = None
                self.data = b""
            out.append(ResponseReceived(self, message))
        elif effect is Effect.RETRANSMIT:
            acts.append(Note.RETRANSMITTED)
            out.append(Transmit(self.data, self.destination, True, self))
        elif effect is Effect.BACKOFF or effect is Effect.BACKOFF_CAPPED:
            assert timer is not None
            interval = self.settings.backoff(
                timer, self.intervals[timer], capped=effect is Effect.BACKOFF_CAPPED)
            self._rearm(timer, interval, now, acts)
        elif effect is Effect.AT_T2:
            assert timer is not None
            self._rearm(timer, self.settings.t2, now, acts)
        elif effect is Effect.SEND_ACK:
            assert message is not None
            if self.ack_data is None:
                assert self.request is not None  # SEND_ACK precedes PASS_TO_TU in each row
                self.ack_data = build_ack(self.request, message)
            else:
                acts.append(Note.RETRANSMITTED)
            out.append(Transmit(self.ack_data, self.destination, False, self))
        elif effect is Effect.TIMEOUT_TO_TU:
            out.append(TimedOut(self))
        elif effect is Effect.ERROR_TO_TU:
            out.append(TransportFailed(self))


class RequestSummary(NamedTuple):
    """What a server transaction that sent its final response still needs of its request
    (the CANCEL and RFC 2543 ACK matching of `TransactionLayer`, the logs)."""

    method: str
    call_id: str
    to_tag: str | None


class ServerTransaction(_Transaction):
    """RFC 3261 §17.2: absorbs request retransmissions and sends the TU's responses.

    Once a transaction has sent its final response it only resends those bytes (or, an
    INVITE, absorbs its retransmissions and ACK) until Timer J, H or L (32 s on UDP), so the
    parsed request is swapped for a `RequestSummary`: under load tens of thousands of
    transactions wait out those timers, and each parsed request is dozens of objects the
    cyclic garbage collector would keep scanning (measured on a loaded edge: full
    collections of ~280 ms, long enough for clients to retransmit).
    """

    __slots__ = ("_pending_data", "last_data", "request", "response_to_tag")

    def __init__(
        self,
        settings: TimerSettings,
        request: Request,
        destination: Any,
        reliable: bool,
        key: ServerKey,
    ) -> None:
        invite = request.method == "INVITE"
        super().__init__(
            settings, request, destination, reliable,
            machine.INVITE_SERVER if invite else machine.NON_INVITE_SERVER,
            State.PROCEEDING if invite else State.TRYING,
        )
        self.request: Request | RequestSummary = request
        self.key = key
        self.last_data: bytes | None = None  # what a retransmitted request gets again
        self.response_to_tag: str | None = None
        self._pending_data: bytes | None = None

    def respond(
        self, response: Response, now: float, out: list[TransactionEvent],
        acts: list[Action], data: bytes | None = None,
    ) -> bool:
        """The TU sends `response` through this transaction; False when it was discarded."""
        self._pending_data = data  # pre-serialized by the caller, saves a serialize()
        return self.fire(tu_event(response.status), now, out, acts, response)

    def _effect(
        self,
        effect: Effect,
        now: float,
        out: list[TransactionEvent],
        acts: list[Action],
        message: Response | None,
        timer: Timer | None,
    ) -> None:
        if effect is Effect.SEND:
            assert message is not None
            data, self._pending_data = self._pending_data, None
            self.last_data = data if data is not None else message.serialize()
            if message.status >= 200:
                self.response_to_tag = message.to_tag
                request = self.request
                if not isinstance(request, RequestSummary):
                    # tuple.__new__: RequestSummary's generated __new__ is interpreted.
                    self.request = _new_tuple(RequestSummary, (request.method,
                                                               request.call_id,
                                                               request.to_tag))
            out.append(Transmit(self.last_data, self.destination, False, self))
        elif effect is Effect.RETRANSMIT:
            if self.last_data is not None:
                acts.append(Note.RETRANSMITTED)
                out.append(Transmit(self.last_data, self.destination, True, self))
        elif effect is Effect.BACKOFF_CAPPED or effect is Effect.BACKOFF:
            assert timer is not None
            interval = self.settings.backoff(
                timer, self.intervals[timer], capped=effect is Effect.BACKOFF_CAPPED)
            self._rearm(timer, interval, now, acts)
        elif effect is Effect.TIMEOUT_TO_TU:
            out.append(TimedOut(self))
        elif effect is Effect.ERROR_TO_TU:
            out.append(TransportFailed(self))


def build_ack(request: Request, response: Response) -> bytes:
    """The hop-by-hop ACK for a non-2xx final response (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From and the CSeq number come from the INVITE, To from the response
    (it carries the tag), a single Via equal to the INVITE's top Via, and the INVITE's Route
    header fields.
    """
    lines = [f"ACK {request.uri} SIP/2.0", f"Via: {request.top_via}"]
    lines.extend(f"Route: {route}" for route in request.get_all("Route"))
    lines.append("Max-Forwards: 70")
    lines.append(f"From: {request.get('From')}")
    lines.append(f"To: {response.get('To')}")
    lines.append(f"Call-ID: {request.call_id}")
    lines.append(f"CSeq: {request.cseq.number} ACK")
    lines.append("Content-Length: 0")
    # Header text holds the bytes received (decoded with surrogateescape): encode it back.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
