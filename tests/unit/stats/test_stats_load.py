"""The OpenSIPS 2.4 load model with an injected clock (the real loops: tests/component/stats)."""

from __future__ import annotations

import pytest

from shared.stats.load import LoadTracker, ProcessLoad, SlotWindow, load_statistics, percent
from shared.stats.sampler import (
    CpuTimeLoadSampler,
    SelectorLoadSampler,
    UnsupportedLoopError,
)


def test_busy_time_is_split_across_slots() -> None:
    w = SlotWindow(1.0, 10)
    w.add_busy(100.5, 102.25)  # 0.5 in slot 100, 1.0 in 101, 0.25 in 102
    assert w.ratio(101.0, 1) == pytest.approx(0.5)
    assert w.ratio(102.0, 1) == pytest.approx(1.0)
    assert w.ratio(103.0, 1) == pytest.approx(0.25)
    assert w.ratio(103.0, 3) == pytest.approx(1.75 / 3)


def test_the_current_slot_is_not_counted_and_old_slots_fall_out() -> None:
    w = SlotWindow(1.0, 10)
    w.add_busy(100.0, 101.0)
    assert w.ratio(100.5, 10) == 0.0  # slot 100 is not complete yet
    assert w.ratio(101.0, 10) == pytest.approx(0.1)
    assert w.ratio(110.9, 10) == pytest.approx(0.1)  # still inside the 10 slots before 110
    assert w.ratio(111.0, 10) == 0.0  # slot 100 left the window
    w.add_busy(111.0, 112.0)  # reuses slot 100's ring entry: the stale value is reset
    assert w.ratio(112.0, 10) == pytest.approx(0.1)


def test_a_stretch_longer_than_the_window_saturates_at_full() -> None:
    w = SlotWindow(0.001, 1000)
    w.add_busy(0.0, 50.0)
    assert w.ratio(50.0, 1000) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="span"):
        w.ratio(50.0, 1001)


def test_tracker_half_busy_every_second_for_a_minute() -> None:
    t = LoadTracker(now=1000.0)
    t.idle_begins(1000.0)
    for s in range(60):
        t.idle_ends(1000.0 + s)  # busy for the first half of each second
        t.idle_begins(1000.0 + s + 0.5)
    snap = t.snapshot(1060.0)
    assert percent(snap.load) == 50
    assert percent(snap.load1m) == 50
    assert percent(snap.load10m) == 5  # 30 busy seconds in 600
    # then idle: load drops at once, load1m after a minute, load10m keeps the history
    later = t.snapshot(1061.5)
    assert percent(later.load) == 0
    assert percent(t.snapshot(1121.0).load1m) == 0
    assert percent(t.snapshot(1121.0).load10m) == 5


def test_a_busy_stretch_in_progress_is_counted_up_to_now() -> None:
    t = LoadTracker(now=0.0)  # starts busy and never idles
    assert percent(t.snapshot(2.0).load) == 100
    t.idle_begins(2.0)
    assert percent(t.snapshot(3.5).load) == 0


def test_load_statistics_names_and_aggregation() -> None:
    procs = {
        1: ProcessLoad(0.80, 0.40, 0.10),  # SIP worker
        2: ProcessLoad(0.20, 0.20, 0.20),  # SIP worker
        3: ProcessLoad(0.05, 0.05, 0.05),  # not SIP (e.g. a timer/extra process)
    }
    stats = load_statistics(procs, sip=[1, 2])
    assert stats["load"] == 50 and stats["load1m"] == 30 and stats["load10m"] == 15
    assert stats["load-all"] == 35  # (0.80+0.20+0.05)/3
    assert stats["load-proc-3"] == 5 and stats["load10m-proc-1"] == 10
    assert set(stats) == {
        f"{k}{s}" for k in ("load", "load1m", "load10m")
        for s in ("", "-all", "-proc-1", "-proc-2", "-proc-3")
    }
    assert all(0 <= v <= 100 for v in stats.values())
    assert load_statistics({})["load"] == 0


def test_selector_sampler_books_the_select_wait_as_idle() -> None:
    class FakeSelector:
        def __init__(self, clock: list[float]) -> None:
            self.clock = clock

        def select(self, timeout: float | None = None) -> list[object]:
            self.clock[0] += 0.75  # waits 0.75 s for I/O
            return []

        def get_map(self) -> dict[str, str]:
            return {"passed": "through"}

    class FakeLoop:
        pass

    now = [500.0]
    loop = FakeLoop()
    loop._selector = FakeSelector(now)  # type: ignore[attr-defined]
    sampler = SelectorLoadSampler(clock=lambda: now[0])
    sampler.install(loop)  # type: ignore[arg-type]
    for _ in range(4):
        now[0] += 0.25  # busy 0.25 s
        loop._selector.select(1.0)  # type: ignore[attr-defined]
    assert loop._selector.get_map() == {"passed": "through"}  # type: ignore[attr-defined]
    assert percent(sampler.snapshot().load) == 25
    sampler.uninstall()
    assert isinstance(loop._selector, FakeSelector)  # type: ignore[attr-defined]


def test_a_loop_without_selector_is_refused_clearly() -> None:
    class CLoop:
        pass

    with pytest.raises(UnsupportedLoopError, match="no selector"):
        SelectorLoadSampler().install(CLoop())  # type: ignore[arg-type]


def test_cpu_time_sampler_books_thread_cpu_as_busy() -> None:
    wall, cpu = [10.0], [1.0]
    s = CpuTimeLoadSampler(clock=lambda: wall[0], cpu_clock=lambda: cpu[0])
    for _ in range(20):  # 50 ms ticks, 20 ms of CPU each
        wall[0] += 0.05
        cpu[0] += 0.02
        s.tick()
    assert percent(s.tracker.snapshot(wall[0]).load) == 40
