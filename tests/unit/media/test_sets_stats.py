"""Sets, weighted choice per call, disable/recheck state, and the statistics of a real
rtpengine 10.5 delete reply (fixtures/delete_with_mos.json: a call where side A dropped
every 10th RTP packet, so B's reports show ~9% loss and MOS 3.6)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from services.media.sets import (
    MAX_RECHECK_TICKS,
    EngineSets,
    SetError,
    StatusChange,
    parse_set_definition,
)
from services.media.stats import call_stats, rtpstat

A, B = "udp:127.0.0.1:2001", "udp:127.0.0.1:2002"


def two(weights: tuple[int, int] = (1, 3)) -> EngineSets:
    s = EngineSets(disable_timeout=60.0)
    s.load([(1, f"{A}={weights[0]} {B}={weights[1]}")])
    return s


def test_set_definitions_as_opensips() -> None:
    assert parse_set_definition(f"1 == {A}=2 {B}") == (1, [(A, 2), (B, 1)])
    assert parse_set_definition(A) == (0, [(A, 1)])
    for bad in ("x == " + A, "1 ==", "udp:host", "udp:h:99999", "unix:/run/x.sock",
                f"{A}=w"):
        with pytest.raises(SetError):
            parse_set_definition(bad)


def test_weighted_choice_splits_calls_as_the_weights() -> None:
    s = two((1, 3))
    counts = Counter(s.select(1, f"call-{i}@host").url for i in range(20000))  # type: ignore[union-attr]
    # binomial n=20000, p=1/4: sd = 61; 5 sd = +-306
    assert abs(counts[A] - 5000) < 306
    assert s.home(1, "x") is s.select(1, "x")


def test_choice_is_a_function_of_the_call_and_sticks() -> None:
    s1, s2 = two(), two()  # two brokers, same set
    keys = [f"k{i}" for i in range(500)]
    assert [s1.select(1, k).url for k in keys] == [s2.select(1, k).url for k in keys]  # type: ignore[union-attr]


def test_disabling_moves_only_that_instances_calls() -> None:
    s = two((1, 1))
    keys = [f"k{i}" for i in range(1000)]
    before = {k: s.select(1, k).url for k in keys}  # type: ignore[union-attr]
    engine_a = s.find(1, A)
    assert engine_a is not None
    assert s.failed(engine_a, 100.0) == StatusChange(A, 1, False)
    assert s.failed(engine_a, 101.0) is None  # reported once
    after = {k: s.select(1, k).url for k in keys}  # type: ignore[union-attr]
    assert all(after[k] == B for k in keys)
    assert all(before[k] == B for k in keys if before[k] == B)
    assert s.home(1, keys[0]).url == before[keys[0]]  # type: ignore[union-attr]
    # the second failure (e.g. a recheck ping unanswered) pushes the recheck on
    assert s.due_rechecks(160.9) == [] and s.due_rechecks(161.0) == [engine_a]
    assert s.answered(engine_a) == StatusChange(A, 1, True)
    assert {k: s.select(1, k).url for k in keys} == before  # type: ignore[union-attr]


def test_mi_enable_disables_until_enabled_and_show_has_opensips_shape() -> None:
    s = two()
    found, changes = s.mi_enable(A, False)
    assert found and changes == [StatusChange(A, 1, False)]
    engine = s.find(1, A)
    assert engine is not None
    assert s.due_rechecks(1e12) == []  # never pinged back by itself
    assert s.answered(engine) is None  # a pong does not undo the operator
    assert s.show(0.0) == [{"Set": 1, "Nodes": [
        {"url": A, "index": 0, "disabled": 1, "weight": 1, "recheck_ticks": MAX_RECHECK_TICKS},
        {"url": B, "index": 1, "disabled": 0, "weight": 3, "recheck_ticks": 0}]}]
    assert s.mi_enable("udp:1.2.3.4:5", True) == (False, [])
    assert s.mi_enable(A, True, set_id=1) == (True, [StatusChange(A, 1, True)])
    assert s.select(1, "x") is not None


def test_reload_keeps_state_of_instances_still_defined() -> None:
    s = two()
    engine = s.find(1, A)
    assert engine is not None
    s.failed(engine, 0.0)
    s.load([(1, f"{A} {B}"), (2, "udp:127.0.0.1:2003")])
    assert s.find(1, A).disabled  # type: ignore[union-attr]
    assert sorted(s.sets) == [1, 2]
    assert [e.index for e in s.engines()] == [0, 1, 2]
    assert math.isclose(s.recheck_ticks(s.find(1, A), 30.0), 30)  # type: ignore[arg-type]


def test_no_instance_enabled_means_no_choice() -> None:
    s = two()
    for e in list(s.engines()):
        s.failed(e, 0.0)
    assert s.select(1, "x") is None and s.select(9, "x") is None


REPLY = json.loads((Path(__file__).parent / "fixtures" / "delete_with_mos.json").read_text())


def test_mos_statistics_as_opensips_rtpstat() -> None:
    assert rtpstat(REPLY, "MOS-average") == 40  # (44 + 36) // 2
    assert rtpstat(REPLY, "mos-min") == 36 and rtpstat(REPLY, "MOS-max") == 44
    assert rtpstat(REPLY, "MOS-min-at") == 3 and rtpstat(REPLY, "MOS-max-at") == 2
    assert rtpstat(REPLY, "MOS-average", "A") == 44  # A's SSRC reports B's clean stream
    assert rtpstat(REPLY, "MOS-average", "B") == 36  # B reports A's losses
    assert rtpstat(REPLY, "packetloss-max", "B") == 9
    assert rtpstat(REPLY, "MOS-average", "nobody") is None
    with pytest.raises(ValueError):
        rtpstat(REPLY, "MOS-median")


def test_call_stats_and_acc_extra() -> None:
    stats = call_stats(REPLY)
    assert (stats.mos_average, stats.mos_min, stats.mos_max) == (40, 36, 44)
    assert stats.packets_lost == 25 and stats.rtp_packets == 476 and stats.rtcp_packets == 8
    extra = stats.acc_extra()
    assert extra["mos_average"] == 40 and extra["packets_lost"] == 25
    assert stats.by_tag["B"]["mos_average"] == 36
    assert stats.rtpstat_line.startswith("RTP: 81872 bytes, 476 packets, 0 errors; RTCP:")


def test_no_rtcp_means_no_mos() -> None:
    empty = {"created": 1, "SSRC": {}, "totals": {"RTP": {"packets": 5, "bytes": 1,
                                                          "errors": 0}}}
    stats = call_stats(empty)
    assert stats.mos_average is None and stats.packets_lost is None
    assert "mos_average" not in stats.acc_extra() and stats.acc_extra()["rtp_packets"] == 5
    zeros = {"created": 1, "SSRC": {"1": {"average MOS": {"MOS": 0}}}}
    assert rtpstat(zeros, "MOS-average") is None  # 2.4: an all-zero average is NULL


def test_gateway_unites_rtpengine_show_of_several_brokers() -> None:
    from gateway.merging import merge_rtpengine_show

    node = {"url": A, "index": 0, "disabled": 0, "weight": 1, "recheck_ticks": 0}
    one = [{"Set": 0, "Nodes": [node, {**node, "url": B, "index": 1}]}]
    two = [{"Set": 0, "Nodes": [{**node, "disabled": 1, "recheck_ticks": 40},
                                {**node, "url": B, "index": 1}]},
           {"Set": 2, "Nodes": [{**node, "url": "udp:127.0.0.1:2003", "index": 2}]}]
    merged = merge_rtpengine_show([one, two])
    assert [s["Set"] for s in merged] == [0, 2]
    assert merged[0]["Nodes"][0] == {**node, "disabled": 1, "recheck_ticks": 40}
    assert len(merged[0]["Nodes"]) == 2
    assert merge_rtpengine_show([{"not": "a list"}]) is None
