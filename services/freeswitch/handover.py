"""Hand-over between two bridges across a rolling restart, sans-IO: which events the new
bridge republishes so that none is lost and none is raised twice.

FreeSWITCH keeps nothing for a listener that is gone (mod_event_socket): an event sent
while no bridge is connected is lost for good.  So a restart overlaps the two processes
(the supervisor starts the new bridge first, as Kubernetes' `maxSurge: 1` does):

1. the new bridge (the successor) finds another bridge in discovery when it starts and
   comes up in *standby*: it links to every box and subscribes, and keeps the events it
   receives, publishing none; it is ready once every box's link has answered its
   `event json` (from then on the box sends it every event the old one gets);
2. the old bridge, stopping, stops republishing at one instant and tells the successor,
   per box, the last event it handled: its `Mark` (the box's `Core-UUID` and
   `Event-Sequence`, FreeSWITCH's own numbering of the events it sends), with the
   Job-UUIDs of the `fs_bgapi` jobs it started;
3. the successor republishes what it kept after each mark (`after_marks`) and goes live.

If no hand-over comes (the old bridge was killed), the successor goes live once the old
one has been gone from discovery for `handover_timeout`, republishing all it kept:
events may then be raised twice, never lost (at least once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar


class _Event(Protocol):
    """What the rule reads of an ESL event (`services.freeswitch.esl.Event`)."""

    @property
    def name(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def sequence(self) -> int | None: ...

    @property
    def core_uuid(self) -> str: ...


E = TypeVar("E", bound=_Event)


@dataclass(frozen=True, slots=True)
class Mark:
    """The last event of one box that the old bridge handled."""

    core_uuid: str
    sequence: int

    def covers(self, event: _Event) -> bool:
        """The old bridge handled `event` (same FreeSWITCH run, not later).  An event of
        another run (the box restarted: its numbering began again) is not covered."""
        seq = event.sequence
        return seq is not None and event.core_uuid == self.core_uuid and seq <= self.sequence


def after_marks(kept: Iterable[tuple[str, E]], marks: Mapping[str, Mark],
                jobs: Iterable[str] = ()) -> list[tuple[str, E]]:
    """The (box, event) pairs the successor republishes, in the order received: every
    event its box's mark does not cover (a box without a mark: all of them), and the
    BACKGROUND_JOB of a job in `jobs` (the jobs the successor itself started, which the
    old bridge did not know and so did not republish)."""
    own = set(jobs)
    out = []
    for box, event in kept:
        mark = marks.get(box)
        if mark is None or not mark.covers(event) or (
                event.name == "BACKGROUND_JOB" and event.headers.get("Job-UUID", "") in own):
            out.append((box, event))
    return out


def encode_marks(marks: Mapping[str, Mark]) -> dict[str, dict[str, Any]]:
    """Marks as the `fs_handover` MI parameter carries them."""
    return {box: {"core_uuid": m.core_uuid, "sequence": m.sequence}
            for box, m in marks.items()}


def decode_marks(value: Any) -> dict[str, Mark]:
    """`fs_handover`'s `marks` back into Marks; ValueError on anything else."""
    if not isinstance(value, dict):
        raise ValueError("marks: an object of box -> {core_uuid, sequence}")
    marks = {}
    for box, item in value.items():
        if not isinstance(item, dict) or not isinstance(item.get("core_uuid"), str) or \
                not isinstance(item.get("sequence"), int) or isinstance(item["sequence"], bool):
            raise ValueError(f"marks[{box!r}]: {{core_uuid: string, sequence: integer}}")
        marks[str(box)] = Mark(item["core_uuid"], item["sequence"])
    return marks
