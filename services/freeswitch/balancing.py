"""Choosing a FreeSWITCH box for a call by its reported load, sans-IO (`now` passed in).

The figures are those of the box's last HEARTBEAT event: `Session-Count`, `Max-Sessions`
and `Idle-CPU` (percent).  Two policies, after OpenSIPS 2.4 (research: wave2-testbed §3,
opensips-features §7):

* `weight` -- dispatcher with `fetch_freeswitch_stats`: each box weighs
  `max_weight x (Idle-CPU / 100) x (1 - Session-Count / Max-Sessions)` and calls are
  shared in proportion to the weights.  OpenSIPS draws each call at random by weight;
  here the draw is Tijdeman's chairman assignment (see `Balancer.select`): over any run
  of picks each of k boxes gets within 1 - 1/(2k - 2) calls of its exact proportion,
  where a random draw of 300 calls strays by several percent: the spread the load asks
  for, and one that a test can hold to a tight bound.
* `load` -- load_balancer with `fetch_freeswitch_stats`: a box can take
  `(Idle-CPU / 100) x (Max-Sessions - (Session-Count - current_load))` calls and the call
  goes to the box with the most room left.  OpenSIPS' `current_load` is its own ongoing
  dialogs on the box; the edge keeps no dialogs, so here it counts the calls it sent the
  box since that box's last heartbeat (the calls the figures cannot include yet), and the
  room is `(Idle-CPU / 100) x (Max-Sessions - Session-Count) - current_load`.

A box is skipped when its ESL link is not up, when it has no SIP URI, when it has not
reported a heartbeat yet, or when its last heartbeat is older than its `stale_after`
(stale figures are worse than none: opensips#3468).  No usable box: `select` answers None
(the routing script decides: 503, another group, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

POLICIES = ("weight", "load")


@dataclass(frozen=True, slots=True)
class BoxLoad:
    """What the balancer knows of one box (times are on the caller's clock)."""

    id: str
    group: str
    sip_uri: str
    up: bool
    session_count: int = 0
    max_sessions: int = 0
    idle_cpu: float = 0.0
    heartbeat_at: float | None = None  # when the last HEARTBEAT was received; None: none
    stale_after: float = 60.0

    def fresh(self, now: float) -> bool:
        return self.heartbeat_at is not None and now - self.heartbeat_at < self.stale_after

    def usable(self, now: float) -> bool:
        return self.up and bool(self.sip_uri) and self.fresh(now)


def dispatcher_weight(box: BoxLoad, max_weight: float = 100.0) -> float:
    """OpenSIPS dispatcher: max_weight x idle x (1 - sessions / max), never below 0."""
    if box.max_sessions <= 0:
        return 0.0
    free = 1.0 - box.session_count / box.max_sessions
    return max(0.0, max_weight * (box.idle_cpu / 100.0) * free)


def lb_room(box: BoxLoad, current_load: int = 0) -> float:
    """OpenSIPS load_balancer's max_load less current_load, the edge's way (docstring)."""
    return (box.idle_cpu / 100.0) * (box.max_sessions - box.session_count) - current_load


class Balancer:
    """The edge's view of the boxes and its picks (one per worker; not thread-safe)."""

    def __init__(self, policy: str = "weight", max_weight: float = 100.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        self.policy = policy
        self.max_weight = max_weight
        self.boxes: dict[str, BoxLoad] = {}
        self._credit: dict[str, float] = {}  # share owed less calls given (select)
        self._sent: dict[str, int] = {}  # load policy: calls since the box's heartbeat
        self.picks: dict[str, int] = {}  # calls sent per box (statistics)

    def update(self, boxes: Iterable[BoxLoad]) -> None:
        """Replaces the view (the service sends every box each time)."""
        fresh = {b.id: b for b in boxes}
        for box_id, old in self.boxes.items():
            new = fresh.get(box_id)
            if new is None or new.heartbeat_at != old.heartbeat_at:
                # New figures include the calls sent before them (roughly): count afresh.
                self._sent.pop(box_id, None)
            if new is None:
                self._credit.pop(box_id, None)
        self.boxes = fresh

    def candidates(self, group: str, now: float) -> list[BoxLoad]:
        return [b for b in self.boxes.values() if b.group == group and b.usable(now)]

    def weights(self, group: str, now: float) -> dict[str, float]:
        """Each usable box's share of the next calls (policy `weight`), or its room
        (policy `load`)."""
        if self.policy == "weight":
            return {b.id: dispatcher_weight(b, self.max_weight)
                    for b in self.candidates(group, now)}
        return {b.id: lb_room(b, self._sent.get(b.id, 0)) for b in self.candidates(group, now)}

    def select(self, group: str, now: float) -> BoxLoad | None:
        """The box for the next call of `group`, or None when no box can take it."""
        boxes = self.candidates(group, now)
        if not boxes:
            return None
        if self.policy == "load":
            best = max(boxes, key=lambda b: (lb_room(b, self._sent.get(b.id, 0)), b.id))
            if lb_room(best, self._sent.get(best.id, 0)) <= 0:
                return None
            chosen = best
        else:
            weights = [(b, dispatcher_weight(b, self.max_weight)) for b in boxes]
            total = sum(w for _, w in weights)
            if total <= 0:
                return None
            credit = self._credit
            usable = {b.id for b in boxes}
            for box_id in [k for k in credit if k not in usable and (
                    k not in self.boxes or self.boxes[k].group == group)]:
                # A box out of the rotation (down, stale) comes back with no credit or
                # debt: its share starts again from its weight.
                del credit[box_id]
            # Tijdeman's chairman assignment (1980): every pick adds each box's share
            # p = weight / total to its credit (its exact proportion less the calls it
            # got); of the boxes whose credit reached sigma = 1 / (2k - 2), the one that
            # would fall behind first, the least (1 - sigma - credit) / p, is charged one
            # call.  Every box then stays within 1 - sigma of its proportion over any run
            # of picks (k boxes with weight).  nginx's smooth round robin, used before,
            # strays by more than one call (5 boxes, weights 25, 25, 25, 1.05, 2.1).
            shares = [(b, w / total) for b, w in weights if w > 0]
            sigma = 0.5 if len(shares) < 2 else 1.0 / (2 * len(shares) - 2)
            chosen, soonest = shares[0][0], None
            for box, share in shares:
                value = credit.get(box.id, 0.0) + share
                credit[box.id] = value
                if value >= sigma - 1e-9:
                    due = (1.0 - sigma - value) / share
                    if soonest is None or due < soonest:
                        soonest, chosen = due, box
            credit[chosen.id] -= 1.0
        self._sent[chosen.id] = self._sent.get(chosen.id, 0) + 1
        self.picks[chosen.id] = self.picks.get(chosen.id, 0) + 1
        return chosen
