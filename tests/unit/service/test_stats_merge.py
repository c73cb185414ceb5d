"""Merging statistics answers of several instances into one mesh-wide answer."""

from __future__ import annotations

import pytest

from shared.rpc import MiError
from shared.service.stats import declare_process_stats, merge_stats, mi_get, stat_names
from shared.stats.registry import StatsRegistry


def test_counters_sum_and_loads_average() -> None:
    got = merge_stats([
        (0, {"core:rcv_requests": 3, "load:load": 10, "load:load-proc-0": 10}),
        (1, {"core:rcv_requests": 4, "load:load": 30, "load:load-proc-0": 30, "tm:x": 1}),
    ])
    assert got == {"core:rcv_requests": 7, "load:load": 20, "load:load-proc-0": 10,
                   "load:load-proc-1": 30, "tm:x": 1}


def test_pkmem_is_renumbered_by_process_and_host_figures_taken_once() -> None:
    got = merge_stats([
        (0, {"pkmem:0-real_used_size": 100, "shmem:real_used_size": 100,
             "shmem:total_size": 1000, "shmem:free_size": 500}),
        (3, {"pkmem:0-real_used_size": 50, "shmem:real_used_size": 50,
             "shmem:total_size": 1000, "shmem:free_size": 480}),
    ])
    assert got == {"pkmem:0-real_used_size": 100, "pkmem:3-real_used_size": 50,
                   "shmem:real_used_size": 150, "shmem:total_size": 1000,
                   "shmem:free_size": 500}


def test_non_numbers_are_ignored() -> None:
    assert merge_stats([(0, {"a:b": "x", "a:c": True, "a:d": 2})]) == {"a:d": 2}


def test_stat_names_forms() -> None:
    assert stat_names(None) == ["all"]
    assert stat_names("core: load:") == ["core:", "load:"]
    assert stat_names(["core:rcv_requests"]) == ["core:rcv_requests"]
    with pytest.raises(MiError) as err:
        stat_names([1, 2])
    assert err.value.code == -32602


def test_process_stats_are_declared_and_unknown_is_404() -> None:
    reg = StatsRegistry()
    declare_process_stats(reg)
    got = mi_get(reg, ["core:", "pkmem:", "shmem:"])
    assert got["core:rcv_requests"] == 0 and got["pkmem:0-real_used_size"] > 0
    assert got["shmem:total_size"] >= got["shmem:real_used_size"] > 0
    with pytest.raises(MiError) as err:
        mi_get(reg, ["nosuch:"])
    assert (err.value.code, err.value.message) == (404, "Statistics Not Found")
