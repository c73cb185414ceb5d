"""The load samplers on real event loops (asyncio's selector loop, uvloop) under real work:
wall-clock seconds of spinning and idling, so they live here rather than in the fake-clock
unit tier (tests/unit/stats/test_stats_load.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.stats.load import percent
from shared.stats.sampler import SelectorLoadSampler, load_group, make_sampler


async def busy_for(seconds: float) -> None:
    """Blocks the loop in slices, like a CPU-heavy handler would."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stop = time.monotonic() + 0.01
        while time.monotonic() < stop:
            pass
        await asyncio.sleep(0)


async def test_real_loop_load_rises_under_work_and_falls_back_when_idle() -> None:
    sampler = make_sampler()
    assert isinstance(sampler, SelectorLoadSampler)
    read = load_group(sampler, proc_id=0)
    try:
        await asyncio.sleep(1.05)  # idle for a full short window
        idle_before = read()["load"]
        await busy_for(1.1)
        busy = read()
        await asyncio.sleep(1.05)
        after = read()
    finally:
        sampler.uninstall()
    assert idle_before <= 10
    assert busy["load"] >= 80
    assert busy["load-all"] == busy["load"] and busy["load-proc-0"] == busy["load"]
    assert after["load"] <= 10
    # load1m reads complete 1 s slots only: right after the work the slot holding most
    # of it is still open, a second later all 1.1 s are in (1.1 / 60 s = 2 %).
    assert after["load1m"] >= 1


def test_uvloop_gets_the_cpu_time_fallback_and_still_sees_busy_work() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[str, int]:
        sampler = make_sampler()
        try:
            await busy_for(0.6)
            await asyncio.sleep(0)
            return type(sampler).__name__, percent(sampler.snapshot().load)
        finally:
            sampler.uninstall()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        kind, load = runner.run(scenario())
    assert kind == "CpuTimeLoadSampler"
    # 0.6 s of spinning in the last second; CPU time is less when the 2 shared cores are busy
    assert load >= 20
