"""The OpenSIPS 2.4 load model, sans-IO: busy time against total time in sliding windows.

A process is *busy* whenever it is not waiting in its I/O reactor (for asyncio: not inside
the selector's ``select``). The :class:`LoadTracker` is told when idle waiting begins and
ends - times are passed in, it never reads a clock - and books the busy stretches in
between into two rings of slots, as OpenSIPS does:

- short window: 1 s of 1000 x 1 ms slots -> ``load`` (the realtime value);
- long window: 10 min of 600 x 1 s slots -> ``load10m`` over all of it, ``load1m`` over its
  last 60 slots (the last 10 %).

A ratio is the busy time of the last *complete* slots of the span divided by the span, so
it lags by at most one slot (1 ms / 1 s). A stretch that is still busy when a snapshot is
taken (the snapshot itself runs inside the loop) is booked up to ``now`` first. Values are
exposed as integer percent 0-100; aggregates keep the float ratios until the end so that
``load-all`` is the sum of busy time over (window x number of processes), not a mean of
rounded numbers.

Naming (group ``load``), as ``get_statistics load:`` shows them:

- ``load``, ``load1m``, ``load10m``: the SIP-handling processes only;
- ``load-all``, ``load1m-all``, ``load10m-all``: every process that reports load;
- ``load-proc-N``, ``load1m-proc-N``, ``load10m-proc-N``: process N.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class SlotWindow:
    """A ring of ``slots`` slots of ``slot`` seconds, each holding busy seconds."""

    def __init__(self, slot: float, slots: int) -> None:
        self.slot = slot
        self.slots = slots
        # One spare entry: the slot being filled must not evict the oldest readable one.
        self._ring = slots + 1
        self._busy = [0.0] * self._ring
        self._number = [-1] * self._ring  # which absolute slot each ring entry holds

    def _book(self, number: int, amount: float) -> None:
        i = number % self._ring
        if self._number[i] != number:  # the ring came round: the old value is stale
            self._number[i] = number
            self._busy[i] = 0.0
        self._busy[i] += amount

    def add_busy(self, start: float, end: float) -> None:
        if end <= start:
            return
        # Anything older than the window can never be read again.
        start = max(start, end - self._ring * self.slot)
        first, last = int(start // self.slot), int(end // self.slot)
        for n in range(first, last + 1):
            lo = max(start, n * self.slot)
            hi = min(end, (n + 1) * self.slot)
            if hi > lo:
                self._book(n, hi - lo)

    def ratio(self, now: float, span: int) -> float:
        """Busy fraction over the ``span`` complete slots before the one holding ``now``."""
        if not 0 < span <= self.slots:
            raise ValueError(f"span must be 1..{self.slots}")
        current = int(now // self.slot)
        busy = 0.0
        for n in range(current - span, current):
            i = n % self._ring
            if self._number[i] == n:
                busy += self._busy[i]
        return min(1.0, busy / (span * self.slot))


@dataclass(frozen=True, slots=True)
class ProcessLoad:
    """One process's busy ratios (0.0-1.0) over 1 s, 1 min and 10 min."""

    load: float
    load1m: float
    load10m: float

    def as_dict(self) -> dict[str, float]:
        return {"load": self.load, "load1m": self.load1m, "load10m": self.load10m}

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> ProcessLoad:
        return cls(float(d["load"]), float(d["load1m"]), float(d["load10m"]))


class LoadTracker:
    """Books busy/idle transitions of one process; see the module docstring."""

    def __init__(self, now: float) -> None:
        self.short = SlotWindow(0.001, 1000)
        self.long = SlotWindow(1.0, 600)
        self._busy_since: float | None = now  # a process starts out busy

    def _book(self, start: float, end: float) -> None:
        self.short.add_busy(start, end)
        self.long.add_busy(start, end)

    def idle_begins(self, now: float) -> None:
        if self._busy_since is not None:
            self._book(self._busy_since, now)
            self._busy_since = None

    def idle_ends(self, now: float) -> None:
        self._busy_since = now

    def add_busy(self, start: float, end: float) -> None:
        """Book a busy stretch measured some other way (e.g. CPU time of a thread)."""
        self._book(start, end)

    def snapshot(self, now: float) -> ProcessLoad:
        if self._busy_since is not None:
            self._book(self._busy_since, now)
            self._busy_since = now
        return ProcessLoad(
            load=self.short.ratio(now, 1000),
            load1m=self.long.ratio(now, 60),
            load10m=self.long.ratio(now, 600),
        )


def percent(ratio: float) -> int:
    return max(0, min(100, round(ratio * 100)))


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


def load_statistics(
    processes: Mapping[int, ProcessLoad], sip: Iterable[int] | None = None
) -> dict[str, int]:
    """The ``load`` group for a set of processes (id -> ratios); ``sip`` names the
    SIP-handling ones (default: all). Names without the ``load:`` group prefix."""
    sip_ids = set(processes) if sip is None else set(sip) & set(processes)
    out: dict[str, int] = {}
    for key in ("load", "load1m", "load10m"):
        # Same window for every process: sum(busy) / (window * n) is the mean of the ratios.
        out[key] = percent(_mean(getattr(processes[p], key) for p in sip_ids))
        out[f"{key}-all"] = percent(_mean(getattr(p, key) for p in processes.values()))
    for pid in sorted(processes):
        for key in ("load", "load1m", "load10m"):
            out[f"{key}-proc-{pid}"] = percent(getattr(processes[pid], key))
    return out
