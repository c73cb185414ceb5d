"""The transaction layer: matching, creation and the timer wheel of deadlines.

Sans-IO (aioquic style): every entry point takes `now` and returns a list of events
(`events.py`).  The adapter executes the `Transmit` events, hands the others to the
transaction user, and re-arms one real timer at `next_deadline()`; when it fires it calls
`handle_timer(now)`.

Matching (`key.py`): responses find client transactions by (branch, CSeq method)
(§17.1.3); requests find server transactions by (branch, sent-by, method) with ACK folded
onto INVITE, or by the RFC 2543 field set when the branch lacks the magic cookie (§17.2.3).
For RFC 2543 keys the To tag is compared here as well: an ACK must carry the tag of the
final response the transaction sent, any other request the tag of the original request.

Transactions never call back into the layer: each call hands them a list for their timer
actions (`transaction.Arm`, `Note`), which `_apply` then carries out here (push a deadline,
count a retransmission, forget a terminated transaction).

Deadlines sit in a timer wheel with lazy deletion: a bucket per `tick` (10 ms, the edge's
wake-up granularity) holds its entries in a plain list, and a small heap orders the
buckets' numbers.  Stopping a timer only forgets it in the transaction; an entry that no
longer equals the transaction's deadline is stale and is dropped when its bucket is
looked at (the earliest bucket, by `next_deadline`) or fired (`handle_timer`).  So arming
a timer is an append, not a push into a heap of every timer of 32 s of transactions, and
`next_deadline` is one dictionary lookup while the earliest armed timer stays armed: the
edge asks it after every message.  `handle_timer(now)` still fires every timer whose
deadline is not after `now`, in (deadline, arming order), as the single heap did.

The wait timers (`timers.WAIT_TIMERS`: D, I, J, K, L) are not in the wheel: their deadlines
fall on multiples of `TimerSettings.wait_tick` (1 s), so all the transactions that end in
one second share one deadline, kept in one list per deadline in arming order (a small heap
orders the deadlines).  A wait timer is its transaction's last and is not stopped, so
`next_deadline` needs no filtering of them (an entry of a transaction ended otherwise is
skipped when its list fires).  In the wheel, such a bucket would hold ~900 entries at 300
calls/s, which `_find_next` filtered or sorted again whenever it had done so for another
bucket since: measured under sipp, 11% more of the worker's CPU per call than exact
deadlines, where the lists cost 3% less.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from shared.sip import make_response
from shared.transaction import machine
from shared.transaction.events import Terminated, TransactionEvent
from shared.transaction.key import (
    client_key,
    client_key_of_response,
    is_rfc3261_branch,
    server_key,
)
from shared.transaction.machine import Event
from shared.transaction.timers import WAIT_TIMERS, Timer, TimerSettings
from shared.transaction.transaction import Action, Arm, ClientTransaction, Note, ServerTransaction

if TYPE_CHECKING:
    from shared.sip import Request, Response
    from shared.transaction.key import ServerKey
    from shared.transaction.transaction import _Transaction


class TransactionLayer:
    """All client and server transactions of one proxy (or user agent) process."""

    def __init__(self, settings: TimerSettings | None = None, tick: float = 0.01) -> None:
        if not tick > 0:
            raise ValueError("tick must be positive")
        self.settings = settings or TimerSettings()
        self.clients: dict[tuple[str, str], ClientTransaction] = {}
        self.servers: dict[tuple[str, ...], ServerTransaction] = {}
        # The timer wheel: bucket number -> its entries (deadline, arming order, txn,
        # timer), unordered; `_ticks` is a heap of the bucket numbers in `_wheel`.
        self._tick = tick
        self._wheel: dict[int, list[tuple[float, int, _Transaction, Timer]]] = {}
        self._ticks: list[int] = []
        self._seq = 0
        self._sorted: int | None = None  # the bucket kept in (deadline, arming) order
        self._visited: int | None = None  # the bucket _find_next has filtered once
        # The earliest armed entry as last found (None: not known): next_deadline's answer
        # while that timer stays armed; an earlier arming replaces it.
        self._next: tuple[float, int, _Transaction, Timer] | None = None
        # The wait timers: deadline -> its entries in arming order; `_ends`: a heap of
        # those deadlines.
        self._waits: dict[float, list[tuple[float, int, _Transaction, Timer]]] = {}
        self._ends: list[float] = []
        self.retransmissions = 0  # counters read by the metrics exporter
        self.absorbed = 0

    # -- server side (§17.2) ----------------------------------------------------------------
    def find_server(self, request: Request,
                    key: ServerKey | None = None) -> ServerTransaction | None:
        """The server transaction a request (or its ACK) belongs to, if any (`key`: its
        `server_key`, when the caller has it already)."""
        txn = self.servers.get(key if key is not None else server_key(request))
        if txn is None or is_rfc3261_branch(request.top_via.branch):
            return txn
        # RFC 2543 peer: the To tag has to agree as well (§17.2.3).
        if request.method == "ACK":
            expected = txn.response_to_tag
        else:
            expected = txn.request.to_tag
        return txn if request.to_tag == expected else None

    def find_cancelled(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2)."""
        txn = self.servers.get(server_key(cancel, "INVITE"))
        if txn is None or txn.request.method != "INVITE":
            return None
        if not is_rfc3261_branch(cancel.top_via.branch) and cancel.to_tag != txn.request.to_tag:
            return None
        return txn

    def absorb(
        self, txn: ServerTransaction, request: Request, now: float
    ) -> list[TransactionEvent]:
        """A retransmission or an ACK matched `txn` (§17.2.1, §17.2.2)."""
        out: list[TransactionEvent] = []
        acts: list[Action] = []
        self.absorbed += 1
        event = Event.ACK if request.method == "ACK" else Event.REQUEST
        txn.fire(event, now, out, acts)
        self._apply(txn, acts, out)
        return out

    def create_server(
        self,
        request: Request,
        destination: Any,
        reliable: bool,
        now: float,
        *,
        send_trying: bool = True,
    ) -> tuple[ServerTransaction, list[TransactionEvent]]:
        """A new server transaction for `request` (never an ACK).

        For INVITE the 100 Trying goes out at once (§17.2.1: a proxy cannot promise a
        response within 200 ms).
        """
        key = server_key(request)
        txn = ServerTransaction(self.settings, request, destination, reliable, key)
        self.servers[key] = txn
        out: list[TransactionEvent] = []
        if send_trying and txn.is_invite:
            acts: list[Action] = []
            txn.respond(make_response(request, 100), now, out, acts)
            self._apply(txn, acts, out)
        return txn, out

    def respond(
        self, txn: ServerTransaction, response: Response, now: float, data: bytes | None = None
    ) -> list[TransactionEvent]:
        """The TU sends a response through its server transaction."""
        out: list[TransactionEvent] = []
        acts: list[Action] = []
        txn.respond(response, now, out, acts, data)
        self._apply(txn, acts, out)
        return out

    # -- client side (§17.1) ----------------------------------------------------------------
    def create_client(
        self,
        request: Request,
        data: bytes,
        destination: Any,
        reliable: bool,
        now: float,
        owner: Any = None,
    ) -> tuple[ClientTransaction, list[TransactionEvent]]:
        """Start a client transaction that sends `data` (the serialized `request`)."""
        key = client_key(request.top_via.branch or "", request.method)
        txn = ClientTransaction(self.settings, request, data, destination, reliable, key)
        txn.owner = owner
        self.clients[key] = txn
        out: list[TransactionEvent] = []
        acts: list[Action] = []
        txn.begin(now, out, acts)
        self._apply(txn, acts, out)
        return txn, out

    def receive_response(self, response: Response, now: float) -> list[TransactionEvent] | None:
        """Feed a response; None when no client transaction matches (§17.1.3)."""
        key = client_key_of_response(response)
        txn = self.clients.get(key) if key is not None else None
        if txn is None:
            return None
        out: list[TransactionEvent] = []
        acts: list[Action] = []
        txn.receive(response, now, out, acts)
        self._apply(txn, acts, out)
        if not out:
            self.absorbed += 1
        return out

    # -- failures and timers ------------------------------------------------------------------
    def transport_error(
        self, txn: ClientTransaction | ServerTransaction, now: float
    ) -> list[TransactionEvent]:
        """The transport could not send for `txn` (§17.1.4, §17.2.4)."""
        out: list[TransactionEvent] = []
        acts: list[Action] = []
        txn.fire(Event.TRANSPORT_ERROR, now, out, acts)
        self._apply(txn, acts, out)
        return out

    def next_deadline(self) -> float | None:
        """Earliest armed deadline (None: no timer armed)."""
        first = self._next
        if first is not None and first[2].timers.get(first[3]) == first[0]:
            deadline: float | None = first[0]
        else:
            deadline = self._find_next()
        ends = self._ends
        if ends and (deadline is None or ends[0] < deadline):
            return ends[0]  # may hold only timers of ended transactions: one idle wake-up
        return deadline

    def _find_next(self) -> float | None:
        # The earliest bucket's earliest armed entry; its stale entries are dropped.  A
        # worker asks once per tick and bucket (one pass); asked again before the bucket
        # fired whole (a caller firing one deadline at a time), the bucket is sorted once
        # and then read from its front.
        ticks = self._ticks
        wheel = self._wheel
        while ticks:
            k = ticks[0]
            if self._sorted != k and self._visited != k:
                self._visited = k
                armed = [e for e in wheel[k] if e[2].timers.get(e[3]) == e[0]]
                if armed:
                    wheel[k] = armed
                    first = min(armed)  # (deadline, arming order): never compares further
                    self._next = first
                    return first[0]
                self._drop_bucket(k)
                continue
            bucket = self._sorted_bucket(k)
            i = 0
            n = len(bucket)
            while i < n:
                e = bucket[i]
                if e[2].timers.get(e[3]) == e[0]:
                    break
                i += 1
            if i < n:
                if i:
                    del bucket[:i]
                first = bucket[0]
                self._next = first
                return first[0]
            self._drop_bucket(k)
        self._next = None
        return None

    def _sorted_bucket(self, k: int) -> list[tuple[float, int, _Transaction, Timer]]:
        bucket = self._wheel[k]
        if self._sorted != k:
            bucket.sort()  # (deadline, arming order): never compares further
            self._sorted = k
        return bucket

    def _drop_bucket(self, k: int) -> None:
        del self._wheel[k]
        heapq.heappop(self._ticks)
        if self._sorted == k:
            self._sorted = None
        if self._visited == k:
            self._visited = None

    def handle_timer(self, now: float) -> list[TransactionEvent]:
        """Fire every timer whose deadline is not after `now` (earliest first; equal
        deadlines in the order they were armed)."""
        out: list[TransactionEvent] = []
        acts: list[Action] = []
        ticks = self._ticks
        wheel = self._wheel
        ends = self._ends
        last = int(now / self._tick)  # the bucket of `now`: earlier buckets are all due
        while (ticks and ticks[0] <= last) or (ends and ends[0] <= now):
            due: list[tuple[float, int, _Transaction, Timer]] = []
            while ends and ends[0] <= now:
                due.extend(self._waits.pop(heapq.heappop(ends)))
            while ticks and ticks[0] <= last:
                k = ticks[0]
                bucket = wheel[k]
                if k == last and self._sorted == k:  # the due ones are a prefix
                    i = 0
                    n = len(bucket)
                    while i < n and bucket[i][0] <= now:
                        i += 1
                    if i < n:
                        if i:
                            due.extend(bucket[:i])
                            del bucket[:i]
                        break
                elif k == last:
                    later: list[tuple[float, int, _Transaction, Timer]] = []
                    ready: list[tuple[float, int, _Transaction, Timer]] = []
                    for e in bucket:
                        if e[0] > now:
                            later.append(e)
                        else:
                            ready.append(e)
                    if later:
                        if ready:
                            due.extend(ready)
                            wheel[k] = later
                        break
                self._drop_bucket(k)
                due.extend(bucket)
            if not due:
                break
            due.sort()  # (deadline, arming order): never compares further
            for deadline, _, txn, timer in due:
                if txn.timers.get(timer) != deadline:
                    continue  # stopped or re-armed since
                del txn.timers[timer]
                txn.fire(machine.TIMER_EVENT[timer], now, out, acts, timer=timer)
                self._apply(txn, acts, out)
                acts.clear()
            # A timer armed by one that fired is due only if its duration is 0 (deadline
            # `now`, after every entry of this pass): the loop fires it next, as a heap would.
        self._next = None
        return out

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)

    # -- the transactions' timer actions --------------------------------------------------------
    def _apply(self, txn: _Transaction, acts: list[Action], out: list[TransactionEvent]) -> None:
        """Carry out what `txn` returned: arm deadlines, count, forget it once terminated."""
        for act in acts:
            if type(act) is Arm:
                self._arm(txn, act.timer, act.deadline)
            elif act is Note.RETRANSMITTED:
                self.retransmissions += 1
            else:
                self._forget(txn, out)

    def _arm(self, txn: _Transaction, timer: Timer, deadline: float) -> None:
        self._seq += 1
        entry = (deadline, self._seq, txn, timer)
        if timer in WAIT_TIMERS and self.settings.wait_tick > 0:  # else: exact, in the wheel
            waiting = self._waits.get(deadline)
            if waiting is None:
                self._waits[deadline] = [entry]
                heapq.heappush(self._ends, deadline)
            else:
                waiting.append(entry)
            return
        k = int(deadline / self._tick)  # monotonic in the deadline: buckets keep the order
        bucket = self._wheel.get(k)
        if bucket is None:
            self._wheel[k] = [entry]
            heapq.heappush(self._ticks, k)
        else:
            if k == self._sorted and deadline < bucket[-1][0]:
                self._sorted = None  # no longer in order
            bucket.append(entry)
        first = self._next
        if first is not None and deadline < first[0]:
            self._next = entry

    def _forget(self, txn: _Transaction, out: list[TransactionEvent]) -> None:
        if isinstance(txn, ClientTransaction):
            if self.clients.get(txn.key) is txn:
                del self.clients[txn.key]
        elif self.servers.get(txn.key) is txn:
            del self.servers[txn.key]
        out.append(Terminated(txn))  # type: ignore[arg-type]
