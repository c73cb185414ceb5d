"""The presence core on a fake clock, with real SIP messages: SUBSCRIBE/NOTIFY (RFC 6665,
RFC 3856) and PUBLISH (RFC 3903) together."""

from __future__ import annotations

from services.presence import pidf
from services.presence.core import Meta, Outcome, PresenceCore
from services.presence.subscriptions import Limits, Policy, Subscription
from tests.support.sipmsg import parse_request

EDGE = "sip:10.0.0.1:5060;transport=udp"
META = Meta(source="sip:192.0.2.7:5062;transport=udp", local_contact=EDGE,
            edge_uac="127.0.0.1:9000", to_tag="ourtag")


def subscribe(*, to: str = "bob", frm: str = "alice", expires: int | None = 600,
              cseq: int = 1, to_tag: str | None = None, event: str = "presence",
              call_id: str = "c1", ruri: str | None = None, extra: str = "") -> bytes:
    lines = [f"SUBSCRIBE {ruri or f'sip:{to}@example.com'} SIP/2.0",
             "Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK1",
             f"From: <sip:{frm}@example.com>;tag=wtag",
             f"To: <sip:{to}@example.com>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} SUBSCRIBE",
             f"Contact: <sip:{frm}@192.0.2.7:5062>", "Max-Forwards: 70", f"Event: {event}"]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def publish(basic: str | None, *, user: str = "bob", expires: int = 60,
            if_match: str | None = None) -> bytes:
    body = pidf.document(f"sip:{user}@example.com", basic) if basic else b""
    lines = [f"PUBLISH sip:{user}@example.com SIP/2.0",
             "Via: SIP/2.0/UDP 192.0.2.8:5064;branch=z9hG4bK2",
             f"From: <sip:{user}@example.com>;tag=ptag", f"To: <sip:{user}@example.com>",
             "Call-ID: p1", "CSeq: 1 PUBLISH", "Max-Forwards: 70", "Event: presence",
             f"Expires: {expires}"]
    if if_match:
        lines.append(f"SIP-If-Match: {if_match}")
    if body:
        lines.append("Content-Type: application/pidf+xml")
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def run(core: PresenceCore, data: bytes, now: float, etag: str = "e1",
        meta: Meta = META) -> Outcome:
    return core.handle(parse_request(data), meta, now, etag)


def header(out: Outcome, name: str) -> str:
    return dict(out.headers)[name]


def notify_header(out: Outcome, name: str, index: int = 0) -> str:
    return dict(out.notifies[index].headers)[name]


def test_a_subscription_gets_200_and_an_immediate_notify() -> None:
    core = PresenceCore()
    out = run(core, subscribe(), now=1000)
    assert out.status == 200 and header(out, "Expires") == "600"
    assert header(out, "Contact") == f"<{EDGE}>"  # in-dialog requests come to the edge
    (sub,) = out.put_subs
    assert sub.key == "c1;wtag;ourtag" and sub.presentity == "bob@example.com"
    assert sub.watcher == "alice@example.com" and sub.next_hop == META.source
    (n,) = out.notifies
    assert n.ruri == "sip:alice@192.0.2.7:5062" and n.next_hop == META.source
    assert notify_header(out, "Subscription-State") == "active;expires=600"
    assert notify_header(out, "From") == "<sip:bob@example.com>;tag=ourtag"
    assert notify_header(out, "To") == "<sip:alice@example.com>;tag=wtag"
    assert notify_header(out, "CSeq") == "1 NOTIFY" and notify_header(out, "Event") == "presence"
    assert n.body == b""  # nothing published yet: no body (as OpenSIPS)


def test_publish_then_subscribe_notifies_the_pidf() -> None:
    core = PresenceCore()
    pub = run(core, publish("open"), now=0, etag="E1")
    assert pub.status == 200 and header(pub, "SIP-ETag") == "E1"
    assert [name for name, _ in pub.events] == ["E_PRESENCE_PUBLISH"]
    assert pub.events[0][1]["user"] == "bob" and pub.events[0][1]["expires"] == 60
    out = run(core, subscribe(), now=1)
    assert b"<basic>open</basic>" in out.notifies[0].body
    assert notify_header(out, "Content-Type") == "application/pidf+xml"


def test_subscribe_then_publish_notifies_on_each_change() -> None:
    core = PresenceCore()
    run(core, subscribe(), now=0)
    out = run(core, publish("open"), now=5, etag="E1")
    (n,) = out.notifies
    assert b"<basic>open</basic>" in n.body and dict(n.headers)["CSeq"] == "2 NOTIFY"
    assert dict(n.headers)["Subscription-State"] == "active;expires=595"
    # A refresh of the publication changes nothing: no NOTIFY.
    refresh = run(core, publish(None, if_match="E1"), now=6, etag="E2")
    assert refresh.status == 200 and refresh.notifies == []
    closed = run(core, publish("closed", if_match="E2"), now=7, etag="E3")
    assert b"<basic>closed</basic>" in closed.notifies[0].body
    assert dict(closed.notifies[0].headers)["CSeq"] == "3 NOTIFY"
    assert closed.del_pubs == ["E2"] and [p.etag for p in closed.put_pubs] == ["E3"]


def test_a_refresh_extends_and_an_unsubscribe_ends_with_a_final_notify() -> None:
    core = PresenceCore()
    run(core, subscribe(), now=0)
    out = run(core, subscribe(to_tag="ourtag", cseq=2, expires=300), now=100)
    assert out.status == 200 and header(out, "Expires") == "300"
    assert notify_header(out, "Subscription-State") == "active;expires=300"
    end = run(core, subscribe(to_tag="ourtag", cseq=3, expires=0), now=200)
    assert end.status == 200 and end.del_subs == ["c1;wtag;ourtag"]
    assert notify_header(end, "Subscription-State") == "terminated;reason=timeout"
    assert len(core.subs) == 0


def test_in_dialog_errors_481_and_500() -> None:
    core = PresenceCore()
    assert run(core, subscribe(to_tag="unknown", cseq=2), now=0).status == 481
    run(core, subscribe(), now=0)
    assert run(core, subscribe(to_tag="ourtag", cseq=1), now=1).status == 500


def test_unknown_packages_are_489_with_allow_events() -> None:
    core = PresenceCore()
    out = run(core, subscribe(event="message-summary"), now=0)
    assert out.status == 489 and header(out, "Allow-Events") == "presence, presence.winfo"
    assert run(core, publish("open").replace(b"Event: presence", b"Event: dialog"),
               now=0).status == 489
    assert run(core, subscribe(event="dialog"), now=0).status == 489


def test_expires_limits_and_accept() -> None:
    core = PresenceCore(sub_limits=Limits(min_expires=60, max_expires=1200))
    out = run(core, subscribe(expires=10), now=0)
    assert out.status == 423 and header(out, "Min-Expires") == "60"
    assert header(run(core, subscribe(expires=None), now=0), "Expires") == "1200"
    bad_accept = subscribe(call_id="c2", extra="Accept: text/plain")
    assert run(core, bad_accept, now=0).status == 406


def test_a_fetch_notifies_once_and_keeps_nothing() -> None:
    core = PresenceCore()
    out = run(core, subscribe(expires=0), now=0)
    assert out.status == 200 and out.put_subs == [] and len(core.subs) == 0
    assert notify_header(out, "Subscription-State") == "terminated;reason=timeout"


def test_expiry_on_the_clock() -> None:
    core = PresenceCore()
    run(core, subscribe(expires=60), now=0)
    run(core, publish("open", expires=30), now=0, etag="E1")
    early = core.tick(29)
    assert early.notifies == [] and early.del_pubs == []
    # The publication expired: the watcher is told the state went (no body).
    out = core.tick(30)
    assert out.del_pubs == ["E1"] and out.notifies[0].body == b""
    final = core.tick(60)
    assert final.del_subs == ["c1;wtag;ourtag"]
    assert notify_header(final, "Subscription-State") == "terminated;reason=timeout"


def test_policy_same_domain_and_lists() -> None:
    core = PresenceCore(policy=Policy("domain"))
    foreign = subscribe().replace(b"<sip:alice@example.com>", b"<sip:alice@other.org>")
    assert run(core, foreign, now=0).status == 403
    assert run(core, subscribe(), now=0).status == 200
    listed = PresenceCore(policy=Policy("list", {"bob@example.com": frozenset(
        {"carol@example.com"})}))
    assert run(listed, subscribe(), now=0).status == 403
    assert run(listed, subscribe(frm="carol"), now=0).status == 200


def test_a_notify_answered_481_ends_the_subscription() -> None:
    core = PresenceCore()
    run(core, subscribe(), now=0)
    assert core.notify_failed("c1;wtag;ourtag", 503, 1).del_subs == []  # transient: kept
    assert core.notify_failed("c1;wtag;ourtag", 481, 1).del_subs == ["c1;wtag;ourtag"]
    assert len(core.subs) == 0


def test_only_owned_subscriptions_are_notified() -> None:
    owned: set[str] = set()
    core = PresenceCore(owns=lambda sub: sub.sharing_tag in owned)
    run(core, subscribe(), now=0, meta=Meta(local_contact=EDGE, to_tag="t1",
                                            sharing_tag="vip"))
    assert run(core, publish("open"), now=1, etag="E1").notifies == []
    owned.add("vip")
    assert len(run(core, publish("closed", if_match="E1"), now=2, etag="E2").notifies) == 1


def test_after_an_unclean_stop_each_owned_live_subscription_gets_the_state() -> None:
    owned = {"", "vip"}
    core = PresenceCore(owns=lambda sub: sub.sharing_tag in owned)
    run(core, subscribe(), now=0)  # c1: NOTIFY CSeq 1
    run(core, publish("open"), now=1, etag="E1")  # c1: NOTIFY CSeq 2
    run(core, subscribe(call_id="short", expires=60), now=0,
        meta=Meta(local_contact=EDGE, to_tag="t2"))
    run(core, subscribe(call_id="theirs"), now=0,
        meta=Meta(local_contact=EDGE, to_tag="t3", sharing_tag="backup"))
    out = core.renotify(now=100)  # "short" has expired, "theirs" is another node's
    (n,) = out.notifies
    assert n.call_id == "c1" and b"<basic>open</basic>" in n.body
    assert dict(n.headers)["CSeq"] == "3 NOTIFY"  # after the two it already had
    assert dict(n.headers)["Subscription-State"] == "active;expires=500"
    assert [s.key for s in out.put_subs] == ["c1;wtag;ourtag"]  # the CSeq is stored
    assert core.renotify(now=100).notifies[0].headers != n.headers  # CSeq moves on


def test_only_a_notify_never_answered_is_redone_and_a_taken_tag_redoes_its_own() -> None:
    owned = {"", "vip"}
    core = PresenceCore(owns=lambda sub: sub.sharing_tag in owned)
    (first,) = run(core, subscribe(), now=0).notifies  # c1, tag "": CSeq 1
    run(core, subscribe(call_id="v"), now=0,
        meta=Meta(local_contact=EDGE, to_tag="t2", sharing_tag="vip"))  # v: CSeq 1
    assert first.cseq == 1 and core.confirm(first.key, 1) is not None  # c1 answered
    assert core.confirm(first.key, 1) is None  # (recorded once)
    # Only v's NOTIFY was never answered; only the tag taken counts when one is given.
    assert [n.call_id for n in core.renotify(now=10).notifies] == ["v"]
    assert core.renotify(now=10, tags={""}).notifies == []
    # A PUBLISH: both NOTIFYs started, none answered; v's has one in flight here.
    run(core, publish("open"), now=20, etag="E1")
    assert [n.call_id for n in core.renotify(now=30, busy={"v;wtag;t2"}).notifies] == ["c1"]
    (redo,) = core.renotify(now=30, tags={"vip"}).notifies
    assert redo.call_id == "v" and redo.cseq == 4  # 1, the first redo, the PUBLISH's
    assert dict(redo.headers)["Subscription-State"] == "active;expires=570"
    assert b"<basic>open</basic>" in redo.body
    core.confirm(redo.key, redo.cseq)
    assert core.renotify(now=30, tags={"vip"}).notifies == []  # once


def test_bad_input_never_raises() -> None:
    core = PresenceCore()
    assert run(core, subscribe(extra="Expires: soon").replace(b"Expires: 600\r\n", b""),
               now=0).status == 400
    no_contact = subscribe().replace(b"Contact: <sip:alice@192.0.2.7:5062>\r\n", b"")
    assert run(core, no_contact, now=0).status == 400
    assert run(core, publish("open").replace(b"PUBLISH sip:bob@", b"PUBLISH sip:"),
               now=0).status == 404


def test_a_subscription_survives_a_record_round_trip() -> None:
    core = PresenceCore()
    (sub,) = run(core, subscribe(), now=0).put_subs
    assert Subscription.from_record(sub.to_record()) == sub


def winfo_subscribe(*, frm: str = "bob", call_id: str = "w1", cseq: int = 1,
                    to_tag: str | None = None, expires: int = 600) -> bytes:
    return subscribe(frm=frm, event="presence.winfo", call_id=call_id, cseq=cseq,
                     to_tag=to_tag, expires=expires)


def test_winfo_lists_the_watchers_and_follows_their_changes() -> None:
    """RFC 3857/3858: bob watches who watches him; full state, version from 0."""
    core = PresenceCore()
    meta = Meta(local_contact=EDGE, to_tag="wintag", source=META.source)
    out = run(core, winfo_subscribe(), now=0, meta=meta)
    assert out.status == 200
    assert notify_header(out, "Content-Type") == "application/watcherinfo+xml"
    body = out.notifies[0].body.decode()
    assert 'version="0"' in body and 'state="full"' in body and "<watcher " not in body
    # alice subscribes to bob: bob's winfo subscription is told, version 1.
    added = run(core, subscribe(), now=1)
    assert len(added.notifies) == 2  # alice's own NOTIFY and bob's winfo NOTIFY
    winfo = added.notifies[1].body.decode()
    assert 'version="1"' in winfo and "sip:alice@example.com</watcher>" in winfo
    assert 'status="active"' in winfo
    # A refresh of alice's subscription changes no list: no winfo NOTIFY.
    assert len(run(core, subscribe(to_tag="ourtag", cseq=2), now=2).notifies) == 1
    # alice leaves: version 2, nobody listed.
    gone = run(core, subscribe(to_tag="ourtag", cseq=3, expires=0), now=3)
    assert 'version="2"' in gone.notifies[1].body.decode()
    assert "<watcher " not in gone.notifies[1].body.decode()


def test_only_the_presentity_may_watch_its_watchers() -> None:
    core = PresenceCore()
    assert run(core, winfo_subscribe(frm="alice"), now=0).status == 403
    assert run(core, winfo_subscribe().replace(b"Content-Length", b"Accept: text/plain\r\n"
                                               b"Content-Length"), now=0).status == 406


def test_an_expired_watcher_is_told_to_winfo_watchers() -> None:
    core = PresenceCore()
    run(core, winfo_subscribe(expires=600), now=0,
        meta=Meta(local_contact=EDGE, to_tag="wintag"))
    run(core, subscribe(expires=60), now=0)
    out = core.tick(60)
    (winfo,) = [n for n in out.notifies if n.watcher == "bob@example.com"]
    assert "<watcher " not in winfo.body.decode()
