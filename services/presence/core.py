"""The presence server's decisions, sans-IO: a SIP request in, an answer, the NOTIFYs to
send, what to store and what events to raise out (OpenSIPS `handle_publish` /
`handle_subscribe`, both answering statelessly from the proxy).

The presentity is the Request-URI's `user@host` (RFC 3903 §4, RFC 3856 §5), the watcher
the From URI's. PUBLISH rules are in services/presence/publications.py, SUBSCRIBE/NOTIFY in
services/presence/subscriptions.py; this module ties them: every change of a presentity's
composed state (a publication added, modified, removed or expired) is notified to its
watchers (RFC 6665 §4.2.2) -- those this node is responsible for (`owns`, the sharing
tag of OpenSIPS 2.4's clustering).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from services.presence.publications import Limits as PubLimits
from services.presence.publications import Publication, PublicationTable
from services.presence.subscriptions import (
    PACKAGE,
    PACKAGES,
    WINFO,
    Limits,
    Notify,
    Policy,
    SubscribeRequest,
    Subscription,
    SubscriptionTable,
    parse_event,
)
from shared.sip import Request, SipParseError


@dataclass(frozen=True, slots=True)
class Meta:
    """What the edge says about a request besides its bytes."""

    source: str = ""  # sip:host:port;transport=udp (where it came from)
    local_contact: str = ""  # the edge's SIP address: our Contact
    edge_uac: str = ""  # the edge's Uac API (host:port)
    to_tag: str = ""  # the To tag the edge's answer carries
    sharing_tag: str = ""


@dataclass(slots=True)
class Outcome:
    status: int
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    notifies: list[Notify] = field(default_factory=list)
    put_pubs: list[Publication] = field(default_factory=list)
    del_pubs: list[str] = field(default_factory=list)  # entity-tags
    put_subs: list[Subscription] = field(default_factory=list)
    del_subs: list[str] = field(default_factory=list)  # subscription keys
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # presentities whose state changed

    def merge(self, other: Outcome) -> None:
        self.notifies += other.notifies
        self.put_pubs += other.put_pubs
        self.del_pubs += other.del_pubs
        self.put_subs += other.put_subs
        self.del_subs += other.del_subs
        self.events += other.events


def _aor(uri: Any) -> str:
    return f"{(uri.user or '').lower()}@{uri.host.lower()}" if uri.user else uri.host.lower()


def _expires(request: Request) -> int | None:
    value = request.get("Expires")
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else -1


def publish_event(pub: Publication, expires: int) -> dict[str, Any]:
    """E_PRESENCE_PUBLISH / E_PRESENCE_EXPOSED parameters (OpenSIPS's)."""
    user, _, domain = pub.presentity.rpartition("@")
    return {"user": user, "domain": domain, "event": pub.event, "expires": expires,
            "etag": pub.etag, "body": pub.body.decode("utf-8", "replace")}


class PresenceCore:
    def __init__(self, *, pub_limits: PubLimits | None = None, sub_limits: Limits | None = None,
                 policy: Policy | None = None, node: int = 0,
                 owns: Callable[[Subscription], bool] | None = None) -> None:
        self.pubs = PublicationTable(pub_limits or PubLimits())
        self.subs = SubscriptionTable(sub_limits or Limits(), policy or Policy())
        self.node = node
        self.owns = owns or (lambda sub: True)

    # -- requests -------------------------------------------------------------------------
    @staticmethod
    def presentity_of(request: Request) -> str | None:
        """The presentity a PUBLISH or SUBSCRIBE is about (None: cannot tell): the
        Request-URI's, or the To URI's inside a subscription (whose Request-URI is our
        Contact)."""
        try:
            if request.method == "SUBSCRIBE" and request.to_tag is not None:
                return _aor(request.to_addr.uri)
            uri = request.parsed_uri
            return _aor(uri) if uri.user else None
        except (SipParseError, ValueError):
            return None

    def replace_presentity(self, presentity: str, pubs: list[Publication],
                           subs: list[Subscription]) -> None:
        """Puts one presentity's rows as the shared store has them in place of ours (an
        answer to a NOTIFY seen here and not yet written stays recorded)."""
        for sub in subs:
            known = self.subs.subs.get(sub.key)
            if known is not None and known.notified > sub.notified:
                sub.notified = known.notified
        for pub in self.pubs.of(presentity):
            self.pubs.remove(pub.etag)
        for sub in self.subs.watchers_of(presentity):
            self.subs.remove(sub.key)
        for pub in pubs:
            self.pubs.add(pub)
        for sub in subs:
            self.subs.add(sub)

    def handle(self, request: Request, meta: Meta, now: float, new_etag: str) -> Outcome:
        try:
            if request.method == "PUBLISH":
                return self.publish(request, meta, now, new_etag)
            if request.method == "SUBSCRIBE":
                return self.subscribe(request, meta, now)
        except (SipParseError, ValueError) as exc:
            return Outcome(400, f"Bad Request: {exc}"[:100])
        return Outcome(405, "Method Not Allowed", (("Allow", "PUBLISH, SUBSCRIBE"),))

    def publish(self, request: Request, meta: Meta, now: float, new_etag: str) -> Outcome:
        package, _ = parse_event(request.get("Event"))
        if package != PACKAGE:
            return Outcome(489, "Bad Event",  # RFC 3903 §6 step 2
                           (("Allow-Events", ", ".join(PACKAGES)),))
        uri = request.parsed_uri
        if not uri.user:
            return Outcome(404, "Not Found")
        presentity = _aor(uri)
        done = self.pubs.publish(
            presentity, package, if_match=request.get("SIP-If-Match"),
            expires=_expires(request), body=request.body,
            content_type=request.content_type, now=now, new_etag=new_etag,
            sender=str(request.from_addr.uri), node=self.node)
        out = Outcome(done.status, done.reason, done.headers)
        if done.old_etag and (done.stored is None or done.stored.etag != done.old_etag):
            out.del_pubs.append(done.old_etag)
        if done.stored is not None:
            out.put_pubs.append(done.stored)
            out.events.append(("E_PRESENCE_PUBLISH", publish_event(
                done.stored, max(0, round(done.stored.expires_at - now)))))
        if done.removed is not None:
            out.events.append(("E_PRESENCE_PUBLISH", publish_event(done.removed, 0)))
        if done.changed:
            out.merge(self.state_changed(presentity, now))
        return out

    def subscribe(self, request: Request, meta: Meta, now: float) -> Outcome:
        uri = request.parsed_uri
        contacts = request.contacts
        to_tag = request.to_tag
        presentity = _aor(request.to_addr.uri) if to_tag is not None else _aor(uri)
        to_hdr = request.get("To") or ""
        req = SubscribeRequest(
            call_id=request.call_id, from_tag=request.from_tag or "", to_tag=to_tag,
            cseq=request.cseq.number, presentity=presentity,
            watcher=_aor(request.from_addr.uri), from_hdr=request.get("From") or "",
            to_hdr=to_hdr, contact=str(contacts[0].uri) if contacts else None,
            event=request.get("Event"), accept=request.get("Accept"),
            expires=_expires(request),
            record_route=tuple(str(r) for r in request.record_routes),
            next_hop=meta.source, local_contact=meta.local_contact, edge_uac=meta.edge_uac,
            our_tag=meta.to_tag, sharing_tag=meta.sharing_tag)
        if to_tag is None and not uri.user:
            return Outcome(404, "Not Found")
        known = self.subs.subs.get(f"{req.call_id};{req.from_tag};{to_tag}")
        state = self.pubs.compose(known.presentity if known else presentity)
        done = self.subs.subscribe(req, state, now)
        out = Outcome(done.status, done.reason, done.headers)
        if done.stored is not None:
            done.stored.node = done.stored.node or self.node
            out.put_subs.append(done.stored)
        if done.removed is not None:
            out.del_subs.append(done.removed.key)
        if done.notify is not None:
            out.notifies.append(done.notify)
        changed = done.removed or (done.stored if done.stored is not None
                                   and done.stored.local_cseq == 1 else None)
        if changed is not None and changed.event == PACKAGE:
            out.merge(self.winfo_changed(changed.presentity, now))
        return out

    def winfo_changed(self, presentity: str, now: float) -> Outcome:
        """The presentity's watcher list changed: NOTIFY its presence.winfo watchers."""
        out = Outcome(200)
        owned = [s for s in self.subs.watchers_of(presentity, WINFO) if self.owns(s)]
        for sub, notify in self.subs.notify_watchers(presentity, b"", now, WINFO,
                                                     only=owned):
            out.notifies.append(notify)
            out.put_subs.append(sub)
        return out

    # -- state changes ----------------------------------------------------------------------
    def state_changed(self, presentity: str, now: float,
                      event: str = PACKAGE) -> Outcome:
        """NOTIFY the watchers of `presentity` this node owns, with its composed state."""
        out = Outcome(200)
        owned = [s for s in self.subs.watchers_of(presentity, event) if self.owns(s)]
        if not owned:
            return out
        state = self.pubs.compose(presentity, event)
        for sub, notify in self.subs.notify_watchers(presentity, state, now, event,
                                                     only=owned):
            out.notifies.append(notify)
            out.put_subs.append(sub)  # its NOTIFY CSeq moved on
        return out

    def renotify(self, now: float, *, tags: Collection[str] | None = None,
                 busy: Collection[str] = ()) -> Outcome:
        """The NOTIFYs a dead sender may have lost, redone with the current state: after
        an unclean stop (kill -9, a crash) those of every subscription this node owns
        (`tags` None), or, once this node took a dead node's sharing tags, those of the
        subscriptions of `tags`. The rows are written before the answer (kill -9 loses no
        subscription), but a NOTIFY started before the kill may never have left: the first
        one after a 200 (RFC 6665 §4.2.1.2), or those of a PUBLISH answered just before.
        Only a subscription whose last NOTIFY was never confirmed (`pending`) gets one: a
        NOTIFY the dead node saw answered is not sent again. The redo is a new NOTIFY of
        the dialog (the next CSeq: the lost one may yet arrive, RFC 3261 §12.2.1.1),
        with the full state (RFC 3856 §6.6; a winfo version one above), so one the
        watcher already had is harmless to it. `busy`: subscriptions with a NOTIFY of
        this node in flight, whose answer will be recorded (no second one)."""
        out = Outcome(200)
        for sub in sorted(self.subs, key=lambda s: s.key):
            if (sub.expires_at <= now or not sub.pending or sub.key in busy
                    or (tags is not None and sub.sharing_tag not in tags)
                    or not self.owns(sub)):
                continue
            state = b"" if sub.event == WINFO else self.pubs.compose(sub.presentity,
                                                                      sub.event)
            for _, notify in self.subs.notify_watchers(sub.presentity, state, now,
                                                       sub.event, only=(sub,)):
                out.notifies.append(notify)
                out.put_subs.append(sub)  # its NOTIFY CSeq moved on
        return out

    def confirm(self, key: str, cseq: int) -> Subscription | None:
        """A NOTIFY got its final answer: the subscription to record it for (None: gone,
        or already recorded)."""
        return self.subs.confirm(key, cseq)

    def tick(self, now: float) -> Outcome:
        """Expiry (RFC 3903 §5, RFC 6665 §4.2.2): publications and subscriptions whose
        time is up go; watchers of a changed presentity are notified, an expired
        subscription gets its final NOTIFY (from its owner only)."""
        out = Outcome(200)
        changed: set[str] = set()
        for pub in self.pubs.expire(now):
            out.del_pubs.append(pub.etag)
            changed.add(pub.presentity)
        watched: set[str] = set()
        for sub in self.subs.expire(now):
            # Only the owner ends a subscription (its final NOTIFY, its row): another node
            # holding a copy forgets it, so a backup never deletes what it does not own
            # (OpenSIPS #2960).
            if self.owns(sub):
                out.del_subs.append(sub.key)
                out.notifies.append(self.subs.final_notify(
                    sub, self.pubs.compose(sub.presentity), now))
                if sub.event == PACKAGE:
                    watched.add(sub.presentity)
        for presentity in sorted(watched):
            out.merge(self.winfo_changed(presentity, now))
        for presentity in sorted(changed):
            out.merge(self.state_changed(presentity, now))
        out.changed = sorted(changed)
        return out

    def notify_failed(self, key: str, status: int, now: float) -> Outcome:
        out = Outcome(200)
        gone = self.subs.notify_failed(key, status)
        if gone is not None:
            out.del_subs.append(gone.key)
            if gone.event == PACKAGE:
                out.merge(self.winfo_changed(gone.presentity, now))
        return out

    def refresh_watchers(self, presentity: str, event: str, now: float) -> Outcome:
        """MI refresh_watchers: NOTIFY the presentity's watchers with its current state."""
        return self.state_changed(presentity, now, event)
