"""Full data sync of one capability on the joining side, sans-IO (research §1, "Data sync").

States and transitions (:data:`TRANSITIONS`):

* ``PENDING`` -- the capability needs a startup sync and has no donor yet. Each
  :meth:`SyncMachine.poll` picks a donor: the first reachable node (by node id) whose
  capability is synced and that passes the match rule, skipping donors that just failed.
  A seed node with no donor falls back to synced after ``seed_fallback_interval``.
* ``SYNCING`` -- SYNC_REQ sent; chunks arrive and count as progress; live updates of the
  capability are buffered. SYNC_END with our sync id replays the buffer in order and makes
  the capability ``OK``. Beyond 2.4: when nothing arrived from the donor for
  ``sync_timeout``, or the donor became unreachable, the donor is marked failed and the
  machine goes back to ``PENDING`` to retry on another donor (buffer kept: updates are
  replayed after whichever sync completes).
* ``OK`` -- synced; live updates apply at once. :meth:`SyncMachine.request` (a resync
  asked for through MI) goes back to ``PENDING``.

Every sync attempt has its own ``sync_id`` so late chunks of an abandoned attempt are
dropped. The machine holds no data: :class:`Action` values tell the adapter what to do.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping


class SyncState(enum.Enum):
    PENDING = "not synced"
    SYNCING = "syncing"
    OK = "Ok"


class Match(enum.Enum):
    """OpenSIPS' node-match rule for donors and send_all_having."""

    ANY = "any"
    EQ_SIP_ADDR = "eq_sip_addr"
    NEQ_SIP_ADDR = "neq_sip_addr"

    def accepts(self, mine: str, theirs: str) -> bool:
        if self is Match.EQ_SIP_ADDR:
            return mine == theirs
        if self is Match.NEQ_SIP_ADDR:
            return mine != theirs
        return True


X = SyncState
TRANSITIONS: dict[tuple[SyncState, str], tuple[SyncState, str]] = {
    (X.PENDING, "donor_found"): (X.SYNCING, "send SYNC_REQ to the first synced donor"),
    (X.PENDING, "seed_fallback"): (X.OK, "seed with no donor after seed_fallback_interval"),
    (X.SYNCING, "sync_end"): (X.OK, "SYNC_END: replay buffered updates, SYNC_DONE"),
    (X.SYNCING, "timeout"): (X.PENDING, "no data for sync_timeout: retry another donor"),
    (X.SYNCING, "donor_lost"): (X.PENDING, "donor unreachable: retry another donor"),
    (X.OK, "resync"): (X.PENDING, "sync requested again"),
    (X.SYNCING, "resync"): (X.PENDING, "sync requested again"),
}


@dataclasses.dataclass(frozen=True)
class SendSyncRequest:
    donor: int
    sync_id: int


@dataclasses.dataclass(frozen=True)
class Replay:
    """Apply these buffered (src, payload) updates in order; the capability is synced."""

    updates: tuple[tuple[int, bytes], ...]


Action = SendSyncRequest | Replay


@dataclasses.dataclass(frozen=True)
class Candidate:
    node_id: int
    synced: bool
    sip_addr: str


@dataclasses.dataclass
class SyncMachine:
    """The sync state of one capability on this node."""

    cap: str
    needs_sync: bool
    seed: bool
    started_at: float
    seed_fallback: float = 0.0
    sync_timeout: float = 15.0
    failed_donor_hold: float = 5.0
    match: Match = Match.ANY
    sip_addr: str = ""
    state: SyncState = SyncState.PENDING
    donor: int | None = None
    sync_id: int = 0
    attempts: int = 0
    records: int = 0
    packets: int = 0
    attempt_started: float = 0.0
    last_data_at: float = 0.0
    finished_at: float | None = None
    buffered: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    failed: dict[int, float] = dataclasses.field(default_factory=dict)
    log: list[tuple[float, str]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.needs_sync:
            self.state = SyncState.OK

    def _go(self, event: str, now: float) -> None:
        nxt, why = TRANSITIONS[(self.state, event)]
        self.state = nxt
        self.log.append((now, why))
        del self.log[:-20]

    @property
    def synced(self) -> bool:
        return self.state is SyncState.OK

    def choose_donor(self, candidates: Mapping[int, Candidate], now: float) -> int | None:
        """The first suitable donor by node id, preferring those that did not just fail;
        a donor that failed is retried when it is the only one."""
        usable = [n for n in sorted(candidates) if candidates[n].synced
                  and self.match.accepts(self.sip_addr, candidates[n].sip_addr)]
        fresh = [n for n in usable if self.failed.get(n, -1e18) + self.failed_donor_hold <= now]
        pick = fresh or usable
        return pick[0] if pick else None

    def poll(self, now: float, candidates: Mapping[int, Candidate],
             new_sync_id: Callable[[], int]) -> list[Action]:
        """``candidates``: the *reachable* nodes having the capability (not this one)."""
        if self.state is SyncState.SYNCING:
            assert self.donor is not None
            if self.donor not in candidates:
                self._fail("donor_lost", now)
            elif now - self.last_data_at >= self.sync_timeout:
                self._fail("timeout", now)
        if self.state is SyncState.PENDING:
            donor = self.choose_donor(candidates, now)
            if donor is not None:
                self._go("donor_found", now)
                self.donor, self.sync_id = donor, new_sync_id()
                self.attempts += 1
                self.records = self.packets = 0
                self.attempt_started = self.last_data_at = now
                return [SendSyncRequest(donor, self.sync_id)]
            if self.seed and now - self.started_at >= self.seed_fallback:
                self._go("seed_fallback", now)
                self.finished_at = now
                return [self._drain()]
        return []

    def _fail(self, why: str, now: float) -> None:
        if self.donor is not None:
            self.failed[self.donor] = now
        self._go(why, now)
        self.donor = None

    def _drain(self) -> Replay:
        updates, self.buffered = tuple(self.buffered), []
        return Replay(updates)

    def on_chunk(self, src: int, sync_id: int, records: int, now: float) -> bool:
        """True when the chunk belongs to the running attempt (apply it)."""
        if self.state is not SyncState.SYNCING or src != self.donor or sync_id != self.sync_id:
            return False
        self.records += records
        self.packets += 1
        self.last_data_at = now
        return True

    def on_end(self, src: int, sync_id: int, now: float) -> list[Action]:
        if self.state is not SyncState.SYNCING or src != self.donor or sync_id != self.sync_id:
            return []
        self._go("sync_end", now)
        self.finished_at = now
        return [self._drain()]

    def on_update(self, src: int, payload: bytes) -> bool:
        """True: apply now. False: buffered until the sync ends (CAP_PKT_BUFFERING)."""
        if self.state is SyncState.OK or not self.needs_sync:
            return True
        self.buffered.append((src, payload))
        return False

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to do by the clock alone (a change of the
        candidates is an input of its own)."""
        if self.state is SyncState.SYNCING:
            return self.last_data_at + self.sync_timeout
        if self.state is SyncState.PENDING and self.seed:
            return self.started_at + self.seed_fallback
        return None

    def request(self, now: float) -> None:
        if self.state is not SyncState.PENDING:
            self._go("resync", now)
            self.donor = None

    def progress(self, now: float) -> dict[str, object]:
        return {
            "name": self.cap,
            "state": self.state.value,
            "donor": self.donor if self.donor is not None else 0,
            "attempts": self.attempts,
            "records": self.records,
            "packets": self.packets,
            "buffered": len(self.buffered),
            "elapsed": round((self.finished_at if self.finished_at is not None and
                              self.state is SyncState.OK else now) - self.attempt_started, 3)
            if self.attempts else 0.0,
        }
