"""Measuring how busy an asyncio event loop is, for the load model in ``load.py``.

How: an asyncio selector event loop spends its idle time in exactly one place - the
``select(timeout)`` call of its selector, where it waits for I/O or for the next timer.
``SelectorLoadSampler`` wraps the loop's selector in a thin proxy whose ``select`` tells
the tracker "idle begins" before delegating and "idle ends" after; every other selector
method is passed through untouched. So busy time is everything the loop does outside its
I/O wait - callbacks, coroutine steps, timers, and any blocking call a callback makes -
which is the OpenSIPS definition (time outside the reactor wait). The cost is two clock
reads per loop iteration; nothing is scheduled on the loop, so measuring does not itself
make the loop busy.

Why not the alternatives: wrapping ``loop._run_once`` also works but counts the select
wait as busy unless it is timed separately anyway; a heartbeat timer that measures its own
lateness only sees lag, not busy time, and wakes an idle loop for nothing.

Loops without a Python selector (uvloop runs libuv in C) cannot be wrapped.
``CpuTimeLoadSampler`` is the fallback there: a periodic callback books the CPU time the
loop's thread consumed since the previous tick (``time.thread_time``) as busy time. It is
coarser (tick resolution, and a callback blocked in a sleep counts as idle) and wakes the
loop every tick; ``make_sampler`` picks the selector sampler whenever it can.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from shared.stats.load import LoadTracker, ProcessLoad

Clock = Callable[[], float]


class UnsupportedLoopError(RuntimeError):
    """The event loop has no Python-level selector to time."""


class LoadSampler(Protocol):
    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None: ...

    def uninstall(self) -> None: ...

    def snapshot(self) -> ProcessLoad: ...


class _TimedSelector:
    """Proxy of a ``selectors.BaseSelector`` whose ``select`` marks the idle wait."""

    def __init__(self, inner: Any, tracker: LoadTracker, clock: Clock) -> None:
        self._inner = inner
        self._tracker = tracker
        self._clock = clock

    def select(self, timeout: float | None = None) -> Any:
        self._tracker.idle_begins(self._clock())
        try:
            return self._inner.select(timeout)
        finally:
            self._tracker.idle_ends(self._clock())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SelectorLoadSampler:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.tracker = LoadTracker(clock())
        self._loop: Any = None
        self._inner: Any = None

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        loop = loop if loop is not None else asyncio.get_running_loop()
        inner = getattr(loop, "_selector", None)
        if inner is None or not callable(getattr(inner, "select", None)):
            raise UnsupportedLoopError(f"{type(loop).__name__} has no selector to time")
        if isinstance(inner, _TimedSelector):
            raise RuntimeError("a load sampler is already installed on this loop")
        self._loop, self._inner = loop, inner
        loop._selector = _TimedSelector(inner, self.tracker, self._clock)  # type: ignore[attr-defined]

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop._selector = self._inner
            self._loop = self._inner = None

    def snapshot(self) -> ProcessLoad:
        return self.tracker.snapshot(self._clock())


class CpuTimeLoadSampler:
    def __init__(
        self, interval: float = 0.05, clock: Clock = time.monotonic,
        cpu_clock: Clock = time.thread_time,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._cpu = cpu_clock
        now = clock()
        self.tracker = LoadTracker(now)
        self.tracker.idle_begins(now)  # busy time is booked by ticks only
        self._last = (now, cpu_clock())
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def tick(self) -> None:
        now, cpu = self._clock(), self._cpu()
        last_now, last_cpu = self._last
        busy = min(max(0.0, cpu - last_cpu), max(0.0, now - last_now))
        self.tracker.add_busy(now - busy, now)
        self._last = (now, cpu)

    def _run(self) -> None:
        self.tick()
        if self._loop is not None:
            self._handle = self._loop.call_later(self.interval, self._run)

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._last = (self._clock(), self._cpu())
        self._handle = self._loop.call_later(self.interval, self._run)

    def uninstall(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop = None

    def snapshot(self) -> ProcessLoad:
        if self._loop is not None:
            self.tick()
        return self.tracker.snapshot(self._clock())


def make_sampler(loop: asyncio.AbstractEventLoop | None = None) -> LoadSampler:
    """Install the best sampler for ``loop`` (default: the running loop) and return it."""
    loop = loop if loop is not None else asyncio.get_running_loop()
    sampler: LoadSampler
    try:
        sampler = SelectorLoadSampler()
        sampler.install(loop)
    except UnsupportedLoopError:
        sampler = CpuTimeLoadSampler()
        sampler.install(loop)
    return sampler


def load_group(
    sampler: LoadSampler, proc_id: int = 0, sip: bool = True
) -> Callable[[], dict[str, int]]:
    """The ``load`` group of a single process, for ``StatsRegistry.group("load", ...)``.
    A gateway aggregating many processes calls ``load_statistics`` on their snapshots."""
    from shared.stats.load import load_statistics

    def read() -> dict[str, int]:
        return load_statistics({proc_id: sampler.snapshot()}, sip=[proc_id] if sip else [])

    return read
