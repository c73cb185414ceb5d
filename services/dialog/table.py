"""The dialog table of one dialog node, sans-IO: events in, effects out, `now` passed in.

Theory of operation. The adapter (`services/dialog/app.py`) feeds the table with what the
edge reports (`create`, `reply`, `in_dialog`), what operators and billing ask (`end`,
`set_extra`, `reserve`), what other nodes replicate (`apply_replica`, `apply_purge`) and
the clock (`on_timer(now_ms)` at `next_deadline()`). Every call returns a list of
effects for the adapter to carry out, in order:

* `Changed(dialog, replicate)` -- store the dialog (and broadcast it to the other nodes when
  the change was made here);
* `StateChanged(dialog, old, new)` -- raise E_DLG_STATE_CHANGED;
* `SendBye(dialog, headers)` / `SendCancel(dialog)` -- ask the edge to end the call;
* `WriteCdr(dialog)` -- write the CDR; the adapter answers `cdr_written(key)` or
  `cdr_failed(key)` (retried a second later);
* `Purged(key, replicate)` -- forget the dialog in the store (and on the other nodes).

State changes follow `services.dialog.states.TABLE`. Only the dialog's owner (the
`owns(dialog)` callable: its sharing tag is active here, or rendezvous hashing picked this
node, see `ownership.py`) fires its lifetime timeout and writes its CDR; the others keep
re-checking each second, so when the owner dies the next one carries on (no timeout is
lost, none fires twice on one view of the cluster).

Profiles (OpenSIPS dialog profiles) are counted from the table itself: a dialog counts in
its profiles while it is not deleted, wherever it was created. A replicated table gives
every node the same counts, and a failover moves no counter: a count can never go below
zero or drift, whichever node dies.

Merges of two copies of one dialog (replication, full sync, a restart) keep the higher
`Dialog.rank()`: an ended dialog is never revived by a late update.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from services.dialog.model import Dialog, Key, ProfileLink, hash_entry
from services.dialog.states import Effect, Event, State, transition

ONGOING = (State.CONFIRMED_NA, State.CONFIRMED)
SETUP = (State.UNCONFIRMED, State.EARLY)


@dataclass(frozen=True)
class TableConfig:
    default_timeout: int = 43200  # s, OpenSIPS default_timeout (12 h)
    early_timeout: int = 300  # s without a final reply: the INVITE's edge is gone
    reserve_timeout: int = 32  # s a profile reservation waits for its INVITE (Timer B)
    cdr_delay_ms: int = 0  # the CDR waits this long after the end (late extras: MOS)
    recheck_ms: int = 1000  # a node that is not the owner looks again this often
    tombstone_ms: int = 60_000  # a purged dialog is not taken back from a late replica


# -- effects ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Changed:
    dialog: Dialog
    replicate: bool = True


@dataclass(slots=True)
class StateChanged:
    dialog: Dialog
    old: State
    new: State


@dataclass(slots=True)
class SendBye:
    dialog: Dialog
    headers: tuple[str, ...] = ()


@dataclass(slots=True)
class SendCancel:
    dialog: Dialog


@dataclass(slots=True)
class WriteCdr:
    dialog: Dialog


@dataclass(slots=True)
class Purged:
    key: Key
    replicate: bool = True


Output = Changed | StateChanged | SendBye | SendCancel | WriteCdr | Purged

# timer kinds
_LIFETIME, _STALE, _RESERVE, _CDR = range(4)


@dataclass
class Stats:
    """OpenSIPS dialog statistics (names as `get_statistics dialog:`)."""

    processed: int = 0
    expired: int = 0
    failed: int = 0
    create_sent: int = 0
    update_sent: int = 0
    delete_sent: int = 0
    create_recv: int = 0
    update_recv: int = 0
    delete_recv: int = 0
    cdrs: int = 0
    unknown_events: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class DialogTable:
    def __init__(self, config: TableConfig | None = None, *, node: int = 0,
                 owns: Callable[[Dialog], bool] = lambda d: True) -> None:
        self.config = config or TableConfig()
        self.node = node
        self.owns = owns
        self.dialogs: dict[Key, Dialog] = {}
        self.by_id: dict[tuple[int, int], Key] = {}
        self.by_callid: dict[str, Key] = {}  # first dialog of a Call-ID (dlg_list callid)
        self.profile_all: dict[str, int] = {}
        self.profile_values: dict[str, dict[str, int]] = {}
        self.tombstones: dict[Key, int] = {}
        self._tomb_order: collections.deque[tuple[int, Key]] = collections.deque()
        self.writing: set[Key] = set()  # CDR writes in flight
        self.stats = Stats()
        self._heap: list[tuple[int, int, Key, int]] = []
        self._seq = itertools.count()
        # Values most dialogs share (the edge's addresses, its socket, profile names...):
        # one copy each instead of one per dialog (memory per dialog, see the README).
        self._shared: dict[Any, Any] = {}

    def _share(self, value: Any) -> Any:
        shared = self._shared
        found = shared.get(value)
        if found is None:
            if len(shared) > 50_000:
                shared.clear()  # bounded: values that stop repeating are not kept forever
            shared[value] = found = value
        return found

    # == queries ===============================================================================
    def __len__(self) -> int:
        return len(self.dialogs)

    def get(self, key: Key) -> Dialog | None:
        return self.dialogs.get(key)

    def find(self, callid: str, from_tag: str | None = None) -> Dialog | None:
        """By Call-ID and the caller's From tag (either tag of the dialog), or the first
        dialog of the Call-ID when no tag is given."""
        if from_tag is None or from_tag == "":
            key = self.by_callid.get(callid)
            return self.dialogs.get(key) if key is not None else None
        return self.dialogs.get((callid, from_tag))

    def find_by_id(self, h_entry: int, h_id: int) -> Dialog | None:
        key = self.by_id.get((h_entry, h_id))
        return self.dialogs.get(key) if key is not None else None

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self.dialogs.values()))

    def counts(self) -> dict[str, int]:
        """active (confirmed), early (1 and 2) dialogs right now."""
        active = early = 0
        for d in self.dialogs.values():
            if d.state in ONGOING:
                active += 1
            elif d.state in SETUP and not d.reserved:
                early += 1
        return {"active_dialogs": active, "early_dialogs": early}

    # == profiles ==============================================================================
    def profile_size(self, name: str, value: str | None = None) -> int:
        if value is None:
            return self.profile_all.get(name, 0)
        return self.profile_values.get(name, {}).get(value, 0)

    def profile_values_of(self, name: str) -> dict[str, int]:
        return dict(self.profile_values.get(name, {}))

    def _count(self, d: Dialog, on: bool) -> None:
        """Counts `d` in (or out of) its profiles; a dialog counts once while not deleted."""
        if d.counted == on:
            return
        d.counted = on
        step = 1 if on else -1
        for name, value in d.profiles:
            self._bump(name, value, step)

    def _bump(self, name: str, value: str | None, step: int) -> None:
        total = self.profile_all.get(name, 0) + step
        if total > 0:
            self.profile_all[name] = total
        else:
            self.profile_all.pop(name, None)
        if value is not None:
            values = self.profile_values.setdefault(name, {})
            n = values.get(value, 0) + step
            if n > 0:
                values[value] = n
            else:
                values.pop(value, None)
                if not values:
                    self.profile_values.pop(name, None)

    def _add_profiles(self, d: Dialog, links: tuple[ProfileLink, ...]) -> None:
        new = tuple(link for link in links if link not in d.profiles)
        if not new:
            return
        d.profiles = d.profiles + new
        if d.counted:
            for name, value in new:
                self._bump(name, value, 1)

    def reserve(self, callid: str, from_tag: str, link: ProfileLink, limit: int,
                now_ms: int) -> tuple[bool, int, list[Output]]:
        """Puts the dialog being created into a profile when it holds fewer than `limit`
        dialogs (see Reserve in dialog.proto): (taken, size before, effects)."""
        name, value = link
        size = self.profile_size(name, value)
        d = self.dialogs.get((callid, from_tag))
        if d is not None and link in d.profiles:
            return True, size - 1, []
        if size >= limit:
            return False, size, []
        out: list[Output] = []
        if d is None:
            if (callid, from_tag) in self.tombstones:
                return False, size, []
            d = Dialog(callid, from_tag)
            d.reserved = True
            d.created_ms = now_ms
            self._insert(d)
            self._push(now_ms + self.config.reserve_timeout * 1000, d.key, _RESERVE)
        self._add_profiles(d, (link,))
        self._touch(d)
        out.append(Changed(d))
        return True, size, out

    # == the edge's events =======================================================================
    def create(self, c: Any, time_ms: int) -> list[Output]:
        """The dialog-forming INVITE (a `Create` of dialog.proto)."""
        key = (c.callid, c.from_tag)
        if key in self.tombstones:
            return []
        d = self.dialogs.get(key)
        if d is not None and not d.reserved:
            return []  # the same INVITE reported again (a resent event)
        fresh = d is None
        if d is None:
            d = Dialog(c.callid, c.from_tag)
            d.created_ms = time_ms
        d.reserved = False
        d.from_hdr = c.from_hdr
        d.to_hdr = c.to_hdr
        d.ruri = c.ruri
        d.caller_cseq = c.cseq
        d.caller_contact = c.contact
        share = self._share
        d.caller_hop = d.source = c.source
        d.socket = share(c.socket)
        d.destination = share(c.destination)
        d.edge_addrs = share(tuple(c.edge_addrs))
        d.edge_uac = share(c.edge_uac)
        d.created_ms = time_ms
        d.timeout = c.timeout if c.timeout_set else self.config.default_timeout
        d.sharing_tag = c.sharing_tag
        d.no_cdr = c.no_cdr
        if c.extra:
            d.extra = {**(d.extra or {}), **c.extra}
        links = share(tuple(share((p.name, p.value if p.has_value else None))
                            for p in c.profiles))
        if fresh:
            d.profiles = links
            self._insert(d)
        else:
            self._add_profiles(d, links)
        self._push(time_ms + self.config.early_timeout * 1000, d.key, _STALE)
        self._touch(d)
        self.stats.create_sent += 1
        return [Changed(d)]

    def reply(self, r: Any, time_ms: int) -> list[Output]:
        """A reply relayed upstream for the INVITE (a `Reply` of dialog.proto)."""
        d = self.dialogs.get((r.callid, r.from_tag))
        status = r.status
        if d is None or status <= 100:
            if d is None:
                self.stats.unknown_events += 1
            return []
        if d.reserved:
            # A profile place was taken but the INVITE was answered without a branch:
            # nothing was ever forwarded, so there is no call to account for.
            return self._purge(d, time_ms, replicate=True)
        if status < 200:
            event = Event.RPL_1XX
        elif status < 300:
            event = Event.RPL_2XX
        else:
            event = Event.RPL_FAIL
        row = transition(d.state, event)
        if row is None:
            return []
        out: list[Output] = []
        if d.state in SETUP:
            if r.to_tag and (status >= 200 or not d.to_tag):
                d.to_tag = r.to_tag
            if status >= 200:
                d.sip_code = status
                d.sip_reason = self._share(r.reason)
            if 200 <= status < 300:
                from services.dialog.model import split_route_sets

                d.answered_ms = time_ms
                d.callee_contact = r.contact
                d.callee_hop = r.source or d.destination
                callee, caller = split_route_sets(list(r.record_route), d.edge_addrs)
                d.callee_route, d.caller_route = self._share(callee), self._share(caller)
            elif status >= 300:
                d.end_reason = "cancelled" if status == 487 else "failed"
        self._apply(d, row, time_ms, out)
        return out

    def in_dialog(self, q: Any, time_ms: int) -> list[Output]:
        """An in-dialog request forwarded by the edge (an `InDialog` of dialog.proto)."""
        d = self.dialogs.get((q.callid, q.from_tag))
        from_caller = True
        if d is None and q.to_tag:
            d = self.dialogs.get((q.callid, q.to_tag))  # sent by the callee
            from_caller = False
        if d is None or d.reserved:
            self.stats.unknown_events += 1
            return []
        method = q.method
        before = (d.caller_cseq, d.callee_cseq)
        if from_caller:
            d.caller_cseq = max(d.caller_cseq, q.cseq)
        else:
            d.callee_cseq = max(d.callee_cseq, q.cseq)
        moved = before != (d.caller_cseq, d.callee_cseq)
        if method == "ACK":
            event = Event.REQ_ACK
        elif method == "BYE":
            event = Event.REQ_BYE
        else:
            event = Event.REQ
        row = transition(d.state, event)
        out: list[Output] = []
        if row is None:
            if moved:  # a CSeq moved (a BYE sent later must use a higher one): store it
                self._touch(d)
                out.append(Changed(d))
            return out
        if event is Event.REQ_BYE and row[0] is State.DELETED:
            d.end_reason = "caller-bye" if from_caller else "callee-bye"
        self._apply(d, row, time_ms, out)
        return out

    # == operators and billing ===================================================================
    def end(self, d: Dialog, reason: str, now_ms: int,
            headers: tuple[str, ...] = ()) -> list[Output]:
        """dlg_end_dlg: BYE both ways when confirmed, CANCEL when early."""
        row = transition(d.state, Event.END)
        if row is None:
            return []
        out: list[Output] = []
        if row[0] is State.DELETED:
            d.end_reason = reason
        self._apply(d, row, now_ms, out, headers)
        return out

    def set_extra(self, d: Dialog, extra: dict[str, str], now_ms: int) -> list[Output]:
        """Adds CDR extra fields (accepted until the CDR is written)."""
        if d.cdr_done:
            return []
        d.extra = {**(d.extra or {}), **extra}
        self._touch(d)
        return [Changed(d)]

    # == the CDR =================================================================================
    def cdr_written(self, key: Key, now_ms: int) -> list[Output]:
        """The owner wrote the CDR (or found it written): the dialog can go everywhere."""
        self.writing.discard(key)
        d = self.dialogs.get(key)
        if d is None:
            return []
        self.stats.cdrs += 1
        d.cdr_done = True
        return self._purge(d, now_ms, replicate=True)

    def cdr_failed(self, key: Key, now_ms: int) -> list[Output]:
        self.writing.discard(key)
        if key in self.dialogs:
            self._push(now_ms + self.config.recheck_ms, key, _CDR)
        return []

    def _maybe_cdr(self, d: Dialog, now_ms: int, out: list[Output]) -> None:
        if d.state is not State.DELETED or d.cdr_done:
            return
        if d.no_cdr:
            out.extend(self._purge(d, now_ms, replicate=True))
            return
        if d.key in self.writing:
            return
        if now_ms < d.hold_until_ms:
            self._push(d.hold_until_ms, d.key, _CDR)
            return
        if not self.owns(d):
            self._push(now_ms + self.config.recheck_ms, d.key, _CDR)
            return
        self.writing.add(d.key)
        out.append(WriteCdr(d))

    def recheck(self, now_ms: int) -> list[Output]:
        """The cluster view changed: take over the CDRs this node owns now."""
        out: list[Output] = []
        for d in list(self.dialogs.values()):
            if d.state is State.DELETED and not d.cdr_done:
                self._maybe_cdr(d, now_ms, out)
        return out

    # == replication =============================================================================
    def apply_replica(self, incoming: Dialog, now_ms: int) -> list[Output]:
        """A copy of a dialog from another node (live update, full sync, restart load)."""
        key = incoming.key
        if key in self.tombstones:
            return []
        local = self.dialogs.get(key)
        out: list[Output] = []
        share = self._share  # values most dialogs share (per-call ones are left alone)
        incoming.socket = share(incoming.socket)
        incoming.edge_addrs = share(incoming.edge_addrs)
        incoming.edge_uac = share(incoming.edge_uac)
        incoming.sip_reason = share(incoming.sip_reason)
        if local is None:
            self.stats.create_recv += 1
            self._insert(incoming)
            d = incoming
        else:
            if incoming.rank() <= local.rank():
                return []
            self.stats.update_recv += 1
            if incoming.state is State.DELETED and local.state is not State.DELETED:
                self.stats.delete_recv += 1
            d = self._replace(local, incoming)
        if d.cdr_done:
            return self._purge(d, now_ms, replicate=False)
        out.append(Changed(d, replicate=False))
        self._schedule(d, now_ms)
        self._maybe_cdr(d, now_ms, out)
        return out

    def apply_purge(self, key: Key, now_ms: int) -> list[Output]:
        d = self.dialogs.get(key)
        self._tomb(key, now_ms)
        if d is None:
            return []
        return self._purge(d, now_ms, replicate=False)

    # == timers ==================================================================================
    def next_deadline(self) -> int | None:
        heap, order = self._heap, self._tomb_order
        due = [x for x in (heap[0][0] if heap else None, order[0][0] if order else None)
               if x is not None]
        return min(due) if due else None

    def on_timer(self, now_ms: int) -> list[Output]:
        out: list[Output] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            _when, _seq, key, kind = heapq.heappop(heap)
            d = self.dialogs.get(key)
            if d is None:
                continue
            if kind == _LIFETIME:
                deadline = d.deadline_ms
                if d.state not in ONGOING or not deadline:
                    continue
                if deadline > now_ms:
                    self._push(deadline, key, _LIFETIME)  # the timeout was made longer
                elif self.owns(d):
                    row = transition(d.state, Event.TIMEOUT)
                    if row is not None:
                        d.end_reason = "timeout"
                        self.stats.expired += 1
                        self._apply(d, row, now_ms, out)
                else:
                    self._push(now_ms + self.config.recheck_ms, key, _LIFETIME)
            elif kind == _STALE:
                if d.state not in SETUP or d.reserved:
                    continue
                due = d.created_ms + self.config.early_timeout * 1000
                if due > now_ms:
                    self._push(due, key, _STALE)
                elif self.owns(d):
                    row = transition(d.state, Event.STALE)
                    if row is not None:
                        d.sip_code, d.sip_reason, d.end_reason = 408, "Request Timeout", "stale"
                        self._apply(d, row, now_ms, out)
                else:
                    self._push(now_ms + self.config.recheck_ms, key, _STALE)
            elif kind == _RESERVE:
                if d.reserved and d.created_ms + self.config.reserve_timeout * 1000 <= now_ms:
                    out.extend(self._purge(d, now_ms, replicate=False))  # each node drops its own
            elif kind == _CDR:
                self._maybe_cdr(d, now_ms, out)
        # Tombstones leave oldest first (a deque in the order they were set: O(1) each,
        # whatever their number - at 1,000 calls/s there are 60,000 of them).
        order, tombstones = self._tomb_order, self.tombstones
        while order and order[0][0] <= now_ms:
            until, key = order.popleft()
            if tombstones.get(key) == until:
                del tombstones[key]
        return out

    # == internals ===============================================================================
    def _tomb(self, key: Key, now_ms: int) -> None:
        until = now_ms + self.config.tombstone_ms
        self.tombstones[key] = until
        self._tomb_order.append((until, key))

    def _touch(self, d: Dialog) -> None:
        d.version += 1
        d.writer = self.node
        d.packed = None  # changed: encoded again when stored or replicated

    def _insert(self, d: Dialog) -> None:
        self.dialogs[d.key] = d
        self.by_id[(d.h_entry, d.h_id)] = d.key
        self.by_callid.setdefault(d.callid, d.key)
        self._count(d, d.state is not State.DELETED)

    def _replace(self, local: Dialog, incoming: Dialog) -> Dialog:
        """`incoming` takes `local`'s place; extras and CSeqs of both are kept."""
        self._count(local, False)
        if local.extra and any(incoming.extra is None or k not in incoming.extra
                               for k in local.extra):
            incoming.extra = {**local.extra, **(incoming.extra or {})}
            incoming.packed = None  # no longer what was received
        if local.caller_cseq > incoming.caller_cseq or local.callee_cseq > incoming.callee_cseq:
            incoming.caller_cseq = max(incoming.caller_cseq, local.caller_cseq)
            incoming.callee_cseq = max(incoming.callee_cseq, local.callee_cseq)
            incoming.packed = None
        self.dialogs[incoming.key] = incoming
        self._count(incoming, incoming.state is not State.DELETED)
        return incoming

    def _purge(self, d: Dialog, now_ms: int, *, replicate: bool) -> list[Output]:
        key = d.key
        self._count(d, False)
        self.dialogs.pop(key, None)
        self.writing.discard(key)
        self.by_id.pop((d.h_entry, d.h_id), None)
        if self.by_callid.get(d.callid) == key:
            del self.by_callid[d.callid]
        # Replicas of it still in flight (or a donor's older snapshot) must not bring it back.
        self._tomb(key, now_ms)
        if replicate:
            self.stats.delete_sent += 1
        return [Purged(key, replicate)]

    def _push(self, when: int, key: Key, kind: int) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), key, kind))

    def _schedule(self, d: Dialog, now_ms: int) -> None:
        """Timers of a dialog that arrived whole (replica, restart)."""
        if d.state in ONGOING and d.deadline_ms:
            self._push(d.deadline_ms, d.key, _LIFETIME)
        elif d.state in SETUP:
            if d.reserved:
                self._push(d.created_ms + self.config.reserve_timeout * 1000, d.key, _RESERVE)
            else:
                self._push(d.created_ms + self.config.early_timeout * 1000, d.key, _STALE)

    def _apply(self, d: Dialog, row: tuple[State, tuple[Effect, ...], str], now_ms: int,
               out: list[Output], headers: tuple[str, ...] = ()) -> None:
        new, effects, _rule = row
        old = d.state
        d.state = new
        self._touch(d)
        if new is State.DELETED and old is not State.DELETED:
            d.ended_ms = d.ended_ms or now_ms
            d.hold_until_ms = now_ms + self.config.cdr_delay_ms
            self._count(d, False)
            self.stats.processed += old in ONGOING
            self.stats.failed += old in SETUP
        out.append(Changed(d))
        if new is not old:
            out.append(StateChanged(d, old, new))
        for effect in effects:
            if effect is Effect.START_LIFETIME:
                if d.deadline_ms:
                    self._push(d.deadline_ms, d.key, _LIFETIME)
            elif effect is Effect.SEND_BYE:
                out.append(SendBye(d, headers))
            elif effect is Effect.SEND_CANCEL:
                out.append(SendCancel(d))
        if new is State.DELETED:
            self._maybe_cdr(d, now_ms, out)


def entry_of(callid: str) -> int:
    return hash_entry(callid)
