"""Dispatcher (services/edge/dispatcher.py): sets from the table, OpenSIPS's algorithms,
states, the prober's decisions on a fake clock, and ctx.dispatch with failover in
failure_route through the sans-IO proxy core."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.edge.dispatcher import (
    ACTIVE,
    INACTIVE,
    PROBING,
    Change,
    DispatcherError,
    DispatcherSets,
)
from shared.sip import Request, Response
from shared.store.edge_tables import Destination
from tests.unit.edge.proxyharness import Harness, answer, invite, to
from tests.unit.edge.test_edge_proxy_core import statuses

MI = Path(__file__).resolve().parents[3] / "contracts" / "mi"
GWS = ["sip:gw1@127.0.0.1:5071", "sip:gw2@127.0.0.1:5072", "sip:gw3@127.0.0.1:5073"]


def sets(**kw: Any) -> DispatcherSets:
    rows = [Destination(1, GWS[0], weight=1), Destination(1, GWS[1], weight=3),
            Destination(1, GWS[2], weight=0, state=1),
            Destination(2, "sip:backup@127.0.0.1:5080", priority=5, description="b")]
    return DispatcherSets(rows, **kw)


def keys(i: int) -> dict[str, str]:
    return {"callid": f"call-{i}", "from": f"sip:u{i}@x", "to": "sip:t@x",
            "ruri": f"sip:{i}@x"}


def test_round_robin_over_active_destinations_with_failover_order() -> None:
    s = sets()
    firsts = [s.select(1, 4, keys(i))[0].uri for i in range(4)]
    assert firsts == [GWS[0], GWS[1], GWS[0], GWS[1]]  # gw3 is Inactive in the table
    assert [d.uri for d in s.select(1, 4, keys(9))] == [GWS[0], GWS[1]]


def test_hashes_keep_a_call_on_one_destination() -> None:
    s = sets()
    for alg in (0, 1, 2, 3, 5, 6):
        assert {s.select(1, alg, keys(7))[0].uri for _ in range(5)} == \
            {s.select(1, alg, keys(7))[0].uri}
    spread = {s.select(1, 0, keys(i))[0].uri for i in range(50)}
    assert spread == {GWS[0], GWS[1]}


def test_weight_based_follows_the_weights() -> None:
    s = sets()
    counts = collections.Counter(s.select(1, 9, keys(i))[0].uri for i in range(4000))
    assert 2.3 < counts[GWS[1]] / counts[GWS[0]] < 3.8  # weights 3 : 1


def test_first_and_unknown() -> None:
    s = sets()
    assert s.select(1, 8, keys(1))[0].uri == GWS[0]
    with pytest.raises(DispatcherError):
        s.select(1, 7, keys(1))
    with pytest.raises(DispatcherError):
        s.select(9, 4, keys(1))


def test_states_by_mi_and_failures() -> None:
    s = sets(threshold=2)
    assert s.set_state(1, GWS[0], INACTIVE) == Change(1, GWS[0], INACTIVE)
    assert s.set_state(1, GWS[0], INACTIVE) is None
    assert [d.uri for d in s.select(1, 4, keys(1))] == [GWS[1]]
    assert s.mark_failed(1, GWS[1]) is None  # one failure: threshold 2
    assert s.mark_failed(1, GWS[1]) == Change(1, GWS[1], PROBING)
    assert s.select(1, 4, keys(1)) == []
    with pytest.raises(DispatcherError):
        s.set_state(1, "sip:nobody@x", ACTIVE)


def test_probing_mode_0_probes_the_probing_ones_and_revives_them() -> None:
    s = sets(interval=10.0, mode=0, reply_codes=[404])
    s.set_state(1, GWS[1], PROBING)
    assert [d.uri for d in s.due(0.0)] == [GWS[1]]
    assert s.due(5.0) == []  # once per interval
    assert s.probe_result(1, GWS[1], 408) is None  # still Probing
    assert s.probe_result(1, GWS[1], 404) == Change(1, GWS[1], ACTIVE)  # an allowed code
    assert s.due(10.0) == []


def test_probing_mode_1_probes_all_but_inactive_and_marks_failures() -> None:
    s = sets(interval=1.0, mode=1)
    assert {d.uri for d in s.due(0.0)} == {GWS[0], GWS[1], "sip:backup@127.0.0.1:5080"}
    assert s.probe_result(1, GWS[0], 408) == Change(1, GWS[0], PROBING)
    assert s.probe_result(1, GWS[0], 200) == Change(1, GWS[0], ACTIVE)
    assert s.probe_result(1, GWS[2], 200) is None  # Inactive stays so until the MI says


def test_reload_keeps_states_and_counters_of_known_destinations() -> None:
    s = sets()
    s.select(1, 8, keys(1))
    s.set_state(1, GWS[1], PROBING)
    s.load([Destination(1, GWS[0]), Destination(1, GWS[1]), Destination(3, "sip:new@x")])
    listed = s.mi_list()
    [part] = listed["PARTITIONS"]
    assert [(st["id"], [(d["URI"], d["state"], d["first_hit_counter"])
                        for d in st["Destinations"]]) for st in part["SETS"]] == [
        (1, [(GWS[0], "Active", 1), (GWS[1], "Probing", 0)]),
        (3, [("sip:new@x", "Active", 0)])]
    schema = json.loads((MI / "ds_list.json").read_text())["result"]
    jsonschema.validate(listed, schema)
    jsonschema.validate(sets().mi_list(full=True), schema)
    assert sets().mi_list(full=True)["PARTITIONS"][0]["SETS"][1]["Destinations"][0][
        "description"] == "b"


class Service:
    def __init__(self, s: DispatcherSets) -> None:
        self.sets = s
        self.changes: list[Change] = []

    def changed(self, change: Change) -> None:
        self.changes.append(change)


class DsRouter:
    def request_route(self, request: Request, ctx: Any) -> None:
        if ctx.dispatch(1, 4) is None:
            ctx.reply(503, "No Gateway")
            return
        ctx.set_failure_route(self.failure_route)

    def failure_route(self, response: Response, ctx: Any) -> None:
        if response.status >= 500 or response.status == 408:
            ctx.ds_mark_dst("p")
            ctx.dispatch_next()


def test_dispatch_and_failover_through_the_proxy_core() -> None:
    s = DispatcherSets([Destination(1, GWS[0]), Destination(1, GWS[1])])
    service = Service(s)
    h = Harness(DsRouter())
    h.core.services = {"dispatcher": service}
    sends = h.feed(invite("sip:18005550100@pstn.example"))
    [first] = [m for m in to(sends, 5071) if isinstance(m, Request)]
    assert first.uri == "sip:18005550100@pstn.example"  # the R-URI kept, $du set
    sends = h.feed(answer(first, 503), peer=("127.0.0.1", 5071))
    [second] = [m for m in to(sends, 5072) if isinstance(m, Request)]
    assert second.method == "INVITE"
    assert service.changes == [Change(1, GWS[0], PROBING)]
    h.feed(answer(second, 200), peer=("127.0.0.1", 5072))
    assert 200 in statuses(h.sent)
    # gw1 is Probing now: the next call goes to gw2 only; none left: 503 -> 500 upstream.
    s.set_state(1, GWS[1], INACTIVE)
    out = h.feed(invite("sip:1@pstn.example", branch="z9hG4bK9", call_id="c9"))
    assert statuses(out) == [100, 503]  # the routing said so (No Gateway)


def test_rows_that_are_not_sip_uris_are_skipped_with_a_reason() -> None:
    s = DispatcherSets([Destination(1, "gw.example.com"), Destination(1, GWS[0])])
    assert [d.uri for d in s.select(1, 4, keys(1))] == [GWS[0]]
    assert [row.destination for row, _ in s.skipped] == ["gw.example.com"]
