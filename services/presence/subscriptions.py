"""The notifier's subscriptions (RFC 6665) for the presence package (RFC 3856), sans-IO.

A subscription is a dialog (RFC 6665 §4.1.2.1, RFC 3261 §12) keyed by Call-ID, the
watcher's From tag and our To tag. The rules, each beside its code:

* §8.2.1 / §7.2.2: an Event other than `presence` is answered 489 Bad Event with
  Allow-Events; an Accept without `application/pidf+xml` is 406 (RFC 3856 §6.7).
* §4.2.1.1 / §4.2.1.2: Expires absent is the package default (RFC 3856 §6.4: 3600); below
  `min_expires` (not 0) 423 with Min-Expires; above `max_expires` lowered; the 200 carries
  the granted Expires and a Contact (§4.1.2.1 says SUBSCRIBE is a target refresh request,
  so a refresh replaces the watcher's remote target).
* §4.2.1.1: an authorization decision (`Policy`): allowed -> active, refused -> 403.
* §4.2.1.2 / §4.2.2: a NOTIFY at once for every accepted SUBSCRIBE (new, refresh,
  fetch, removal), then one per change of the presentity's state; each carries
  Subscription-State (§8.2.3) with the remaining expires, or `terminated;reason=...`
  in the final one (§4.2.1.4 un-subscribe and §4.2.2 expiry: `timeout`; a removed
  presentity's watchers are told `deactivated` only by MI).
* §4.1.2.4 / RFC 3261 §12.2.2: an in-dialog SUBSCRIBE of an unknown subscription is 481,
  a CSeq not above the last one is 500.
* §4.2.2: a NOTIFY answered 481 (or not answered at all: 408) removes the subscription.
* RFC 3857 (`presence.winfo`): a presentity may watch who watches it (only itself: §5.2
  says the list is sensitive; 403 for others); its NOTIFYs carry an RFC 3858 watcherinfo
  document, always full state, `version` counting that subscription's NOTIFYs from 0
  (§4.1), with the presence subscriptions of the presentity.

Nothing here reads a clock: `now` is passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from services.presence import pidf

PACKAGE = "presence"  # RFC 3856
WINFO = "presence.winfo"  # RFC 3857
PACKAGES = (PACKAGE, WINFO)
WINFO_TYPE = "application/watcherinfo+xml"  # RFC 3858
WINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
DEFAULT_EXPIRES = 3600  # RFC 3856 §6.4


@dataclass(slots=True)
class Subscription:
    call_id: str
    from_tag: str  # the watcher's
    to_tag: str  # ours
    presentity: str  # user@domain
    watcher: str  # user@domain
    from_hdr: str  # the watcher's From (our NOTIFY's To)
    to_hdr: str  # the SUBSCRIBE's To with our tag (our NOTIFY's From)
    contact: str  # the watcher's remote target
    local_contact: str  # our Contact (the edge that took the SUBSCRIBE)
    expires_at: float
    event: str = PACKAGE
    event_id: str = ""  # the Event header's id parameter (§8.2.1)
    route: tuple[str, ...] = ()  # route set: the SUBSCRIBE's Record-Route, in order
    next_hop: str = ""  # where the SUBSCRIBE came from (NAT): sip:host:port;transport=x
    edge_uac: str = ""  # the Uac API of that edge
    status: str = "active"  # active | pending
    local_cseq: int = 0
    remote_cseq: int = 0
    sharing_tag: str = ""  # the node holding this tag sends the NOTIFYs
    node: int = 0
    # The CSeq of the last NOTIFY that got its final answer (`confirm`): one above it was
    # started and not confirmed, so after its sender died it may never have left
    # (`pending`). Kept in a row of its own ("notified"), not in the record: a node of
    # the previous release reading the record knows no such field.
    notified: int = 0

    @property
    def key(self) -> str:
        return f"{self.call_id};{self.from_tag};{self.to_tag}"

    @property
    def pending(self) -> bool:
        """A NOTIFY was started (its CSeq written) and its answer was never recorded."""
        return self.local_cseq > self.notified

    def to_record(self) -> dict[str, object]:
        record = dataclasses.asdict(self)
        record["route"] = list(self.route)
        del record["notified"]
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> Subscription:
        data = dict(record)
        data["route"] = tuple(data.get("route") or ())  # type: ignore[arg-type]
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Notify:
    """One NOTIFY to send through an edge's Uac API (in-dialog: RFC 3261 §12.2.1.1)."""

    key: str
    ruri: str
    route: tuple[str, ...]
    next_hop: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    edge_uac: str
    terminated: bool
    watcher: str
    presentity: str
    call_id: str
    cseq: int = 0


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """What the notifier needs of a SUBSCRIBE (parsed by the adapter)."""

    call_id: str
    from_tag: str
    to_tag: str | None
    cseq: int
    presentity: str
    watcher: str
    from_hdr: str
    to_hdr: str
    contact: str | None
    event: str | None  # the Event header as received
    accept: str | None
    expires: int | None
    record_route: tuple[str, ...] = ()
    next_hop: str = ""
    local_contact: str = ""
    edge_uac: str = ""
    our_tag: str = ""  # the To tag the edge puts in its answer (initial SUBSCRIBE)
    sharing_tag: str = ""


@dataclass(frozen=True, slots=True)
class SubscribeOutcome:
    status: int
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    stored: Subscription | None = None
    removed: Subscription | None = None
    notify: Notify | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may watch whom (RFC 3856 §5, OpenSIPS's presence_xml without XCAP):
    `allow` everyone, `domain` watchers of the presentity's own domain, `list` only the
    watchers named for the presentity in `allowed` (presentity -> watchers)."""

    mode: str = "allow"
    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def authorize(self, watcher: str, presentity: str) -> bool:
        if watcher == presentity or self.mode == "allow":
            return True
        if self.mode == "domain":
            return watcher.rpartition("@")[2] == presentity.rpartition("@")[2]
        return watcher in self.allowed.get(presentity, frozenset())


def parse_event(value: str | None) -> tuple[str, str]:
    """(package, id) of an Event header (RFC 6665 §8.2.1); ("", "") when absent."""
    if not value:
        return "", ""
    parts = [p.strip() for p in value.split(";")]
    event_id = ""
    for param in parts[1:]:
        name, _, val = param.partition("=")
        if name.strip().lower() == "id":
            event_id = val.strip()
    return parts[0].lower(), event_id


def _accepts(accept: str | None, content_type: str) -> bool:
    if accept is None or not accept.strip():
        return True
    types = {t.split(";")[0].strip().lower() for t in accept.split(",")}
    return bool(types & {content_type, "application/*", "*/*"})


def _xml_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


@dataclass(frozen=True, slots=True)
class Limits:
    min_expires: int = 10
    max_expires: int = 3600
    default_expires: int = DEFAULT_EXPIRES


class SubscriptionTable:
    def __init__(self, limits: Limits = Limits(), policy: Policy = Policy()) -> None:
        self.limits = limits
        self.policy = policy
        self.subs: dict[str, Subscription] = {}
        self.by_presentity: dict[tuple[str, str], dict[str, Subscription]] = {}

    def __len__(self) -> int:
        return len(self.subs)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(list(self.subs.values()))

    def add(self, sub: Subscription) -> None:
        old = self.subs.get(sub.key)
        if old is not None:
            self._drop(old)
        self.subs[sub.key] = sub
        self.by_presentity.setdefault((sub.presentity, sub.event), {})[sub.key] = sub

    def _drop(self, sub: Subscription) -> None:
        self.subs.pop(sub.key, None)
        group = self.by_presentity.get((sub.presentity, sub.event))
        if group is not None:
            group.pop(sub.key, None)
            if not group:
                del self.by_presentity[(sub.presentity, sub.event)]

    def remove(self, key: str) -> Subscription | None:
        sub = self.subs.get(key)
        if sub is not None:
            self._drop(sub)
        return sub

    def watchers_of(self, presentity: str, event: str = PACKAGE) -> list[Subscription]:
        return list(self.by_presentity.get((presentity, event), {}).values())

    # -- SUBSCRIBE ------------------------------------------------------------------------
    def subscribe(self, req: SubscribeRequest, state: bytes, now: float) -> SubscribeOutcome:
        """Answers a SUBSCRIBE; `state` is the presentity's composed PIDF (b"": none)."""
        package, event_id = parse_event(req.event)
        if package not in PACKAGES:
            return SubscribeOutcome(489, "Bad Event", (("Allow-Events", ", ".join(PACKAGES)),))
        body_type = WINFO_TYPE if package == WINFO else pidf.CONTENT_TYPE
        if not _accepts(req.accept, body_type):
            return SubscribeOutcome(406, "Not Acceptable", (("Accept", body_type),))
        limits = self.limits
        expires = limits.default_expires if req.expires is None else req.expires
        if expires < 0:
            return SubscribeOutcome(400, "Bad Expires")
        if 0 < expires < limits.min_expires:
            return SubscribeOutcome(423, "Interval Too Brief",
                                    (("Min-Expires", str(limits.min_expires)),))
        expires = min(expires, limits.max_expires)
        if req.to_tag is None:
            return self._initial(req, package, event_id, expires, state, now)
        return self._in_dialog(req, expires, state, now)

    def _initial(self, req: SubscribeRequest, package: str, event_id: str, expires: int,
                 state: bytes, now: float) -> SubscribeOutcome:
        if not req.contact:
            return SubscribeOutcome(400, "Missing Contact")
        if not req.our_tag:
            return SubscribeOutcome(500, "No Local Tag")
        allowed = (req.watcher == req.presentity if package == WINFO
                   else self.policy.authorize(req.watcher, req.presentity))
        if not allowed:
            return SubscribeOutcome(403, "Forbidden")
        to_hdr = f"{req.to_hdr};tag={req.our_tag}"
        sub = Subscription(
            req.call_id, req.from_tag, req.our_tag, req.presentity, req.watcher, req.from_hdr,
            to_hdr, req.contact, req.local_contact, now + expires, package, event_id,
            req.record_route, req.next_hop, req.edge_uac, "active", 0, req.cseq,
            req.sharing_tag)
        headers = (("Expires", str(expires)), ("Contact", f"<{req.local_contact}>"))
        if expires == 0:
            # A fetch (§4.4.3): the current state once, then the subscription is over.
            notify = self._notify(sub, state, now, "timeout")
            return SubscribeOutcome(200, "OK", headers, notify=notify)
        self.add(sub)
        return SubscribeOutcome(200, "OK", headers, stored=sub,
                                notify=self._notify(sub, state, now))

    def _in_dialog(self, req: SubscribeRequest, expires: int, state: bytes,
                   now: float) -> SubscribeOutcome:
        sub = self.subs.get(f"{req.call_id};{req.from_tag};{req.to_tag}")
        if sub is None:
            return SubscribeOutcome(481, "Subscription Does Not Exist")
        if req.cseq <= sub.remote_cseq:
            return SubscribeOutcome(500, "CSeq Out of Order")  # RFC 3261 §12.2.2
        sub.remote_cseq = req.cseq
        if req.contact:
            sub.contact = req.contact  # a target refresh (§4.1.2.1)
        if req.edge_uac:
            sub.edge_uac = req.edge_uac
        if req.next_hop:
            sub.next_hop = req.next_hop
        headers = (("Expires", str(expires)), ("Contact", f"<{sub.local_contact}>"))
        if expires == 0:
            self._drop(sub)  # §4.2.1.4: un-subscribe, with a final NOTIFY
            return SubscribeOutcome(200, "OK", headers, removed=sub,
                                    notify=self._notify(sub, state, now, "timeout"))
        sub.expires_at = now + expires
        return SubscribeOutcome(200, "OK", headers, stored=sub,
                                notify=self._notify(sub, state, now))

    # -- NOTIFY ---------------------------------------------------------------------------
    def _notify(self, sub: Subscription, state: bytes, now: float,
                terminated: str | None = None) -> Notify:
        sub.local_cseq += 1
        if terminated is not None:
            sub_state = f"terminated;reason={terminated}"
        else:
            remaining = max(0, math.ceil(sub.expires_at - now))
            sub_state = f"{sub.status};expires={remaining}"
        event = sub.event + (f";id={sub.event_id}" if sub.event_id else "")
        headers = [("From", sub.to_hdr), ("To", sub.from_hdr), ("Call-ID", sub.call_id),
                   ("CSeq", f"{sub.local_cseq} NOTIFY"), ("Contact", f"<{sub.local_contact}>"),
                   ("Event", event), ("Subscription-State", sub_state),
                   ("Max-Forwards", "70")]
        if sub.event == WINFO:
            body = self.watcherinfo(sub.presentity, sub.local_cseq - 1)
            headers.append(("Content-Type", WINFO_TYPE))
        else:
            body = state if sub.status == "active" else b""
            if body:
                headers.append(("Content-Type", pidf.CONTENT_TYPE))
        return Notify(sub.key, sub.contact, sub.route, sub.next_hop, tuple(headers), body,
                      sub.edge_uac, terminated is not None, sub.watcher, sub.presentity,
                      sub.call_id, sub.local_cseq)

    def watcherinfo(self, presentity: str, version: int) -> bytes:
        """RFC 3858 full-state watcherinfo document of a presentity's presence watchers."""
        watchers = sorted(self.watchers_of(presentity, PACKAGE), key=lambda s: s.key)
        items = "".join(
            f'<watcher id="{_xml_escape(s.key)}" event="subscribe" status="{s.status}">'
            f"sip:{_xml_escape(s.watcher)}</watcher>" for s in watchers)
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<watcherinfo xmlns="{WINFO_NS}" '
                f'version="{version}" state="full"><watcher-list '
                f'resource="sip:{_xml_escape(presentity)}" package="{PACKAGE}">{items}'
                "</watcher-list></watcherinfo>").encode()

    def notify_watchers(self, presentity: str, state: bytes, now: float,
                        event: str = PACKAGE, *, only: Iterable[Subscription] | None = None
                        ) -> list[tuple[Subscription, Notify]]:
        """A NOTIFY with the new state to every live watcher of the presentity (§4.2.2)."""
        subs = self.watchers_of(presentity, event) if only is None else list(only)
        return [(s, self._notify(s, state, now)) for s in subs if s.expires_at > now]

    def terminate(self, sub: Subscription, state: bytes, now: float,
                  reason: str) -> Notify:
        """Removes a subscription with a final NOTIFY (MI, shutdown of a presentity)."""
        self._drop(sub)
        return self._notify(sub, state, now, reason)

    def expire(self, now: float) -> list[Subscription]:
        """The subscriptions whose time is up (§4.2.2), removed from the table; the caller
        sends each its final NOTIFY (`final_notify`)."""
        gone = [s for s in self.subs.values() if s.expires_at <= now]
        for sub in gone:
            self._drop(sub)
        return gone

    def final_notify(self, sub: Subscription, state: bytes, now: float,
                     reason: str = "timeout") -> Notify:
        return self._notify(sub, state, now, reason)

    def confirm(self, key: str, cseq: int) -> Subscription | None:
        """The NOTIFY `cseq` of a subscription got its final answer (RFC 6665 §4.2.2: the
        watcher has it, or said why not): it needs no redo. The subscription, or None
        when it is gone (nothing to record)."""
        sub = self.subs.get(key)
        if sub is None or cseq <= sub.notified:
            return None
        sub.notified = cseq
        return sub

    def notify_failed(self, key: str, status: int) -> Subscription | None:
        """§4.2.2: a NOTIFY answered 481, or timed out (408), ends the subscription."""
        if status in (481, 408):
            return self.remove(key)
        return None

    def next_deadline(self) -> float | None:
        return min((s.expires_at for s in self.subs.values()), default=None)
