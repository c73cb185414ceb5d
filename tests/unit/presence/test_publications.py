"""RFC 3903 publication table on a fake clock: ETags, refresh, modify, remove, expiry."""

from __future__ import annotations

from services.presence import pidf
from services.presence.publications import Limits, PublicationTable

BOB = "bob@example.com"


def doc(basic: str, tuple_id: str = "t1") -> bytes:
    return pidf.document(f"sip:{BOB}", basic, tuple_id=tuple_id)


def initial(table: PublicationTable, now: float = 0.0, basic: str = "open",
            etag: str = "e1", expires: int | None = 60) -> str:
    done = table.publish(BOB, "presence", if_match=None, expires=expires, body=doc(basic),
                         content_type=pidf.CONTENT_TYPE, now=now, new_etag=etag)
    assert done.status == 200, done
    return etag


def test_an_initial_publication_gets_an_etag_and_its_expiry() -> None:
    table = PublicationTable()
    done = table.publish(BOB, "presence", if_match=None, expires=60, body=doc("open"),
                         content_type="application/pidf+xml", now=100.0, new_etag="e1")
    assert (done.status, dict(done.headers)) == (200, {"SIP-ETag": "e1", "Expires": "60"})
    assert done.changed and done.stored is not None and done.stored.expires_at == 160.0
    assert pidf.basic_status(table.compose(BOB)) == "open"


def test_without_a_body_an_initial_publication_is_400() -> None:
    done = PublicationTable().publish(BOB, "presence", if_match=None, expires=60, body=b"",
                                      content_type=None, now=0, new_etag="e1")
    assert done.status == 400


def test_an_unknown_etag_is_412() -> None:
    table = PublicationTable()
    initial(table)
    done = table.publish(BOB, "presence", if_match="nope", expires=60, body=b"",
                         content_type=None, now=1, new_etag="e2")
    assert done.status == 412
    # An etag of another presentity is unknown for this one too (§6 step 3).
    done = table.publish("alice@example.com", "presence", if_match="e1", expires=60,
                         body=b"", content_type=None, now=1, new_etag="e2")
    assert done.status == 412


def test_a_refresh_without_body_changes_the_etag_and_expiry_not_the_state() -> None:
    table = PublicationTable()
    initial(table)
    done = table.publish(BOB, "presence", if_match="e1", expires=120, body=b"",
                         content_type=None, now=50, new_etag="e2")
    assert done.status == 200 and dict(done.headers)["SIP-ETag"] == "e2"
    assert not done.changed and done.old_etag == "e1"
    assert [p.etag for p in table.of(BOB)] == ["e2"] and table.of(BOB)[0].expires_at == 170
    # The old etag no longer names anything.
    again = table.publish(BOB, "presence", if_match="e1", expires=60, body=b"",
                          content_type=None, now=51, new_etag="e3")
    assert again.status == 412


def test_a_modification_replaces_the_body() -> None:
    table = PublicationTable()
    initial(table)
    done = table.publish(BOB, "presence", if_match="e1", expires=60, body=doc("closed"),
                         content_type=pidf.CONTENT_TYPE, now=10, new_etag="e2")
    assert done.status == 200 and done.changed
    assert pidf.basic_status(table.compose(BOB)) == "closed"


def test_expires_zero_removes_the_publication() -> None:
    table = PublicationTable()
    initial(table)
    done = table.publish(BOB, "presence", if_match="e1", expires=0, body=b"",
                         content_type=None, now=10, new_etag="e2")
    assert done.status == 200 and done.removed is not None and done.changed
    assert table.compose(BOB) == b"" and len(table) == 0


def test_too_brief_is_423_and_too_long_is_lowered() -> None:
    table = PublicationTable(Limits(min_expires=30, max_expires=300))
    done = table.publish(BOB, "presence", if_match=None, expires=5, body=doc("open"),
                         content_type=pidf.CONTENT_TYPE, now=0, new_etag="e1")
    assert done.status == 423 and dict(done.headers) == {"Min-Expires": "30"}
    done = table.publish(BOB, "presence", if_match=None, expires=9999, body=doc("open"),
                         content_type=pidf.CONTENT_TYPE, now=0, new_etag="e1")
    assert dict(done.headers)["Expires"] == "300"


def test_bodies_that_are_not_pidf_are_refused() -> None:
    table = PublicationTable()
    wrong_type = table.publish(BOB, "presence", if_match=None, expires=60, body=b"hi",
                               content_type="text/plain", now=0, new_etag="e1")
    assert wrong_type.status == 415
    for body in (b"<presence", b"<other xmlns='x'/>",
                 b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><presence/>',
                 b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>'):
        done = table.publish(BOB, "presence", if_match=None, expires=60, body=body,
                             content_type=pidf.CONTENT_TYPE, now=0, new_etag="e1")
        assert done.status == 400, body
    assert len(table) == 0


def test_publications_expire_on_the_clock() -> None:
    table = PublicationTable()
    initial(table, now=0, etag="e1", expires=60)
    assert table.expire(59.9) == []
    assert [p.etag for p in table.expire(60.0)] == ["e1"]
    assert table.compose(BOB) == b"" and table.next_deadline() is None


def test_the_state_is_all_publications_composed_oldest_first() -> None:
    table = PublicationTable()
    table.publish(BOB, "presence", if_match=None, expires=60, body=doc("open", "phone"),
                  content_type=pidf.CONTENT_TYPE, now=1, new_etag="a")
    table.publish(BOB, "presence", if_match=None, expires=60, body=doc("closed", "pc"),
                  content_type=pidf.CONTENT_TYPE, now=2, new_etag="b")
    root = pidf.parse(table.compose(BOB))
    ids = [t.get("id") for t in root.findall(f"{{{pidf.PIDF_NS}}}tuple")]
    assert ids == ["phone", "pc"] and root.get("entity") == f"sip:{BOB}"


def test_a_publication_survives_a_record_round_trip() -> None:
    table = PublicationTable()
    initial(table)
    (pub,) = table.of(BOB)
    copy = type(pub).from_record(pub.to_record())
    assert copy == pub
