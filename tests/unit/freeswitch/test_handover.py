"""The hand-over rule between two bridges (services/freeswitch/handover.py): what the
successor republishes after the old bridge's marks, so nothing is lost or raised twice."""

from __future__ import annotations

import pytest

from services.freeswitch.esl import Event
from services.freeswitch.handover import Mark, after_marks, decode_marks, encode_marks

CORE = "c0re-1"


def ev(seq: int, name: str = "CUSTOM", core: str = CORE, **headers: str) -> Event:
    return Event(name, {"Event-Name": name, "Core-UUID": core,
                        "Event-Sequence": str(seq), **headers}, "", "{}")


def seqs(pairs: list[tuple[str, Event]]) -> list[tuple[str, int | None]]:
    return [(box, e.sequence) for box, e in pairs]


def test_only_what_the_old_bridge_had_not_handled_is_republished() -> None:
    kept = [("a", ev(5)), ("a", ev(6)), ("a", ev(7)), ("b", ev(40)), ("b", ev(41))]
    out = after_marks(kept, {"a": Mark(CORE, 6), "b": Mark(CORE, 41)})
    assert seqs(out) == [("a", 7)]


def test_a_box_the_old_bridge_never_heard_from_is_republished_whole() -> None:
    kept = [("a", ev(1)), ("a", ev(2))]
    assert seqs(after_marks(kept, {})) == [("a", 1), ("a", 2)]
    assert seqs(after_marks(kept, {"other": Mark(CORE, 9)})) == [("a", 1), ("a", 2)]


def test_events_of_a_restarted_box_are_not_covered_by_its_old_numbering() -> None:
    kept = [("a", ev(3, core="c0re-2")), ("a", ev(900))]
    assert seqs(after_marks(kept, {"a": Mark(CORE, 1000)})) == [("a", 3)]


def test_the_successors_own_job_results_are_republished_even_if_covered() -> None:
    mine = ev(5, "BACKGROUND_JOB", **{"Job-UUID": "job-mine"})
    theirs = ev(6, "BACKGROUND_JOB", **{"Job-UUID": "job-theirs"})
    out = after_marks([("a", mine), ("a", theirs), ("a", ev(7))], {"a": Mark(CORE, 7)},
                      jobs=["job-mine"])
    assert seqs(out) == [("a", 5)]


def test_an_event_without_a_sequence_is_never_covered() -> None:
    bare = Event("CUSTOM", {"Event-Name": "CUSTOM", "Core-UUID": CORE}, "", "{}")
    assert after_marks([("a", bare)], {"a": Mark(CORE, 10)}) == [("a", bare)]


def test_marks_round_trip_through_mi_and_bad_ones_are_refused() -> None:
    marks = {"127.0.0.1:8021": Mark(CORE, 12)}
    assert decode_marks(encode_marks(marks)) == marks
    bads: list[object] = [[], {"a": {"core_uuid": CORE}}, {"a": {"core_uuid": 1, "sequence": 2}},
                {"a": {"core_uuid": CORE, "sequence": True}}]
    for bad in bads:
        with pytest.raises(ValueError):
            decode_marks(bad)
