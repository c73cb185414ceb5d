"""Dispatcher to gateways (OpenSIPS ``dispatcher``), sans-IO: sets, algorithms, states,
the OPTIONS prober's decisions.

`DispatcherSets` is one loaded copy of SipMesh's ``dispatcher`` table
(:mod:`shared.store.edge_tables`): destinations grouped by set id, highest ``priority``
first (then the table's order). Each destination has OpenSIPS's state: *Active*,
*Inactive* (``ds_set_state i``: never selected nor probed) or *Probing* (failed: not
selected, probed until it answers). Only Active destinations are selected.

`select(set, alg, keys)` is ``ds_select_dst(set, alg)``: the chosen destination first,
then the other Active ones in set order after it (what ``ds_next_dst`` walks in
``failure_route``). Algorithms (OpenSIPS 2.4 numbers):

====  =====================================================================
0     hash over the Call-ID
1     hash over the From URI
2     hash over the To URI
3     hash over the Request-URI
4     round-robin (per set)
5     hash over the authenticated user name (Call-ID when there is none)
6     "random": here a hash of the Call-ID, so one call keeps its choice
8     the first Active destination (priority order)
9     weight-based: Call-IDs spread over the destinations in proportion to
      their weights (a destination of weight 0 is never first)
====  =====================================================================

The hash is CRC-32 of the text, modulo the number of Active destinations (OpenSIPS hashes
over the Active ones too, so a destination going down moves only its own calls).

Probing (OpenSIPS ``ds_ping_interval``, ``ds_probing_mode``, ``options_reply_codes``,
``ds_probing_threshhold``): `due(now)` names the destinations to send OPTIONS to every
``interval`` s -- the Probing ones (mode 0), or every one not Inactive (mode 1);
`probe_result(set, uri, code)` makes a destination Active on 200 or an allowed code, and,
in mode 1, Probing on anything else; `mark_failed` (``ds_mark_dst("p")``, from
``failure_route``) counts a failure and turns the destination Probing at the threshold.
Every state change is returned as a `Change` (raised as ``E_DISPATCHER_STATUS`` by the
adapter).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.sip import SipParseError, parse_uri
from shared.store.edge_tables import Destination

ACTIVE, INACTIVE, PROBING = 0, 1, 2
STATE_NAMES = {ACTIVE: "Active", INACTIVE: "Inactive", PROBING: "Probing"}
MI_STATES = {"a": ACTIVE, "i": INACTIVE, "p": PROBING}
ALGORITHMS = (0, 1, 2, 3, 4, 5, 6, 8, 9)
PARTITION = "default"


class DispatcherError(ValueError):
    """An unknown set, destination, algorithm or state."""


@dataclass(slots=True)
class Dest:
    setid: int
    uri: str
    state: int = ACTIVE
    weight: int = 1
    priority: int = 0
    socket: str = ""
    attrs: str = ""
    description: str = ""
    chosen: int = 0  # OpenSIPS first_hit_counter
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    setid: int
    uri: str
    state: int

    @property
    def status(self) -> str:
        return "active" if self.state == ACTIVE else "inactive"


@dataclass(slots=True)
class DsSet:
    setid: int
    dests: list[Dest] = field(default_factory=list)
    rr: int = 0


def _hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "replace"))


class DispatcherSets:
    """See the module docstring."""

    def __init__(self, rows: Iterable[Destination] = (), *, interval: float = 10.0,
                 mode: int = 0, reply_codes: Iterable[int] = (), threshold: int = 1,
                 now: float = 0.0) -> None:
        self.sets: dict[int, DsSet] = {}
        self.interval = interval
        self.mode = mode
        self.reply_codes = frozenset(reply_codes)
        self.threshold = max(1, threshold)
        self._next_probe = now
        self.skipped: list[tuple[Destination, str]] = []
        self.load(rows)

    def load(self, rows: Iterable[Destination]) -> None:
        """Replaces the sets (``ds_reload``); a destination still there keeps its state
        and counters, a new one takes the table's state."""
        old = {(d.setid, d.uri): d for s in self.sets.values() for d in s.dests}
        sets: dict[int, DsSet] = {}
        self.skipped = []
        for row in sorted(rows, key=lambda r: (r.setid, -r.priority)):
            try:
                parse_uri(row.destination)
            except (SipParseError, ValueError) as exc:  # OpenSIPS refuses such a row too
                self.skipped.append((row, str(exc)))
                continue
            kept = old.get((row.setid, row.destination))
            dest = Dest(row.setid, row.destination, row.state if row.state in STATE_NAMES
                        else ACTIVE, max(0, row.weight), row.priority, row.socket, row.attrs,
                        row.description)
            if kept is not None:
                dest.state, dest.chosen, dest.failures = kept.state, kept.chosen, kept.failures
            sets.setdefault(row.setid, DsSet(row.setid)).dests.append(dest)
        self.sets = sets

    # -- selection -------------------------------------------------------------------------
    def select(self, setid: int, alg: int, keys: Mapping[str, str]) -> list[Dest]:
        """``ds_select_dst``: the chosen destination first, then the failover order; []
        when the set has no Active destination. ``keys``: ``callid``, ``from``, ``to``,
        ``ruri``, ``user`` (the texts the hashing algorithms read)."""
        if alg not in ALGORITHMS:
            raise DispatcherError(f"unknown dispatcher algorithm {alg}")
        found = self.sets.get(setid)
        if found is None:
            raise DispatcherError(f"no dispatcher set {setid}")
        active = [d for d in found.dests if d.state == ACTIVE]
        if not active:
            return []
        n = len(active)
        callid = keys.get("callid", "")
        if alg == 0 or alg == 6:
            index = _hash(callid) % n
        elif alg == 1:
            index = _hash(keys.get("from", "")) % n
        elif alg == 2:
            index = _hash(keys.get("to", "")) % n
        elif alg == 3:
            index = _hash(keys.get("ruri", "")) % n
        elif alg == 4:
            index = found.rr % n
            found.rr = (found.rr + 1) % (1 << 30)
        elif alg == 5:
            index = _hash(keys.get("user") or callid) % n
        elif alg == 8:
            index = 0
        else:  # 9: weight-based
            total = sum(d.weight for d in active)
            if total <= 0:
                index = _hash(callid) % n
            else:
                point = _hash(callid) % total
                index = 0
                for i, d in enumerate(active):
                    if point < d.weight:
                        index = i
                        break
                    point -= d.weight
        ordered = active[index:] + active[:index]
        ordered[0].chosen += 1
        return ordered

    # -- states ----------------------------------------------------------------------------
    def find(self, setid: int, uri: str) -> Dest | None:
        found = self.sets.get(setid)
        if found is None:
            return None
        return next((d for d in found.dests if d.uri == uri), None)

    def set_state(self, setid: int, uri: str, state: int) -> Change | None:
        """``ds_set_state``; DispatcherError for an unknown destination; the change (None
        when the state was already that)."""
        dest = self.find(setid, uri)
        if dest is None:
            raise DispatcherError(f"destination {uri} not found in set {setid}")
        return self._set(dest, state)

    def _set(self, dest: Dest, state: int) -> Change | None:
        if state == ACTIVE:
            dest.failures = 0
        if dest.state == state:
            return None
        dest.state = state
        return Change(dest.setid, dest.uri, state)

    def mark_failed(self, setid: int, uri: str) -> Change | None:
        """``ds_mark_dst("p")``: one more failure; Probing at the threshold."""
        dest = self.find(setid, uri)
        if dest is None or dest.state == INACTIVE:
            return None
        dest.failures += 1
        if dest.failures >= self.threshold:
            return self._set(dest, PROBING)
        return None

    # -- probing -----------------------------------------------------------------------------
    def due(self, now: float) -> list[Dest]:
        """The destinations to send an OPTIONS to now (at most once per interval)."""
        if self.interval <= 0 or now < self._next_probe:
            return []
        self._next_probe = now + self.interval
        return [d for s in self.sets.values() for d in s.dests
                if d.state != INACTIVE and (self.mode == 1 or d.state == PROBING)]

    def probe_result(self, setid: int, uri: str, code: int) -> Change | None:
        dest = self.find(setid, uri)
        if dest is None or dest.state == INACTIVE:
            return None  # reloaded away, or disabled meanwhile
        if code == 200 or code in self.reply_codes:
            return self._set(dest, ACTIVE)
        if self.mode == 1 or dest.state == PROBING:
            dest.failures += 1
            return self._set(dest, PROBING)
        return None

    # -- MI ----------------------------------------------------------------------------------
    def mi_list(self, full: bool = False) -> dict[str, Any]:
        """``ds_list [full]`` in OpenSIPS 3's shape."""
        sets = []
        for setid in sorted(self.sets):
            dests = []
            for d in self.sets[setid].dests:
                item: dict[str, Any] = {"URI": d.uri, "state": STATE_NAMES[d.state],
                                        "first_hit_counter": d.chosen}
                if d.socket:
                    item["socket"] = d.socket
                if d.attrs:
                    item["attr"] = d.attrs
                if full:
                    item["weight"] = d.weight
                    item["priority"] = d.priority
                    if d.description:
                        item["description"] = d.description
                dests.append(item)
            sets.append({"id": setid, "Destinations": dests})
        return {"PARTITIONS": [{"name": PARTITION, "SETS": sets}]}


# -- the routing API (ctx.dispatch, ctx.dispatch_next, ctx.ds_mark_dst) ------------------------
@dataclass(slots=True)
class RouteDispatch:
    """What `ctx.dispatch` chose for one transaction: the set's failover order."""

    setid: int
    candidates: list[Dest]
    index: int = 0

    @property
    def current(self) -> Dest:
        return self.candidates[self.index]


def _service(ctx: Any) -> Any:
    service = ctx.services.get("dispatcher")
    if service is None:
        raise DispatcherError("no dispatcher in this edge ([edge] ds_db is none)")
    return service


def route_dispatch(ctx: Any, setid: int, alg: int) -> str | None:
    service = _service(ctx)
    request = ctx.request
    keys = {"callid": request.call_id, "from": _uri_of(request.get("From")),
            "to": _uri_of(request.get("To")), "ruri": request.uri, "user": ctx.user or ""}
    candidates = service.sets.select(setid, alg, keys)
    if not candidates:
        return None
    ctx._ds = RouteDispatch(setid, candidates)
    uri: str = candidates[0].uri
    ctx.forward(next_hop=uri)
    return uri


def route_dispatch_next(ctx: Any) -> str | None:
    state: RouteDispatch | None = ctx._ds
    if state is None:
        raise DispatcherError("dispatch_next() without a dispatch() before it")
    while state.index + 1 < len(state.candidates):
        state.index += 1
        dest = state.current
        if dest.state == ACTIVE:  # marked down meanwhile: skip it
            ctx.forward(next_hop=dest.uri)
            return dest.uri
    return None


def route_mark(ctx: Any, state: str) -> None:
    chosen: RouteDispatch | None = ctx._ds
    if chosen is None:
        raise DispatcherError("ds_mark_dst() without a dispatch() before it")
    service = _service(ctx)
    code = MI_STATES.get(state.lower()[:1])
    if code is None:
        raise DispatcherError(f"bad state {state!r}: a, i or p")
    dest = chosen.current
    if code == PROBING:
        change = service.sets.mark_failed(dest.setid, dest.uri)
    else:
        change = service.sets.set_state(dest.setid, dest.uri, code)
    if change is not None:
        service.changed(change)


def _uri_of(value: str | None) -> str:
    """The URI of a From/To value (`"A" <sip:a@b>;tag=x` -> `sip:a@b`)."""
    if not value:
        return ""
    if "<" in value and ">" in value:
        return value[value.index("<") + 1:value.index(">")]
    return value.split(";", 1)[0].strip()
