"""Choosing a box by its HEARTBEAT load (services/freeswitch/balancing.py), fake clock."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.freeswitch.balancing import Balancer, BoxLoad, dispatcher_weight, lb_room


def box(name: str, sessions: int, maximum: int, idle: float, *, group: str = "media",
        up: bool = True, at: float | None = 0.0, sip: str | None = None) -> BoxLoad:
    return BoxLoad(id=name, group=group, sip_uri=sip if sip is not None else f"sip:{name}",
                   up=up, session_count=sessions, max_sessions=maximum, idle_cpu=idle,
                   heartbeat_at=at, stale_after=3.0)


def test_dispatcher_formula() -> None:
    # OpenSIPS dispatcher: 100 x (Idle-CPU/100) x (1 - Session-Count/Max-Sessions)
    assert dispatcher_weight(box("a", 10, 100, 90.0)) == pytest.approx(81.0)
    assert dispatcher_weight(box("a", 100, 100, 90.0)) == 0.0
    assert dispatcher_weight(box("a", 150, 100, 90.0)) == 0.0  # over capacity: no calls
    assert dispatcher_weight(box("a", 0, 0, 90.0)) == 0.0
    assert dispatcher_weight(box("a", 0, 10, 50.0), max_weight=10) == pytest.approx(5.0)


def test_load_balancer_formula() -> None:
    # (Idle-CPU/100) x (Max-Sessions - Session-Count) less the calls sent since
    assert lb_room(box("a", 40, 100, 50.0)) == pytest.approx(30.0)
    assert lb_room(box("a", 40, 100, 50.0), current_load=5) == pytest.approx(25.0)


def test_weighted_spread_is_exact_over_a_cycle() -> None:
    b = Balancer("weight")
    b.update([box("a", 10, 100, 90.0), box("b", 55, 100, 60.0), box("c", 70, 100, 40.0)])
    # weights 81, 27, 12: 120 calls = one cycle
    picks = [b.select("media", 1.0) for _ in range(120)]
    counts = {k: sum(1 for p in picks if p is not None and p.id == k) for k in "abc"}
    assert counts == {"a": 81, "b": 27, "c": 12}


def test_smooth_round_robin_interleaves() -> None:
    b = Balancer("weight")
    b.update([box("a", 0, 100, 50.0), box("b", 0, 100, 50.0)])
    picks = [b.select("media", 1.0).id for _ in range(6)]  # type: ignore[union-attr]
    assert picks in (["a", "b"] * 3, ["b", "a"] * 3)


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(1, 100), st.integers(1, 100)),
                min_size=1, max_size=5), st.integers(1, 400))
# Found by hypothesis once in a unit run: nginx's smooth round robin, used before, gave
# a box 2.9 calls instead of 1.8 here (random search found it only now and then).
@example([(0, 1, 25), (0, 1, 25), (0, 1, 25), (75, 77, 31), (75, 77, 36)], 132)
def test_each_share_within_one_call_of_its_proportion(
        loads: list[tuple[int, int, int]], calls: int) -> None:
    b = Balancer("weight")
    boxes = [box(f"b{i}", min(s, m), m, float(idle)) for i, (s, m, idle) in enumerate(loads)]
    b.update(boxes)
    weights = {x.id: dispatcher_weight(x) for x in boxes}
    total = sum(weights.values())
    picks: dict[str, int] = {}
    for _ in range(calls):
        chosen = b.select("media", 1.0)
        if total == 0:
            assert chosen is None
            return
        assert chosen is not None
        picks[chosen.id] = picks.get(chosen.id, 0) + 1
    # Tijdeman's bound: within 1 - 1/(2k - 2) of the exact share, k boxes with weight.
    k = sum(1 for w in weights.values() if w > 0)
    bound = 1.0 - 1.0 / (2 * k - 2) if k > 1 else 0.0
    for name, weight in weights.items():
        assert abs(picks.get(name, 0) - calls * weight / total) <= bound + 1e-9


def test_down_stale_and_sipless_boxes_are_skipped() -> None:
    b = Balancer("weight")
    b.update([box("down", 0, 100, 99.0, up=False), box("old", 0, 100, 99.0, at=-5.0),
              box("never", 0, 100, 99.0, at=None), box("nosip", 0, 100, 99.0, sip=""),
              box("ok", 90, 100, 10.0), box("other", 0, 100, 99.0, group="x")])
    assert {b.select("media", 1.0).id for _ in range(5)} == {"ok"}  # type: ignore[union-attr]
    assert b.select("nosuchgroup", 1.0) is None


def test_a_box_turns_stale_on_the_clock() -> None:
    b = Balancer("weight")
    b.update([box("a", 0, 100, 50.0, at=10.0)])
    assert b.select("media", 12.9) is not None
    assert b.select("media", 13.0) is None


def test_nothing_to_choose_when_every_box_is_full() -> None:
    b = Balancer("weight")
    b.update([box("a", 100, 100, 90.0), box("b", 5, 100, 0.0)])
    assert b.select("media", 1.0) is None


def test_a_returning_box_starts_again_from_its_weight() -> None:
    b = Balancer("weight")
    a, c = box("a", 0, 100, 50.0), box("c", 0, 100, 50.0)
    b.update([a, c])
    b.update([a, box("c", 0, 100, 50.0, up=False)])
    for _ in range(7):
        assert b.select("media", 1.0).id == "a"  # type: ignore[union-attr]
    b.update([a, c])
    picks = [b.select("media", 1.0).id for _ in range(10)]  # type: ignore[union-attr]
    assert picks.count("c") == 5  # no catch-up burst, no debt


def test_load_policy_sends_to_the_most_room_and_counts_its_own_calls() -> None:
    b = Balancer("load")
    b.update([box("a", 90, 100, 100.0), box("b", 80, 100, 50.0)])  # room 10 and 10
    picks = [b.select("media", 1.0) for _ in range(20)]
    assert sorted(p.id for p in picks if p) == ["a"] * 10 + ["b"] * 10
    assert b.select("media", 1.0) is None  # both full until new figures come
    b.update([box("a", 90, 100, 100.0, at=0.5), box("b", 80, 100, 50.0)])
    assert b.select("media", 1.0).id == "a"  # type: ignore[union-attr]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        Balancer("random")
