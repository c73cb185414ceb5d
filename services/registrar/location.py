"""User location: REGISTER processing of RFC 3261 §10.3 on an in-memory table, sans-IO.

`Location.save(request, origin, now)` applies one (already authenticated) REGISTER and
answers what the 200 (or error) response carries; `lookup(aor, method, now)` gives the
usable bindings, q-ordered.  No sockets, no clock: `now` is wall-clock seconds passed in,
so expiry is tested on a fake clock.  Every change comes back as a `Change` (insert,
update, delete of a binding; AOR created/emptied) so the service raises the OpenSIPS
events and replicates to its cluster from one list.

Save, in the order of §10.3:
  * To must be a SIP/SIPS URI with a user part: the AOR is `user@host` (400 otherwise);
  * `Contact: *` needs `Expires: 0` and no other contact (step 6, 400 otherwise) and removes
    every binding unless one of them has the same Call-ID and a CSeq not lower (400);
  * each contact's expiry is its `expires` parameter, else the Expires header, else
    `default_expires`; 0 < e < `min_expires` rejects the whole request with 423 and
    Min-Expires (§10.3 step 7, §20.23); above `max_expires` it is lowered;
  * a binding is the same binding when the `+sip.instance` and `reg-id` contact
    parameters agree (RFC 5626 §6), the instance alone (RFC 5627), or else when the URIs
    are equivalent (§19.1.4);
  * an existing binding with the same Call-ID and a CSeq not higher than stored aborts the
    request (§10.3 step 7: "the update MUST be aborted"; 400 Invalid CSeq as OpenSIPS);
  * a retried Save (`replay`: the edge sent this REGISTER to another registrar first, which
    went away without answering) takes a binding with the same Call-ID and the same CSeq
    as its own effect, replicated from there: that contact is left as is and counted in
    the 200 (the answer the first registrar would have sent), not refused as a replay;
    a lower stored CSeq is updated and a higher one still aborts it;
  * the request is checked as a whole before anything changes (no partial update);
  * contact parameters (`expires`, `q`, `+sip.instance`, `reg-id`, `methods`, others) are
    kept apart from URI parameters: the stored URI is the URI exactly as written;
  * NAT: when the packet's source differs from the Contact's host:port (over TCP: its
    host, or any RFC 5626 flow), the binding keeps `received` (`sip:ip:port;transport=..`)
    and requests are sent there;
  * Path (RFC 3327): stored and returned in the 200 when the UA said `Supported: path`;
  * the 200 lists every current binding with its remaining expiry (§10.3 step 8).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from email.utils import formatdate
from operator import attrgetter

from shared.sip import NameAddr, Request, SipParseError, Uri, parse_uri

# OpenSIPS's method bits (parser/msg_parser.h METHOD_*), used by `Methods` in ul_dump.
METHOD_BITS = {
    "INVITE": 1, "CANCEL": 2, "ACK": 4, "BYE": 8, "INFO": 16, "OPTIONS": 32, "UPDATE": 64,
    "REGISTER": 128, "MESSAGE": 256, "SUBSCRIBE": 512, "NOTIFY": 1024, "PRACK": 2048,
    "REFER": 4096, "PUBLISH": 8192,
}
OTHER_METHOD = 16384
ALL_METHODS = 0xFFFFFFFF
Q_UNSPECIFIED = -1
_KNOWN_CONTACT_PARAMS = frozenset({"expires", "q", "+sip.instance", "reg-id", "methods"})
_URI_MEMO = 4096  # parsed contact URIs kept by Location._contact_uri


@dataclass(frozen=True)
class LocationConfig:
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 0  # 0 = no maximum
    max_contacts: int = 0  # per AOR; 0 = unlimited


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the REGISTER came from: the packet's source and the edge socket it used."""

    host: str
    port: int
    transport: str = "udp"
    socket: str = ""


@dataclass(slots=True)
class Binding:
    """One contact of an AOR (OpenSIPS ucontact)."""

    aor: str
    uri: str
    expires: int  # absolute unix time; 0 = permanent (ul_add with expires 0)
    q: int = Q_UNSPECIFIED  # 0..1000, OpenSIPS qvalue
    callid: str = ""
    cseq: int = 0
    received: str = ""
    path: tuple[str, ...] = ()
    instance: str = ""
    reg_id: int = 0
    user_agent: str = ""
    socket: str = ""
    methods: int = ALL_METHODS
    flags: int = 0
    cflags: int = 0
    attr: str = ""
    params: str = ""  # other contact parameters, as written (";a=b;c")
    latency: int = 0
    last_modified: float = 0.0

    @property
    def key(self) -> str:
        """Identity of the binding inside its AOR (replication and removal)."""
        if self.instance:
            return f"{self.instance}|{self.reg_id}"
        return self.uri

    @property
    def contact_id(self) -> int:
        digest = hashlib.blake2b(f"{self.aor}|{self.key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") >> 1

    def is_utf8(self) -> bool:
        """Every text of the binding is UTF-8 (no lone surrogate kept from undecodable
        bytes): only such a binding can be answered over gRPC, dumped as JSON or stored."""
        try:
            for text in (self.aor, self.uri, self.callid, self.received, self.instance,
                         self.user_agent, self.socket, self.attr, self.params, *self.path):
                text.encode("utf-8")
        except (UnicodeEncodeError, AttributeError):  # AttributeError: not text at all
            return False
        return True

    def remaining(self, now: float) -> int:
        return max(int(self.expires - now), 0)

    def alive(self, now: float) -> bool:
        return self.expires == 0 or self.expires > now

    def allows(self, method: str) -> bool:
        if not method or self.methods == ALL_METHODS:
            return True
        return bool(self.methods & METHOD_BITS.get(method.upper(), OTHER_METHOD))

    def q_text(self) -> str:
        """OpenSIPS q2str: "" when unspecified, else 0.5, 1, 0.25 ..."""
        if self.q == Q_UNSPECIFIED:
            return ""
        if self.q >= 1000:
            return "1"
        return ("0." + f"{self.q:03d}").rstrip("0").rstrip(".") or "0"

    def next_hop(self) -> str:
        """Where requests for this binding are sent first: the first Path hop, else the NAT
        address (RFC 3327 §5.3: with a Path, `received` is the outbound proxy's address).

        The whole Path vector goes with the branch as its Route set (`path`); this is the
        hop alone, for a client that does not use the route.  Save refuses a Path value that
        does not parse; one that came another way (a replica, an older SQL row) gives ""
        rather than failing the lookup: the branch fails on its Route.
        """
        if self.path:
            try:
                return _route_uri(self.path[0])
            except SipParseError:
                return ""
        return self.received

    def contact_value(self, now: float) -> str:
        """This binding as a Contact of a 200 to REGISTER (§10.3 step 8)."""
        out = f"<{self.uri}>;expires={self.remaining(now) if self.expires else 0}"
        if self.q != Q_UNSPECIFIED:
            out += f";q={self.q_text()}"
        if self.instance:
            out += f";+sip.instance={self.instance}"
            if self.reg_id:
                out += f";reg-id={self.reg_id}"
        return out


# Every field but those a refresh changes (Location._update): one C-level getter, no copy.
_REFRESH_SAME = attrgetter(*(f.name for f in fields(Binding)
                             if f.name not in ("expires", "cseq", "last_modified")))


@dataclass(frozen=True, slots=True)
class Change:
    """One change of the table: kind is insert, update, refresh or delete."""

    kind: str
    binding: Binding
    aor_created: bool = False
    aor_deleted: bool = False


@dataclass(slots=True)
class SaveResult:
    status: int
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


@dataclass(slots=True)
class Plan:
    """A REGISTER's changes, checked and not applied (`Location.plan`): (old, new)
    pairs, new None = remove old, old None = a new binding; `before` is the AOR's list of
    bindings it was planned on (the same objects must be there to apply it)."""

    aor: str
    request: Request
    now: float
    before: tuple[Binding, ...]
    planned: list[tuple[Binding | None, Binding | None]]
    path: tuple[str, ...] = ()  # Path values echoed in the 200 (RFC 3327)

    def writes(self) -> tuple[list[Binding], list[tuple[str, str]]]:
        """(bindings to upsert, (aor, key) rows to delete), as `_persist` of its changes
        would note them."""
        ups = [new for _, new in self.planned if new is not None]
        dels = [(old.aor, old.key) for old, new in self.planned
                if new is None and old is not None]
        return ups, dels


class RegisterError(Exception):
    def __init__(self, status: int, reason: str,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = list(headers)


def _route_uri(path_value: str) -> str:
    from shared.sip import parse_name_addr

    return str(parse_name_addr(path_value, "Path").uri)


def aor_of(uri: Uri) -> str:
    """`user@host` (host lower-cased), as OpenSIPS with use_domain; raises RegisterError."""
    if not uri.is_sip:
        raise RegisterError(400, "Bad To URI: not a SIP or SIPS URI")
    if not uri.user:
        raise RegisterError(400, "Bad To URI: no user part")
    return f"{uri.user}@{uri.host.lower()}"


def parse_aor(text: str) -> str:
    """An AOR given by an operator: `user@domain` or a sip: URI."""
    text = text.strip()
    if ":" not in text.split("@", 1)[0]:
        text = "sip:" + text
    try:
        uri = parse_uri(text, "AOR")
    except SipParseError as exc:
        raise RegisterError(400, f"Bad AOR: {exc.detail or exc}") from None
    return aor_of(uri)


def parse_q(value: str | None) -> int:
    if value is None:
        return Q_UNSPECIFIED
    try:
        q = float(value)
    except ValueError:
        raise RegisterError(400, "Bad q value") from None
    if not 0.0 <= q <= 1.0:
        raise RegisterError(400, "Bad q value")
    return round(q * 1000)


def _int_param(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        raise RegisterError(400, f"Bad {what}")
    return int(value)


def _methods(value: str | None, allow: list[str]) -> int:
    names = [m.strip().strip('"') for m in value.split(",")] if value else allow
    if not names:
        return ALL_METHODS
    bits = 0
    for name in names:
        if name:
            bits |= METHOD_BITS.get(name.upper(), OTHER_METHOD)
    return bits or ALL_METHODS


class Location:
    """The user location table of one node (OpenSIPS usrloc domain `location`)."""

    def __init__(self, config: LocationConfig | None = None, table: str = "location") -> None:
        self.config = config or LocationConfig()
        self.table = table
        self.records: dict[str, list[Binding]] = {}
        self._date_cache: tuple[int, str] = (-1, "")
        self._uris: dict[str, Uri | None] = {}  # _contact_uri
        # The expiry index (`expire`): (expires, n, binding) for every binding with an
        # expiry that entered the table through `_insert`/`_update`, in a heap; entries of
        # bindings since replaced or removed are stale and dropped when they come up.  It
        # is for the `records` dict it was built on (`_due_for`): a table assigned whole
        # (replaced by a caller) is indexed again at the next sweep.
        self._due: list[tuple[float, int, Binding]] = []
        self._due_for: dict[str, list[Binding]] | None = self.records
        self._due_size = 0  # entries after the last rebuild (compaction threshold)
        self._due_n = itertools.count()

    # -- REGISTER (§10.3) ------------------------------------------------------------------
    def save(self, request: Request, origin: Origin, now: float, *,
             replay: bool = False) -> SaveResult:
        try:
            return self._save(request, origin, now, replay)
        except (RegisterError, SipParseError) as exc:
            return _refusal(exc)

    def _save(self, request: Request, origin: Origin, now: float, replay: bool) -> SaveResult:
        result = self._apply(self._plan(request, origin, now, replay))
        assert result is not None  # nothing could change the table in between
        return result

    def plan(self, request: Request, origin: Origin, now: float, *,
             replay: bool = False) -> Plan | SaveResult:
        """What `save` would change, checked but not applied (a SaveResult: the error
        answer, nothing to change).  `apply` makes it so, if the AOR's bindings are still
        those it was planned on; `Plan.writes` are the rows it stores.  The registrar
        stores a plan's rows in the trip that checks the digest, before applying it
        (usrloc.UserLocation.save_batch_with_digest)."""
        try:
            return self._plan(request, origin, now, replay)
        except (RegisterError, SipParseError) as exc:
            return _refusal(exc)

    def apply(self, plan: Plan) -> SaveResult | None:
        """`plan` applied: its 200 with its changes; None (nothing done) when the AOR's
        bindings changed since it was planned (it is stale: save the request again)."""
        return self._apply(plan)

    def _apply(self, plan: Plan) -> SaveResult | None:
        aor, now = plan.aor, plan.now
        bindings = self.records.get(aor, ())
        if len(bindings) != len(plan.before) or any(
                a is not b for a, b in zip(bindings, plan.before, strict=True)):
            return None
        changes: list[Change] = []
        for old, new in plan.planned:
            if new is None:
                if old is not None:
                    changes.append(self._delete(old))
                continue
            new.last_modified = now
            if old is None:
                changes.append(self._insert(new))
            else:
                changes.append(self._update(old, new))
        result = self._ok(plan.request, aor, now, changes)
        if plan.path:
            result.headers.extend(("Path", p) for p in plan.path)
        return result

    def _plan(self, request: Request, origin: Origin, now: float, replay: bool) -> Plan:
        if request.method != "REGISTER":
            raise RegisterError(400, "Not a REGISTER")
        aor = aor_of(request.to_addr.uri)
        callid = request.call_id
        cseq = request.cseq.number
        header_expires = _int_param(request.get("Expires"), "Expires")
        before = tuple(self.records.get(aor, ()))
        current = [b for b in before if b.alive(now)]
        if request.is_star_contact:
            if header_expires != 0:
                raise RegisterError(400, "Contact: * needs Expires: 0")
            for b in current:
                # A replayed `*` removes what is left, as the first attempt did.
                if b.callid == callid and (cseq < b.cseq if replay else cseq <= b.cseq):
                    raise RegisterError(400, "Invalid CSeq number")
            return Plan(aor, request, now, before, [(b, None) for b in current])

        contacts = request.contacts
        allow = [m.strip() for m in request.get_all("Allow") if m.strip()]
        ua = (request.get("User-Agent") or "")[:255]
        supported = {s.strip().lower() for s in request.get_all("Supported")}
        path = tuple(request.get_all("Path"))
        for value in path:
            _route_uri(value)  # RFC 3327: each a name-addr; a malformed one is a 400 here,
            # not a binding that no call can be routed along later
        # First pass: check everything (no partial update).
        planned: list[tuple[Binding | None, Binding | None]] = []  # (old, new or None=remove)
        for na in contacts:
            wanted = self._binding_from(na, aor, request, origin, header_expires, now,
                                        callid, cseq, ua, allow, path)
            old = self._match(current, wanted)
            if old is not None and old.callid == callid and cseq <= old.cseq:
                if not (replay and cseq == old.cseq):
                    raise RegisterError(400, "Invalid CSeq number")
                continue  # this very REGISTER's binding, made by the first registrar
            planned.append((old, wanted if wanted.expires else None))
        max_contacts = self.config.max_contacts
        if max_contacts:
            count = len(current) + sum(1 for old, new in planned if old is None and new)
            count -= sum(1 for old, new in planned if old is not None and new is None)
            if count > max_contacts:
                raise RegisterError(503, "Too many registered contacts")
        for old, new in planned:  # as stored (the second pass, `_apply`, sets them again)
            if new is not None:
                new.last_modified = now
                if old is not None:
                    new.latency = old.latency
        return Plan(aor, request, now, before, planned,
                    path if path and "path" in supported else ())

    def _binding_from(self, na: NameAddr, aor: str, request: Request, origin: Origin,
                      header_expires: int | None, now: float, callid: str, cseq: int,
                      ua: str, allow: list[str], path: tuple[str, ...]) -> Binding:
        params = na.params
        expires = _int_param(params.get("expires"), "contact expires")
        if expires is None:
            expires = header_expires if header_expires is not None else \
                self.config.default_expires
        cfg = self.config
        if 0 < expires < cfg.min_expires:
            raise RegisterError(423, "Interval Too Brief",
                                [("Min-Expires", str(cfg.min_expires))])
        if cfg.max_expires and expires > cfg.max_expires:
            expires = cfg.max_expires
        if not na.uri.is_sip and na.uri.scheme != "tel":
            raise RegisterError(400, "Bad Contact URI")
        instance = params.get("+sip.instance") or ""
        reg_id = _int_param(params.get("reg-id"), "reg-id") or 0
        extra = "".join(f";{k}" if v is None else f";{k}={v}"
                        for k, v in params.items() if k.lower() not in _KNOWN_CONTACT_PARAMS)
        return Binding(
            aor=aor, uri=str(na.uri), expires=math.ceil(now) + expires if expires else 0,
            q=parse_q(params.get("q")), callid=callid, cseq=cseq,
            received=self._received(na.uri, origin, bool(instance and reg_id)), path=path,
            instance=instance,
            reg_id=reg_id, user_agent=ua, socket=origin.socket,
            methods=_methods(params.get("methods"), allow), params=extra,
        )

    @staticmethod
    def _received(uri: Uri, origin: Origin, flow: bool = False) -> str:
        """`sip:src:port;transport=..` when the packet came from elsewhere than the
        Contact says (a NAT in between), else "".  Over TCP the source port is always an
        ephemeral one, so only the address counts -- unless the UA asked for its flow to
        be reused (RFC 5626 reg-id): then the connection's address is kept."""
        if not origin.host:
            return ""
        same_host = uri.host.strip("[]").lower() == origin.host.lower()
        if origin.transport == "udp":
            port = uri.port or (5061 if uri.scheme == "sips" else 5060)
            if same_host and port == origin.port:
                return ""
        elif same_host and not flow:
            return ""
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        tp = "" if origin.transport == "udp" else f";transport={origin.transport}"
        return f"sip:{host}:{origin.port}{tp}"

    def _match(self, current: list[Binding], wanted: Binding) -> Binding | None:
        if wanted.instance:
            for b in current:
                if b.instance == wanted.instance and b.reg_id == wanted.reg_id:
                    return b
            return None
        if all(b.instance for b in current):
            return None  # nothing to compare with: no parsing (a first registration)
        uri = self._contact_uri(wanted.uri)
        if uri is None:
            return None
        for b in current:
            if b.instance:
                continue
            if b.uri == wanted.uri:
                return b
            other = self._contact_uri(b.uri)
            if other is not None and other.equivalent(uri):
                return b
        return None

    def _contact_uri(self, text: str) -> Uri | None:
        """`parse_uri(text)` (None when it does not parse), remembered: every REGISTER of an
        AOR compares the contact with each stored binding's URI (§19.1.4), so the same few
        texts come back again and again.  Bounded; the parsed URIs are only compared."""
        try:
            return self._uris[text]
        except KeyError:
            pass
        try:
            uri: Uri | None = parse_uri(text, "Contact")
        except SipParseError:
            uri = None
        if len(self._uris) >= _URI_MEMO:
            self._uris.clear()
        self._uris[text] = uri
        return uri

    def _ok(self, request: Request, aor: str, now: float,
            changes: list[Change]) -> SaveResult:
        headers = [("Contact", b.contact_value(now)) for b in self.lookup(aor, "", now)]
        headers.append(("Date", self._date(now)))
        return SaveResult(200, "OK", headers, changes)

    def _date(self, now: float) -> str:
        """The Date header value (RFC 1123), formatted once per second."""
        second = math.floor(now)
        if self._date_cache[0] != second:
            # RFC 1123 date, locale-independent, computed from `now` (no clock read).
            self._date_cache = (second, formatdate(second, usegmt=True))
        return self._date_cache[1]

    # -- table primitives (also used by MI and replication) --------------------------------
    def _insert(self, b: Binding) -> Change:
        bindings = self.records.get(b.aor)
        created = bindings is None
        if bindings is None:
            bindings = self.records[b.aor] = []
        bindings.append(b)
        self._index(b)
        return Change("insert", b, aor_created=created)

    def _update(self, old: Binding, new: Binding) -> Change:
        bindings = self.records[old.aor]
        bindings[bindings.index(old)] = new
        new.latency = old.latency  # measured by pinging, not by the phone
        self._index(new)
        # A refresh changes only expiry, CSeq and time; anything else is an update.
        same = new.__class__ is old.__class__ and _REFRESH_SAME(old) == _REFRESH_SAME(new)
        return Change("refresh" if same else "update", new)

    def _delete(self, b: Binding) -> Change:
        bindings = self.records.get(b.aor, [])
        if b in bindings:
            bindings.remove(b)
        emptied = not bindings
        if emptied:
            self.records.pop(b.aor, None)
        return Change("delete", b, aor_deleted=emptied)

    def lookup(self, aor: str, method: str, now: float, *, max_latency_us: int = 0,
               by_latency: bool = False) -> list[Binding]:
        """Live bindings of `aor` allowing `method`, highest q first (no q counts as 1.0),
        then the most recently registered first.  OpenSIPS 2.4 lookup flags: `yNNN`
        (`max_latency_us`) drops bindings whose measured ping latency is above NNN us;
        `Y` (`by_latency`) orders by latency, fastest first (never measured: last)."""
        found = [b for b in self.records.get(aor, ()) if b.alive(now) and b.allows(method)
                 and not (max_latency_us and b.latency > max_latency_us)]
        found.sort(key=lambda b: (-(1000 if b.q == Q_UNSPECIFIED else b.q), -b.last_modified))
        if by_latency:
            found.sort(key=lambda b: (b.latency == 0, b.latency))  # stable: q order on ties
        return found

    def expire(self, now: float) -> list[Change]:
        """Removes every binding whose expiry passed (OpenSIPS timer), earliest first.

        From the expiry index, not a scan of the table: the sweep runs every
        `timer_interval` (1 s) and a scan cost ~6 ms at 20,000 bindings (~12 us per
        REGISTER at 500/s, growing with the table; docs/perf.md, seventh round); the index
        costs a heap push per binding stored and the sweep only what is due."""
        if self._due_for is not self.records:
            self._reindex()
        due = self._due
        changes = []
        while due and due[0][0] <= now:
            b = heapq.heappop(due)[2]
            bindings = self.records.get(b.aor)
            if bindings is not None and any(x is b for x in bindings) and not b.alive(now):
                changes.append(self._delete(b))
        return changes

    def replace_aor(self, aor: str, bindings: list[Binding]) -> None:
        """`aor`'s bindings as given (none: the AOR is gone), without changes or events
        (sql-only: the AOR read back from the shared table)."""
        if bindings:
            self.records[aor] = bindings
            for b in bindings:
                self._index(b)
        else:
            self.records.pop(aor, None)

    def _index(self, b: Binding) -> None:
        if b.expires:
            due = self._due
            heapq.heappush(due, (b.expires, next(self._due_n), b))
            if len(due) > 2 * self._due_size + 1024:
                # Stale entries (refreshed bindings) kept at most about as many as live.
                self._reindex()

    def _reindex(self) -> None:
        n = self._due_n
        self._due = [(b.expires, next(n), b) for bs in self.records.values() for b in bs
                     if b.expires]
        heapq.heapify(self._due)
        self._due_for = self.records
        self._due_size = len(self._due)

    def remove_aor(self, aor: str) -> list[Change]:
        return [self._delete(b) for b in list(self.records.get(aor, ()))]

    def remove_contact(self, aor: str, contact: str) -> list[Change]:
        for b in list(self.records.get(aor, ())):
            if b.uri == contact or b.key == contact:
                return [self._delete(b)]
        return []

    def add(self, b: Binding) -> Change:
        """Upsert by key (ul_add): an existing binding of the same key is replaced."""
        for old in self.records.get(b.aor, ()):
            if old.key == b.key:
                return self._update(old, b)
        return self._insert(b)

    def apply_replica(self, b: Binding) -> Change | None:
        """A binding from another node: upsert unless ours is newer (ul_cluster_sync rule)."""
        for old in self.records.get(b.aor, ()):
            if old.key == b.key:
                if old.last_modified > b.last_modified:
                    return None
                return self._update(old, b)
        return self._insert(b)

    def remove_replica(self, aor: str, key: str, modified: float) -> Change | None:
        for old in self.records.get(aor, ()):
            if old.key == key and old.last_modified <= modified:
                return self._delete(old)
        return None

    def bindings(self) -> Iterable[Binding]:
        for bindings in self.records.values():
            yield from bindings

    @property
    def contact_count(self) -> int:
        return sum(len(v) for v in self.records.values())


def _refusal(exc: RegisterError | SipParseError) -> SaveResult:
    """The answer to a REGISTER that `save` or `plan` refused: the registrar's own error
    as it was raised, a request it cannot read as 400 (§21.4.1)."""
    if isinstance(exc, RegisterError):
        return SaveResult(exc.status, exc.reason, exc.headers)
    return SaveResult(400, exc.reason if exc.status == 400 else "Bad Request")
