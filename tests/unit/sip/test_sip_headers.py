"""Header access and editing, serialization and responses (RFC 3261 §7.3, §8.2.6, §16.6)."""

from __future__ import annotations

import pytest

from shared.sip import CSeq, Request, Response, SipParseError, make_response, parse_message
from tests.unit.sip.helpers import fixture, invite


def _request(data: bytes | None = None) -> Request:
    msg = parse_message(data if data is not None else invite())
    assert isinstance(msg, Request)
    return msg


def test_get_is_case_insensitive_and_accepts_compact_forms() -> None:
    msg = _request()
    assert msg.get("call-id") == msg.get("CALL-ID") == msg.get("i") == msg.call_id
    assert msg.get("v") == msg.get("Via")
    assert msg.get("Nope") is None
    assert msg.has("f") and not msg.has("Route")


def test_forwarding_edits_keep_untouched_lines_byte_for_byte() -> None:
    # A proxy's edits (RFC 3261 §16.6): Max-Forwards -1, a Via on top, a Record-Route.
    data = fixture("valid/wsinv.sip")
    msg = _request(data)
    msg.max_forwards = (msg.max_forwards or 0) - 1
    msg.add_header("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1")
    msg.add_header("Record-Route", "<sip:proxy.example.com;lr>")
    out = msg.serialize()
    assert out.startswith(b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n")
    # Every original header line except Max-Forwards appears unchanged, folds included.
    original = data.split(b"\r\n\r\n", 1)[0]
    for chunk in (
        b"TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        b"Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw",
        b"NewFangledHeader:   newfangled value\r\n continued newfangled value",
        b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
    ):
        assert chunk in original and chunk in out
    again = _request(out)
    assert again.max_forwards == 67
    assert again.top_via.branch == "z9hG4bKp1"
    assert [v.branch for v in again.vias][1:] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert again.record_routes[0].uri.host == "proxy.example.com"
    assert again.body == msg.body


def test_add_header_goes_above_or_below_existing_lines() -> None:
    msg = _request()
    msg.add_header("Via", "SIP/2.0/TCP top.example.com;branch=z9hG4bKtop")
    msg.add_header("Via", "SIP/2.0/TCP bottom.example.com;branch=z9hG4bKbot", first=False)
    assert [v.host for v in msg.vias] == [
        "top.example.com",
        "pc33.atlanta.example.com",
        "bottom.example.com",
    ]
    msg.add_header("X-New", "last", first=False)
    assert msg.serialize().split(b"\r\n")[-3] == b"X-New: last"


def test_set_header_replaces_every_line_in_place() -> None:
    data = invite().replace(b"Contact:", b"Route: <sip:a;lr>\r\nRoute: <sip:b;lr>\r\nContact:")
    msg = _request(data)
    msg.set_header("route", "<sip:c;lr>")
    assert msg.get_all("Route") == ["<sip:c;lr>"]
    lines = msg.serialize().split(b"\r\n")
    assert lines.index(b"Route: <sip:c;lr>") == lines.index(b"CSeq: 314159 INVITE") + 1


def test_remove_header_counts_lines() -> None:
    data = invite().replace(b"Contact:", b"Route: <sip:a;lr>\r\nRoute: <sip:b;lr>\r\nContact:")
    msg = _request(data)
    assert msg.remove_header("Route") == 2
    assert msg.remove_header("Route") == 0
    assert b"Route" not in msg.serialize()


def test_pop_first_value_from_a_multi_value_line_keeps_the_rest() -> None:
    data = invite().replace(
        b"Contact:", b"Route: <sip:p1.example.com;lr>,  <sip:p2.example.com;lr>\r\nContact:"
    )
    msg = _request(data)
    assert msg.pop_first_value("Route") == "<sip:p1.example.com;lr>"
    assert b"Route: <sip:p2.example.com;lr>\r\n" in msg.serialize()
    assert msg.pop_first_value("Route") == "<sip:p2.example.com;lr>"
    assert not msg.has("Route")
    assert msg.pop_first_value("Route") is None


def test_pop_first_via_then_top_via_is_the_next_one() -> None:
    data = fixture("valid/wsinv.sip")
    msg = _request(data)
    assert msg.top_via.branch == "390skdjuw"
    popped = msg.pop_first_value("Via")
    assert popped is not None and "390skdjuw" in popped
    assert msg.top_via.branch == "z9hG4bK9ikj8"
    assert len(msg.vias) == 2


def test_a_known_top_via_line_is_taken_as_written_not_parsed() -> None:
    fwd = _request()
    ours = fwd.push_via("UDP", "192.0.2.1", 5060, "z9hG4bKours.1")
    line = fwd.top_via_line()
    assert line == b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKours.1"
    known = {line: ours}
    back = parse_message(make_response(fwd, 200).serialize())
    assert back.known_top_via(known) is ours and back.top_via is ours
    # Any other spelling of the same Via is not found: parsed as it always was.
    other = parse_message(make_response(fwd, 200).serialize().replace(b"Via: SIP", b"v: SIP", 1))
    assert other.known_top_via(known) is None
    assert other.top_via.branch == "z9hG4bKours.1" and other.top_via is not ours
    assert Response(200, headers=[("To", "<sip:a@b>")]).known_top_via(known) is None


def test_eager_fields_follow_header_edits_and_vice_versa() -> None:
    msg = _request()
    msg.set_header("CSeq", "7 INVITE")
    assert msg.cseq == CSeq(7, "INVITE")
    msg.cseq = CSeq(8, "INVITE")
    assert msg.get("CSeq") == "8 INVITE"
    msg.call_id = "new-call"
    assert msg.get("i") == "new-call"
    msg.to_tag = "t1"
    assert msg.to_tag == "t1" and msg.to_addr.tag == "t1"
    msg.from_tag = "f9"
    assert msg.get("From") == "Alice <sip:alice@atlanta.example.com>;tag=f9"
    msg.max_forwards = None
    assert msg.max_forwards is None and not msg.has("Max-Forwards")


def test_serialize_fixes_content_length() -> None:
    msg = _request()
    msg.body = b"v=0\r\n"
    out = msg.serialize()
    assert b"Content-Length: 5\r\n" in out and out.endswith(b"\r\n\r\nv=0\r\n")
    msg.remove_header("Content-Length")
    assert b"Content-Length: 5" in msg.serialize()  # added when missing


def test_header_values_cannot_inject_lines() -> None:
    msg = _request()
    with pytest.raises(ValueError):
        msg.add_header("X-Evil", "a\r\nVia: forged")
    with pytest.raises(ValueError):
        msg.set_header("Subject", "a\nb")


def test_copy_is_independent() -> None:
    msg = _request()
    before = msg.serialize()
    twin = msg.copy()
    twin.add_header("Via", "SIP/2.0/UDP p.example.com;branch=z9hG4bKc")
    twin.max_forwards = 1
    twin.body = b"x"
    twin.set_uri("sip:carol@chicago.example.com")
    assert msg.serialize() == before
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert twin.top_via.branch == "z9hG4bKc"
    assert twin.uri == "sip:carol@chicago.example.com"
    assert twin.parsed_uri.user == "carol"


def test_copy_keeps_an_independent_parsed_uri() -> None:
    msg = _request()
    assert msg.parsed_uri.user == "bob"  # parsed, then copied with the request
    twin = msg.copy()
    twin.parsed_uri.params["lr"] = None
    assert "lr" not in msg.parsed_uri.params
    assert twin.parsed_uri.host == msg.parsed_uri.host


@pytest.mark.parametrize("host", ["192.0.2.4", "[2001:db8::4]", "proxy.example.com"])
def test_push_via_keeps_what_parsing_its_line_gives(host: str) -> None:
    msg = _request().copy()
    pushed = msg.push_via("UDP", host, 5070, "z9hG4bKproxy.1")
    line = msg.get_all("Via")[0]
    assert line == f"SIP/2.0/UDP {host}:5070;branch=z9hG4bKproxy.1"
    assert msg.top_via is pushed
    again = parse_message(msg.serialize())
    assert isinstance(again, Request)
    assert again.top_via == pushed
    assert [v.branch for v in msg.vias] == ["z9hG4bKproxy.1", "z9hG4bK776asdhds"]


def test_set_uri_changes_the_request_line() -> None:
    msg = _request()
    assert msg.parsed_uri.user == "bob"
    msg.set_uri("sip:bob@192.0.2.4:5062;transport=tcp")
    assert msg.parsed_uri.port == 5062
    assert msg.serialize().startswith(b"INVITE sip:bob@192.0.2.4:5062;transport=tcp SIP/2.0\r\n")
    with pytest.raises(ValueError):
        msg.set_uri("sip:bad uri")


def test_make_response_copies_the_rfc_3261_headers() -> None:
    data = invite().replace(
        b"Max-Forwards", b"Via: SIP/2.0/UDP second.example.com;branch=z9hG4bK2\r\nMax-Forwards"
    )
    req = _request(data)
    resp = make_response(req, 486, to_tag="as83", headers=[("Retry-After", "30")])
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason) == (486, "Busy Here")
    out = resp.serialize()
    assert out.startswith(b"SIP/2.0 486 Busy Here\r\n")
    again = parse_message(out)
    assert isinstance(again, Response)
    assert [v.branch for v in again.vias] == ["z9hG4bK776asdhds", "z9hG4bK2"]
    assert again.to_tag == "as83" and again.from_tag == "1928301774"
    assert again.call_id == req.call_id and again.cseq == req.cseq
    assert again.get("Retry-After") == "30"
    assert again.get("Contact") is None and again.body == b""
    # An existing To tag is never replaced.
    req.to_tag = "existing"
    assert make_response(req, 200, to_tag="other").to_tag == "existing"
    assert make_response(req, 299).reason == "Success"  # class phrase for unknown codes


def test_response_constructor_and_request_constructor() -> None:
    req = Request(
        "OPTIONS",
        "sip:a@example.com",
        [
            ("Via", "SIP/2.0/UDP h;branch=z9hG4bKx"),
            ("Max-Forwards", "70"),
            ("To", "<sip:a@example.com>"),
            ("From", "<sip:b@example.com>;tag=1"),
            ("Call-ID", "c1"),
            ("CSeq", "1 OPTIONS"),
        ],
    )
    again = parse_message(req.serialize())
    assert again == req
    assert again.from_tag == "1" and again.max_forwards == 70
    with pytest.raises(ValueError):
        Response(700)


def test_header_names_are_canonical_in_the_json_view() -> None:
    data = invite().replace(b"Call-ID", b"call-id").replace(b"CSeq", b"CSEQ")
    names = list(_request(data).headers_by_name())
    assert "Call-ID" in names and "CSeq" in names


def test_bad_routing_field_values_are_refused_before_any_change() -> None:
    msg = _request()
    before = msg.serialize()
    for name, value in [
        ("CSeq", "x INVITE"),
        ("Max-Forwards", "300"),
        ("Call-ID", "a b"),
        ("To", '"unterminated <sip:b@example.com>'),
        ("From", "<sip:a@x>, <sip:b@x>"),
    ]:
        with pytest.raises(SipParseError):
            msg.set_header(name, value)
    assert msg.serialize() == before
    assert msg.cseq == CSeq(314159, "INVITE") and msg.max_forwards == 70


def test_100_trying_copies_timestamp() -> None:
    req = _request(invite(Timestamp="54"))
    assert make_response(req, 100).get("Timestamp") == "54"
    assert make_response(req, 180).get("Timestamp") is None


def test_our_top_via_line_is_dropped_only_when_it_is_exactly_ours() -> None:
    fwd = _request()
    fwd.push_via("UDP", "192.0.2.1", 5060, "z9hG4bKours.1")
    line = fwd.top_via_line()
    assert line is not None
    back = parse_message(make_response(fwd, 200).serialize())
    other = parse_message(make_response(fwd, 200).serialize().replace(b"Via: SIP", b"v: SIP", 1))
    assert not other.drop_top_via_line(line) and other.top_via.branch == "z9hG4bKours.1"
    before = back.serialize()
    assert back.drop_top_via_line(line)
    assert back.top_via.branch == _request().top_via.branch  # the caller's Via is on top
    assert back.serialize() == before.replace(line + b"\r\n", b"", 1)
    assert not back.drop_top_via_line(line)


@pytest.mark.parametrize("line", [
    b"Content-Length: 129", b"Content-Length:129", b"Content-Length:  129 ", b"l: 129",
    b"Content-Length: 1129", b"Content-Length: 12", b"Content-Length: 0129",
    b"Content-Length:\r\n 129", b"Content-Length: 12 9",
])
def test_content_length_compared_by_index_as_by_value(line: bytes) -> None:
    from shared.sip.message import _has_value, _line_value

    assert _has_value(line, b"129") == (_line_value(line) == b"129")
