"""RFC 3261 §10.3 REGISTER processing of the sans-IO location table, on a fake clock."""

from __future__ import annotations

import pytest

from services.registrar.location import (
    Binding,
    Location,
    LocationConfig,
    Origin,
    SaveResult,
    parse_aor,
)
from shared.sip import Request, parse_message

T0 = 1_800_000_000.0
HERE = Origin("192.0.2.10", 5060, "udp", "udp:127.0.0.1:5060")


def register(*contacts: str, expires: int | None = None, callid: str = "c1", cseq: int = 1,
             to: str = "sip:alice@example.com", extra: str = "") -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1",
        f"From: <{to}>;tag=f1", f"To: <{to}>", f"Call-ID: {callid}", f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines += extra.split("\n")
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def contacts_of(result: SaveResult) -> list[str]:
    return [v for n, v in result.headers if n == "Contact"]


def test_add_lists_binding_with_expires_and_refresh_keeps_one_binding() -> None:
    loc = Location()
    r = loc.save(register("<sip:alice@192.0.2.10:5060>", expires=600), HERE, T0)
    assert r.status == 200
    assert contacts_of(r) == ["<sip:alice@192.0.2.10:5060>;expires=600"]
    assert [c.kind for c in r.changes] == ["insert"] and r.changes[0].aor_created
    r2 = loc.save(register("<sip:alice@192.0.2.10:5060>", expires=600, cseq=2), HERE, T0 + 100)
    assert contacts_of(r2) == ["<sip:alice@192.0.2.10:5060>;expires=600"]
    assert [c.kind for c in r2.changes] == ["refresh"]
    assert loc.contact_count == 1


def test_contact_expires_param_wins_over_header_and_default_applies() -> None:
    loc = Location(LocationConfig(default_expires=3600, min_expires=60))
    r = loc.save(register("<sip:a@192.0.2.10>;expires=120", "<sip:b@192.0.2.10>"), HERE, T0)
    assert sorted(contacts_of(r)) == ["<sip:a@192.0.2.10>;expires=120",
                                      "<sip:b@192.0.2.10>;expires=3600"]


def test_too_brief_interval_is_423_with_min_expires_and_changes_nothing() -> None:
    loc = Location(LocationConfig(min_expires=60))
    r = loc.save(register("<sip:a@192.0.2.10>", "<sip:b@192.0.2.10>;expires=30"), HERE, T0)
    assert r.status == 423 and ("Min-Expires", "60") in r.headers
    assert loc.contact_count == 0  # the request is checked as a whole


def test_max_expires_lowers_the_interval() -> None:
    loc = Location(LocationConfig(max_expires=300))
    r = loc.save(register("<sip:a@192.0.2.10>", expires=7200), HERE, T0)
    assert contacts_of(r) == ["<sip:a@192.0.2.10>;expires=300"]


def test_expires_zero_removes_and_star_removes_all() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10>", "<sip:b@192.0.2.10>", expires=600), HERE, T0)
    r = loc.save(register("<sip:a@192.0.2.10>;expires=0", cseq=2), HERE, T0 + 1)
    assert contacts_of(r) == ["<sip:b@192.0.2.10>;expires=599"]
    bad = loc.save(register("*", cseq=3), HERE, T0 + 2)
    assert bad.status == 400  # * needs Expires: 0
    r = loc.save(register("*", expires=0, cseq=3), HERE, T0 + 2)
    assert r.status == 200 and contacts_of(r) == []
    assert r.changes[-1].kind == "delete" and r.changes[-1].aor_deleted
    assert loc.records == {}


def test_star_with_same_callid_and_old_cseq_fails() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10>", expires=600, cseq=5), HERE, T0)
    assert loc.save(register("*", expires=0, cseq=5), HERE, T0).status == 400
    assert loc.save(register("*", expires=0, callid="other", cseq=1), HERE, T0).status == 200


def test_out_of_order_cseq_same_callid_is_rejected_other_callid_updates() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10>", expires=600, cseq=10), HERE, T0)
    stale = loc.save(register("<sip:a@192.0.2.10>", expires=900, cseq=9), HERE, T0 + 1)
    assert stale.status == 400 and stale.reason == "Invalid CSeq number"
    fresh = loc.save(register("<sip:a@192.0.2.10>", expires=900, callid="c2", cseq=1),
                     HERE, T0 + 1)
    assert fresh.status == 200 and contacts_of(fresh) == ["<sip:a@192.0.2.10>;expires=900"]


def test_a_retried_save_takes_its_own_replicated_binding_as_done() -> None:
    """The edge sends a Save again, marked retry, to another registrar when the first went
    away without answering: the binding the first made (and replicated) has the request's
    Call-ID and CSeq, and is this very REGISTER's effect, not a replay to refuse."""
    first, other = Location(), Location()
    req = register("<sip:a@192.0.2.10>", expires=600, cseq=7)
    done = first.save(req, HERE, T0)
    other.records = {aor: list(bs) for aor, bs in first.records.items()}  # replicated
    assert other.save(req, HERE, T0 + 1).status == 400  # not marked: a replay
    again = other.save(req, HERE, T0 + 1, replay=True)
    assert again.status == 200 and again.changes == []
    assert contacts_of(again) == ["<sip:a@192.0.2.10>;expires=599"]
    assert other.records == first.records and done.status == 200
    # Not replicated (the first registrar never applied it): applied here as usual.
    fresh = Location().save(req, HERE, T0 + 1, replay=True)
    assert fresh.status == 200 and [c.kind for c in fresh.changes] == ["insert"]
    # A newer REGISTER of the phone is there already: the old one is still refused.
    other.save(register("<sip:a@192.0.2.10>", expires=600, cseq=8), HERE, T0 + 2)
    assert other.save(req, HERE, T0 + 3, replay=True).status == 400
    # A retried `*` removes what is left, as the first attempt did.
    star = register("*", expires=0, cseq=8)
    assert other.save(star, HERE, T0 + 4).status == 400
    assert other.save(star, HERE, T0 + 4, replay=True).status == 200 and other.records == {}


def test_q_values_order_lookup_and_are_echoed() -> None:
    loc = Location()
    r = loc.save(register("<sip:low@192.0.2.10>;q=0.1", "<sip:high@192.0.2.10>;q=0.9",
                          "<sip:none@192.0.2.10>", expires=600), HERE, T0)
    assert "<sip:high@192.0.2.10>;expires=600;q=0.9" in contacts_of(r)
    order = [b.uri for b in loc.lookup("alice@example.com", "INVITE", T0 + 1)]
    assert order == ["sip:none@192.0.2.10", "sip:high@192.0.2.10", "sip:low@192.0.2.10"]
    assert loc.save(register("<sip:x@192.0.2.10>;q=2"), HERE, T0).status == 400


def test_bindings_expire_on_the_clock() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10>", expires=60), HERE, T0)
    assert loc.lookup("alice@example.com", "", T0 + 59)
    assert loc.lookup("alice@example.com", "", T0 + 60) == []
    changes = loc.expire(T0 + 61)
    assert [c.kind for c in changes] == ["delete"] and changes[0].aor_deleted


def test_to_must_be_a_sip_aor() -> None:
    loc = Location()
    assert loc.save(register("<sip:a@192.0.2.10>", to="tel:+15551234"), HERE, T0).status == 400
    assert loc.save(register("<sip:a@192.0.2.10>", to="sip:example.com"), HERE, T0).status == 400


def test_uri_params_and_contact_params_are_kept_apart() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10;transport=tcp;ob>;expires=600;+foo=bar;methods=\"INVITE\""),
             HERE, T0)
    [b] = loc.lookup("alice@example.com", "INVITE", T0)
    assert b.uri == "sip:a@192.0.2.10;transport=tcp;ob"  # URI params stay in the URI
    assert b.params == ";+foo=bar"  # a contact param never lands in the URI
    assert "expires" not in b.uri
    assert loc.lookup("alice@example.com", "MESSAGE", T0) == []  # method filter
    # Without <>, ;expires after an addr-spec is a contact parameter (§20.10).
    loc.save(register("sip:b@192.0.2.10;expires=300", cseq=2), HERE, T0)
    assert any(b.uri == "sip:b@192.0.2.10" and b.expires == int(T0) + 300
               for b in loc.lookup("alice@example.com", "", T0))


def test_sip_instance_and_reg_id_identify_the_binding() -> None:
    loc = Location()
    inst = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    loc.save(register(f"<sip:a@192.0.2.10:5070>;+sip.instance={inst};reg-id=1", expires=600),
             HERE, T0)
    # Same instance and reg-id from a new address: the binding moves, it is not added.
    r = loc.save(register(f"<sip:a@192.0.2.10:5080>;+sip.instance={inst};reg-id=1",
                          expires=600, cseq=2), HERE, T0 + 1)
    assert contacts_of(r) == [f"<sip:a@192.0.2.10:5080>;expires=600;+sip.instance={inst};reg-id=1"]
    # Another reg-id (a second flow) is another binding.
    r = loc.save(register(f"<sip:a@192.0.2.10:5090>;+sip.instance={inst};reg-id=2",
                          expires=600, cseq=3), HERE, T0 + 2)
    assert len(contacts_of(r)) == 2


def test_received_is_kept_when_source_differs_from_contact() -> None:
    loc = Location()
    natted = Origin("203.0.113.7", 40000, "udp", "udp:127.0.0.1:5060")
    loc.save(register("<sip:a@10.0.0.5:5060>", expires=600), natted, T0)
    [b] = loc.lookup("alice@example.com", "", T0)
    assert b.received == "sip:203.0.113.7:40000" and b.next_hop() == "sip:203.0.113.7:40000"
    loc.save(register("<sip:a@192.0.2.10:5060>", expires=600, callid="c9"), HERE, T0)
    direct = [b for b in loc.lookup("alice@example.com", "", T0) if "192.0.2.10" in b.uri]
    assert direct[0].received == ""
    tcp = Origin("203.0.113.7", 40001, "tcp")
    loc.save(register("<sip:t@10.0.0.5>", expires=600, callid="c10"), tcp, T0)
    assert any(b.received == "sip:203.0.113.7:40001;transport=tcp"
               for b in loc.lookup("alice@example.com", "", T0))
    # Over TCP from the Contact's own address: the ephemeral source port is no NAT sign.
    loc.save(register("<sip:t@203.0.113.7;transport=tcp>", expires=600, callid="c11"),
             Origin("203.0.113.7", 40002, "tcp"), T0)
    assert [b.received for b in loc.lookup("alice@example.com", "", T0)
            if b.uri == "sip:t@203.0.113.7;transport=tcp"] == [""]


def test_path_is_stored_and_echoed_when_supported() -> None:
    loc = Location()
    r = loc.save(register("<sip:a@10.0.0.5>", expires=600,
                          extra="Path: <sip:edge1.example.com;lr>\nSupported: path"), HERE, T0)
    assert ("Path", "<sip:edge1.example.com;lr>") in r.headers
    [b] = loc.lookup("alice@example.com", "", T0)
    assert b.path == ("<sip:edge1.example.com;lr>",)
    assert b.next_hop() == "sip:edge1.example.com;lr"


def test_a_malformed_path_is_refused_with_400_and_nothing_is_stored() -> None:
    loc = Location()
    r = loc.save(register("<sip:a@10.0.0.5>", expires=600,
                          extra="Path: <sip:edge1.example.com;lr\nSupported: path"), HERE, T0)
    assert r.status == 400
    assert loc.lookup("alice@example.com", "", T0) == []


def test_a_bad_path_from_elsewhere_gives_no_next_hop_rather_than_an_error() -> None:
    binding = Binding(aor="a@example.com", uri="sip:a@10.0.0.5", expires=int(T0) + 60,
                      path=("garbage", "<sip:p2@192.0.2.51;lr>"))  # e.g. an older SQL row
    assert binding.next_hop() == ""


def test_max_contacts_is_enforced() -> None:
    loc = Location(LocationConfig(max_contacts=1))
    assert loc.save(register("<sip:a@192.0.2.10>"), HERE, T0).status == 200
    assert loc.save(register("<sip:b@192.0.2.10>", cseq=2), HERE, T0).status == 503


def test_replicas_upsert_and_newer_wins() -> None:
    a, b = Location(), Location()
    r = a.save(register("<sip:a@192.0.2.10>", expires=600), HERE, T0)
    binding = r.changes[0].binding
    assert b.apply_replica(binding) is not None
    older = type(binding)(**{**binding.__dict__} if hasattr(binding, "__dict__") else {
        f: getattr(binding, f) for f in binding.__slots__})
    older.last_modified = T0 - 10
    older.expires = 1
    assert b.apply_replica(older) is None  # ours is newer
    assert b.remove_replica("alice@example.com", binding.key, T0 + 1) is not None


def test_parse_aor_accepts_user_at_domain_and_uris() -> None:
    assert parse_aor("alice@Example.COM") == "alice@example.com"
    assert parse_aor("sip:bob@example.com") == "bob@example.com"


def test_refresh_keeps_the_measured_latency_and_is_still_a_refresh() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10:5060>", expires=600), HERE, T0)
    [b] = loc.lookup("alice@example.com", "", T0)
    b.latency = 1234
    r = loc.save(register("<sip:a@192.0.2.10:5060>", expires=600, cseq=2), HERE, T0 + 5)
    assert [c.kind for c in r.changes] == ["refresh"]
    assert loc.lookup("alice@example.com", "", T0 + 5)[0].latency == 1234


def test_lookup_skips_slow_bindings_and_orders_by_latency() -> None:
    loc = Location()
    loc.save(register("<sip:fast@192.0.2.10>;q=0.1", "<sip:slow@192.0.2.10>;q=0.9",
                      "<sip:unknown@192.0.2.10>;q=0.5", expires=600), HERE, T0)
    by_uri = {b.uri: b for b in loc.lookup("alice@example.com", "", T0)}
    by_uri["sip:fast@192.0.2.10"].latency = 2_000
    by_uri["sip:slow@192.0.2.10"].latency = 90_000
    uris = [b.uri for b in loc.lookup("alice@example.com", "", T0, max_latency_us=50_000)]
    assert uris == ["sip:unknown@192.0.2.10", "sip:fast@192.0.2.10"]  # q order, slow gone
    fastest = [b.uri for b in loc.lookup("alice@example.com", "", T0, by_latency=True)]
    assert fastest == ["sip:fast@192.0.2.10", "sip:slow@192.0.2.10", "sip:unknown@192.0.2.10"]


def test_an_equivalent_contact_written_differently_is_the_same_binding() -> None:
    """§19.1.4: host case and parameter order/case do not make another binding, while a
    binding with another URI stays apart (each REGISTER compares with every binding)."""
    loc = Location()
    loc.save(register("<sip:other@192.0.2.10:5070>", expires=600), HERE, T0)
    loc.save(register("<sip:a@Host.Example.COM:5060;transport=udp;lr>", expires=600,
                      cseq=2), HERE, T0)
    for cseq, kind in ((3, "update"), (4, "refresh")):  # update: the URI's text changed
        r = loc.save(register("<sip:a@host.example.com:5060;lr;transport=UDP>", expires=600,
                              cseq=cseq), HERE, T0 + cseq)
        assert [c.kind for c in r.changes] == [kind]
    uris = sorted(b.uri for b in loc.lookup("alice@example.com", "", T0 + 4))
    assert uris == ["sip:a@host.example.com:5060;lr;transport=UDP",
                    "sip:other@192.0.2.10:5070"]
    # not equivalent: another port is another binding
    loc.save(register("<sip:a@host.example.com:5061>", expires=600, cseq=5), HERE, T0 + 5)
    assert loc.contact_count == 3


def test_refresh_only_when_nothing_but_expiry_and_cseq_changed() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10:5060>", expires=600), HERE, T0)
    r = loc.save(register("<sip:a@192.0.2.10:5060>", expires=900, cseq=2), HERE, T0 + 5)
    assert [c.kind for c in r.changes] == ["refresh"]
    for changed in (dict(callid="c2"), dict(extra="User-Agent: phone/2")):
        r = loc.save(register("<sip:a@192.0.2.10:5060>", expires=900, cseq=9, **changed),
                     HERE, T0 + 6)
        assert [c.kind for c in r.changes] == ["update"], changed
    r = loc.save(register("<sip:a@192.0.2.10:5060>;q=0.5", expires=900, cseq=10,
                          callid="c2", extra="User-Agent: phone/2"), HERE, T0 + 7)
    assert [c.kind for c in r.changes] == ["update"]
    moved = Origin("198.51.100.7", 40000, "udp", "udp:127.0.0.1:5060")  # NAT: received
    r = loc.save(register("<sip:a@192.0.2.10:5060>;q=0.5", expires=900, cseq=11,
                          callid="c2", extra="User-Agent: phone/2"), moved, T0 + 8)
    assert [c.kind for c in r.changes] == ["update"]


def test_the_200_carries_the_date_of_its_own_second() -> None:
    loc = Location()
    cseqs = iter(range(1, 100))

    def date(now: float) -> str:
        r = loc.save(register("<sip:a@192.0.2.10:5060>", expires=600, cseq=next(cseqs)),
                     HERE, now)
        return dict(r.headers)["Date"]

    assert date(T0) == "Fri, 15 Jan 2027 08:00:00 GMT"
    assert date(T0 + 0.999) == "Fri, 15 Jan 2027 08:00:00 GMT"
    assert date(T0 + 1) == "Fri, 15 Jan 2027 08:00:01 GMT"
    assert date(T0 + 3600.5) == "Fri, 15 Jan 2027 09:00:00 GMT"


def test_expiry_sweep_takes_the_due_bindings_earliest_first() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10>", expires=900, to="sip:late@example.com"), HERE, T0)
    loc.save(register("<sip:b@192.0.2.10>", expires=300, to="sip:early@example.com"), HERE, T0)
    loc.save(register("<sip:c@192.0.2.10>", expires=600, to="sip:mid@example.com"), HERE, T0)
    # refreshed: its first expiry (T0 + 300) no longer counts
    loc.save(register("<sip:c@192.0.2.10>", expires=3600, cseq=2, to="sip:mid@example.com"),
             HERE, T0 + 10)
    assert loc.expire(T0 + 299) == []
    gone = loc.expire(T0 + 1000)
    assert [(c.kind, c.binding.aor) for c in gone] == [
        ("delete", "early@example.com"), ("delete", "late@example.com")]
    assert list(loc.records) == ["mid@example.com"]


def test_expiry_sweep_visits_only_what_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    loc = Location()
    for i in range(200):
        loc.save(register(f"<sip:u{i}@192.0.2.10>", expires=600 + i, to=f"sip:u{i}@example.com"),
                 HERE, T0)
    visited = []
    alive = Binding.alive

    def counting(self: Binding, now: float) -> bool:
        visited.append(self.aor)
        return alive(self, now)

    monkeypatch.setattr(Binding, "alive", counting)
    assert len(loc.expire(T0 + 602)) == 3  # u0, u1, u2
    assert len(visited) <= 3  # not the 197 bindings still registered


def test_expiry_index_follows_a_replaced_table_and_stays_bounded() -> None:
    loc = Location()
    loc.save(register("<sip:a@192.0.2.10>", expires=600), HERE, T0)
    other = Location()
    other.records = {aor: list(bs) for aor, bs in loc.records.items()}  # assigned whole
    assert [c.binding.uri for c in other.expire(T0 + 601)] == ["sip:a@192.0.2.10"]
    b = loc.records["alice@example.com"][0]
    loc.replace_aor("bob@example.com", [Binding(**{**{f: getattr(b, f) for f in (
        "uri", "callid", "cseq")}, "aor": "bob@example.com", "expires": int(T0) + 60})])
    assert [c.binding.aor for c in loc.expire(T0 + 61)] == ["bob@example.com"]
    for n in range(2, 5000):  # refreshes leave stale entries: compacted, not kept
        loc.save(register("<sip:a@192.0.2.10>", expires=600, cseq=n), HERE, T0 + n / 100)
    assert loc.contact_count == 1 and len(loc._due) <= 2 * 1 + 1024 + 1
