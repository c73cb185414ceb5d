"""StatsRegistry: OpenSIPS group:name statistics, get_statistics forms, Prometheus export."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from shared.stats.registry import CoreStats, StatsRegistry, UnknownStatisticError, metric_name


@pytest.fixture
def reg() -> StatsRegistry:
    r = StatsRegistry()
    core = CoreStats(r)
    for method in ("INVITE", "INVITE", "REGISTER"):
        core.request_received(method)
    core.fwd_requests.inc(2)
    core.rcv_replies.inc()
    r.gauge("usrloc", "registered_users", lambda: 42)
    r.group("load", lambda: {"load": 24, "load1m": 10, "load-proc-1": 30})
    return r


def test_core_counters_have_opensips_names(reg: StatsRegistry) -> None:
    core = reg.get_statistics(["core:"])
    assert core["core:rcv_requests"] == 3
    assert core["core:rcv_requests_invite"] == 2
    assert core["core:rcv_requests_register"] == 1
    assert core["core:fwd_requests"] == 2
    for name in ("rcv_replies", "fwd_replies", "drop_requests", "drop_replies",
                 "err_requests", "err_replies"):
        assert f"core:{name}" in core


def test_get_statistics_forms(reg: StatsRegistry) -> None:
    assert reg.get_statistics(["load:"]) == {
        "load:load": 24, "load:load1m": 10, "load:load-proc-1": 30}
    assert reg.get_statistics(["load:load1m"]) == {"load:load1m": 10}
    assert reg.get_statistics(["registered_users"]) == {"usrloc:registered_users": 42}
    assert reg.get_statistics(["load:load", "core:fwd_requests", "load:nope"]) == {
        "load:load": 24, "core:fwd_requests": 2}
    everything = reg.get_statistics(["all"])
    assert everything["usrloc:registered_users"] == 42 and everything["load:load"] == 24
    with pytest.raises(UnknownStatisticError, match="Not Found"):
        reg.get_statistics(["nosuch:", "nothing"])


def test_the_same_counter_object_is_returned(reg: StatsRegistry) -> None:
    a = reg.counter("tm", "UAS_transactions")
    a.inc()
    reg.counter("tm", "UAS_transactions").inc()
    assert reg.get_statistics(["tm:UAS_transactions"]) == {"tm:UAS_transactions": 2}


def test_reset_only_touches_counters(reg: StatsRegistry) -> None:
    assert reg.reset_statistics(["core:"]) >= 8
    assert reg.get_statistics(["core:rcv_requests"]) == {"core:rcv_requests": 0}
    assert reg.reset_statistics(["usrloc:registered_users"]) == 0
    assert reg.get_statistics(["registered_users"]) == {"usrloc:registered_users": 42}


def test_list_statistics_says_which_are_incremental(reg: StatsRegistry) -> None:
    listing = reg.list_statistics(["core:rcv_requests", "usrloc:", "load:load"])
    assert listing == {"core:rcv_requests": "incremental",
                       "usrloc:registered_users": "non-incremental",
                       "load:load": "non-incremental"}


def test_bad_names_and_clashes_are_refused() -> None:
    r = StatsRegistry()
    with pytest.raises(ValueError, match="bad statistic"):
        r.counter("core", "has space")
    r.counter("core", "x")
    with pytest.raises(ValueError, match="already a counter"):
        r.gauge("core", "x", lambda: 1)
    with pytest.raises(ValueError, match="fixed statistics"):
        r.group("core", dict)


def test_prometheus_export(reg: StatsRegistry) -> None:
    prom = CollectorRegistry()
    prom.register(reg.collector())
    text = generate_latest(prom).decode()
    assert "sipmesh_core_rcv_requests_total 3.0" in text
    assert "# TYPE sipmesh_core_rcv_requests_total counter" in text
    assert "sipmesh_usrloc_registered_users 42.0" in text
    assert "sipmesh_load_proc_1 30.0" in text
    assert prom.get_sample_value("sipmesh_load") == 24


def test_metric_names_have_no_doubled_word() -> None:
    assert metric_name("sipmesh", "load", "load") == "sipmesh_load"
    assert metric_name("sipmesh", "load", "load1m-all") == "sipmesh_load1m_all"
    assert metric_name("sipmesh", "pkmem", "0-real_used_size") == "sipmesh_pkmem_real_used_size"
    assert metric_name("sipmesh", "usrloc", "location-users") == "sipmesh_usrloc_location_users"


def test_a_statistic_another_collector_exports_is_left_to_it(reg: StatsRegistry) -> None:
    prom = CollectorRegistry()
    Gauge("sipmesh_usrloc_registered_users", "native", registry=prom).set(7)
    prom.register(reg.collector(lambda: list(prom._names_to_collectors)))
    text = generate_latest(prom).decode()
    assert text.count("# TYPE sipmesh_usrloc_registered_users gauge") == 1
    assert prom.get_sample_value("sipmesh_usrloc_registered_users") == 7
