"""Parsing valid and invalid messages (RFC 3261 §7, §18.3, §20; RFC 4475; RFC 5118)."""

from __future__ import annotations

import pytest

from shared.sip import Request, Response, SipParseError, parse_message, parse_uri
from tests.unit.sip.helpers import crlf, fixture, fixture_names, invite

# -- every valid fixture parses fully, and serializes back byte for byte ------------------------


@pytest.mark.parametrize("name", fixture_names("valid"))
def test_valid_fixture_parses_fully_and_round_trips(name: str) -> None:
    data = fixture(name)
    msg = parse_message(data)
    msg.validate()
    again = parse_message(msg.serialize())
    assert again == msg
    assert again.serialize() == msg.serialize()


def test_wsinv_folding_whitespace_and_compact_forms() -> None:
    # RFC 4475 §3.1.1.1: folding, LWS around colons and slashes, mixed-case names.
    data = fixture("valid/wsinv.sip")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.parsed_uri.params == {"unknownparam": None}
    assert msg.max_forwards == 68  # "0068"
    assert msg.cseq == (9, "INVITE")  # "0009" folded onto a second line
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.to_tag == "1918181833n"
    assert msg.from_tag == "98asjd8"
    assert msg.from_addr.display_name == 'J Rosenberg \\"'
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.top_via.has_rport and msg.top_via.rport is None
    assert msg.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.get("Subject") == ""  # "s :" compact form, empty value
    assert msg.get_all("UnknownHeaderWithUnusualValue") == [";;,,;;,;"]
    contact = msg.contacts[0]
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.routes[0].uri.lr
    assert len(msg.body) == 150
    # Untouched, the message serializes to exactly the bytes received.
    assert msg.serialize() == data


def test_intmeth_unusual_tokens_everywhere() -> None:
    # RFC 4475 §3.1.1.2: an unknown method made of every token character, and a user part
    # holding "?", ";" and "," before the "@".
    msg = parse_message(fixture("valid/intmeth.sip"))
    msg.validate()
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.parsed_uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.parsed_uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.parsed_uri.host == "example.com"
    assert msg.from_tag == "_token~1'+`*%!-."
    assert msg.to_addr.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escaped_uris_compare_to_unescaped() -> None:
    # RFC 4475 §3.1.1.3 and RFC 3261 §19.1.4: %HEX of unreserved characters is equivalent.
    msg = parse_message(fixture("valid/esc01.sip"))
    assert msg.to_addr.uri.equivalent(parse_uri("sip:user@example.com"))
    assert msg.from_addr.uri.user == "I%20have%20spaces"
    contact = msg.contacts[0]
    assert contact.uri.user == "cal%6Cer"
    assert contact.params == {"n%61me": '"%5Cf%6Fo"'}


def test_escnull_and_uppercase_compact_content_length() -> None:
    msg = parse_message(fixture("valid/escnull.sip"))
    assert msg.to_addr.uri.user == "null-%00-null"
    assert [c.uri.user for c in msg.contacts] == ["%00", "%00%00"]
    assert msg.body == b""


def test_esc02_percent_in_method_and_header_name_is_not_an_escape() -> None:
    # RFC 4475 §3.1.1.5: RE%47IST%45R is an unknown method, C%6Fntact an unknown header.
    msg = parse_message(fixture("valid/esc02.sip"))
    assert isinstance(msg, Request)
    assert msg.method == "RE%47IST%45R"
    assert [c.uri.host for c in msg.contacts] == ["host1.example.com", "host3.example.com"]
    assert msg.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.from_addr.display_name == "%Z%45"


def test_no_space_between_display_name_and_angle_bracket() -> None:
    msg = parse_message(fixture("valid/lwsdisp.sip"))
    assert msg.from_addr.display_name == "caller"
    assert msg.from_tag == "323"


def test_extra_octets_after_content_length_are_discarded() -> None:
    # RFC 4475 §3.1.1.8 / RFC 3261 §18.3: on a datagram the surplus is ignored.
    msg = parse_message(fixture("valid/dblreq.sip"))
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert b"INVITE" not in msg.serialize()


def test_semicolon_in_user_part() -> None:
    msg = parse_message(fixture("valid/semiuri.sip"))
    assert isinstance(msg, Request)
    assert msg.parsed_uri.user == "user;par=u%40example.net"
    assert msg.parsed_uri.host == "example.com"
    assert msg.parsed_uri.params == {}
    assert msg.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_unknown_via_transports_are_kept() -> None:
    msg = parse_message(fixture("valid/transports.sip"))
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_binary_multipart_body_with_nul_bytes() -> None:
    data = fixture("valid/mpart01.sip")
    msg = parse_message(data)
    assert b"\x00binary\x00" in msg.body
    assert msg.body == data.split(b"\r\n\r\n", 1)[1]
    assert msg.serialize() == data


def test_utf8_reason_phrase() -> None:
    msg = parse_message(fixture("valid/unreason.sip"))
    assert isinstance(msg, Response)
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert msg.serialize().startswith(b"SIP/2.0 200 = 2**3")


def test_empty_reason_phrase() -> None:
    msg = parse_message(fixture("valid/noreason.sip"))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (100, "")


def test_unknown_and_novel_uri_schemes_are_kept() -> None:
    msg = parse_message(fixture("valid/unkscm.sip"))
    assert isinstance(msg, Request)
    assert msg.parsed_uri.scheme == "nobodyknowsthisscheme"
    assert msg.parsed_uri.opaque == "totallyopaquecontent"
    msg = parse_message(fixture("valid/novelsc.sip"))
    assert isinstance(msg, Request)
    assert str(msg.parsed_uri) == "soap.beep://192.0.2.103:3002"


def test_ipv6_references_in_uri_via_received_and_contact() -> None:
    # RFC 5118 §4.1, §4.5: bracketed references, received with and without brackets.
    msg = parse_message(fixture("valid/ipv6-good.sip"))
    assert isinstance(msg, Request)
    assert msg.parsed_uri.host == "[2001:db8::10]"
    first, second = msg.vias
    assert (first.host, first.port, first.received) == (
        "[2001:db8::9:1]",
        None,
        "[2001:db8::9:255]",
    )
    assert (second.host, second.port, second.received) == (
        "[2001:db8::9:ff]",
        5070,
        "2001:db8::9:255",
    )
    contact = msg.contacts[0].uri
    assert (contact.host, contact.port, contact.transport) == ("[2001:db8::1]", 5080, "tcp")


def test_ipv6_port_inside_brackets_is_part_of_the_address() -> None:
    # RFC 5118 §4.3: "[2001:db8::10:5070]" is an address, no port.
    msg = parse_message(fixture("valid/ipv6-port-in-brackets.sip"))
    assert isinstance(msg, Request)
    assert (msg.parsed_uri.host, msg.parsed_uri.port) == ("[2001:db8::10:5070]", None)


def test_ipv4_mapped_ipv6() -> None:
    msg = parse_message(fixture("valid/ipv4-mapped.sip"))
    assert msg.top_via.host == "[::ffff:192.0.2.10]"
    assert msg.top_via.port == 19823


def test_tel_request_uri() -> None:
    msg = parse_message(fixture("valid/tel-uri.sip"))
    assert isinstance(msg, Request)
    uri = msg.parsed_uri
    assert (uri.scheme, uri.user, uri.params) == (
        "tel",
        "+1-201-555-0123",
        {"phone-context": "example.com"},
    )
    assert msg.to_addr.uri.equivalent(parse_uri("tel:+1.201.555.0123;phone-context=example.com"))


def test_bare_lf_and_leading_crlf_are_tolerated() -> None:
    assert parse_message(fixture("valid/bare-lf.sip")).call_id == "lf-1"
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    assert parse_message(fixture("valid/leading-crlf.sip")).call_id == "crlf-1"


def test_compact_forms_map_to_canonical_names() -> None:
    data = (
        crlf("""
INVITE sip:bob@example.com SIP/2.0
v: SIP/2.0/UDP a.example.com;branch=z9hG4bKc1
Max-Forwards: 70
t: <sip:bob@example.com>
f: <sip:al@example.com>;tag=x
i: compact-1
CSeq: 1 INVITE
m: <sip:al@a.example.com>
k: timer
s: hello
e: gzip
o: presence
u: dialog
r: <sip:carol@example.com>
b: <sip:al@example.com>
x: 1800
c: text/plain
y: sig
l: 2
""")
        + b"ok"
    )
    msg = parse_message(data)
    assert msg.call_id == "compact-1"
    assert msg.from_tag == "x"
    by_name = msg.headers_by_name()
    for name in (
        "Via",
        "To",
        "From",
        "Call-ID",
        "Contact",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Event",
        "Allow-Events",
        "Refer-To",
        "Referred-By",
        "Session-Expires",
        "Content-Type",
        "Identity",
        "Content-Length",
    ):
        assert name in by_name, name
    assert msg.get("content-type") == msg.get("C") == "text/plain"
    assert msg.body == b"ok"


def test_several_values_split_only_at_top_level_commas() -> None:
    data = invite(Contact='"Doe, John" <sip:j@a.example.com;x=1,2>, <sip:k@b.example.com>')
    msg = parse_message(data)
    assert msg.get_all("Contact") == [
        '"Doe, John" <sip:j@a.example.com;x=1,2>',
        "<sip:k@b.example.com>",
    ]
    # A header that is not a list keeps its commas (Date, Subject, digest credentials).
    msg = parse_message(invite(Date="Sat, 13 Nov 2010 23:29:00 GMT"))
    assert msg.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_several_lines_of_one_header_are_one_list() -> None:
    data = invite().replace(
        b"Max-Forwards",
        b"Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2.example.com;lr>, "
        b"<sip:p3.example.com;lr>\r\nMax-Forwards",
    )
    msg = parse_message(data)
    assert [r.uri.host for r in msg.routes] == [
        "p1.example.com",
        "p2.example.com",
        "p3.example.com",
    ]


def test_quoted_pairs_in_display_name() -> None:
    msg = parse_message(invite(From='"A \\"quoted\\" \\\\ name" <sip:a@example.com>;tag=q1'))
    assert msg.from_tag == "q1"
    assert msg.from_addr.display_name == 'A "quoted" \\ name'


def test_unknown_method_header_and_params_are_kept() -> None:
    data = invite(start="FOOBAR sip:bob@biloxi.example.com;zork=1 SIP/2.0", CSeq="1 FOOBAR")
    data = data.replace(b"Contact:", b"X-Weird-Thing: a;b=c\r\nContact:")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.method == "FOOBAR"
    assert msg.parsed_uri.params == {"zork": "1"}
    assert msg.get("x-weird-thing") == "a;b=c"
    assert msg.serialize() == data


def test_method_is_case_sensitive() -> None:
    # RFC 3261 §7.1: "invite" is not INVITE; kept as received (CSeq must match it).
    msg = parse_message(invite(start="invite sip:b@example.com SIP/2.0", CSeq="1 invite"))
    assert isinstance(msg, Request)
    assert msg.method == "invite"


def test_lowercase_version_is_accepted() -> None:
    msg = parse_message(invite(start="INVITE sip:b@example.com sip/2.0"))
    assert isinstance(msg, Request)


def test_body_framed_by_content_length() -> None:
    data = invite(Content_Length="5").replace(b"\r\n\r\n", b"\r\n\r\nhello")
    assert parse_message(data).body == b"hello"
    # Without Content-Length on a datagram the body is the rest of the datagram.
    data = invite(Content_Length="").replace(b"\r\n\r\n", b"\r\n\r\nrest")
    assert parse_message(data).body == b"rest"


# -- defects: the RFC's answer is carried on the error ---------------------------------------

INVALID = {
    "badinv01": (400, "Via"),
    "clerr": (400, "Content-Length 9999 larger"),
    "ncl": (400, "negative Content-Length"),
    "scalar02": (400, "CSeq number"),
    "quotbal": (400, "unterminated quoted string in To"),
    "ltgtruri": (400, "enclosed in <>"),
    "lwsruri": (400, "whitespace inside the Request-URI"),
    "lwsstart": (400, "extra spaces"),
    "trws": (400, "extra spaces"),
    "escruri": (400, "headers in the Request-URI"),
    "regbadct": (400, "not enclosed in <>"),
    "badaspec": (400, "whitespace inside <URI> in To"),
    "baddn": (400, "several values in single-value header From"),
    "badvers": (505, "SIP/7.0"),
    "mismatch01": (400, "CSeq method INVITE differs from request method OPTIONS"),
    "mismatch02": (400, "differs from request method NEWMETHOD"),
    "bigcode": (None, "status code"),
    "status-700": (None, "outside 100-699"),
    "insuf": (400, "missing Call-ID"),
    "multi01": (400, "several values in single-value header"),
    "cl-conflict": (400, "conflicting Content-Length"),  # RFC 4475 §3.1.4.9 "mcl01"
    "baddate": (400, "Date not in GMT"),
    "ipv6-bad": (400, "IPv6 address without brackets"),
    "cseq-range": (400, "out of range"),
}


def _parse_fully(data: bytes) -> None:
    parse_message(data).validate()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_fixture_answers_as_the_rfc_says(name: str) -> None:
    status, detail = INVALID[name]
    with pytest.raises(SipParseError) as caught:
        _parse_fully(fixture(f"invalid/{name}.sip"))
    err = caught.value
    assert err.status == status
    assert detail in err.detail
    if status is None:
        assert str(err).startswith("drop: ")
    else:
        assert str(err).startswith(f"{status} {err.reason}: ")


def test_every_invalid_fixture_has_an_expectation() -> None:
    assert sorted(f"invalid/{n}.sip" for n in INVALID) == fixture_names("invalid")


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Call_ID", "missing Call-ID"),
        ("From", "missing From"),
        ("To", "missing To"),
        ("CSeq", "missing CSeq"),
        ("Via", "missing Via"),
    ],
)
def test_missing_mandatory_header_is_400(header: str, detail: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(invite(**{header: ""}))
    assert (caught.value.status, caught.value.reason) == (400, "Bad Request")
    assert caught.value.detail == detail


def test_response_without_max_forwards_is_fine_but_defects_are_dropped() -> None:
    ok = crlf("""
SIP/2.0 180 Ringing
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1
To: <sip:b@example.com>;tag=2
From: <sip:a@example.com>;tag=1
Call-ID: r1
CSeq: 1 INVITE
Content-Length: 0
""")
    msg = parse_message(ok)
    assert isinstance(msg, Response) and msg.max_forwards is None
    with pytest.raises(SipParseError) as caught:
        parse_message(ok.replace(b"Call-ID: r1\r\n", b""))
    assert caught.value.status is None  # a response is never answered (RFC 3261 §18.1.2)
    assert str(caught.value) == "drop: missing Call-ID"


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"Call_ID": "a, b"}, "Call-ID"),
        (
            {"To": "<sip:a@example.com>, <sip:b@example.com>"},
            "several values in single-value header To",
        ),
        (
            {"From": "<sip:a@x>;tag=1, <sip:b@x>;tag=2"},
            "several values in single-value header From",
        ),
        ({"CSeq": "1 INVITE, 2 INVITE"}, "CSeq"),
        ({"Max_Forwards": "70, 69"}, "Max-Forwards"),
        ({"CSeq": "4294967296 INVITE"}, "out of range (> 2^32-1)"),
        ({"CSeq": "-1 INVITE"}, "CSeq number"),
        ({"CSeq": "1 ACK"}, "differs from request method"),
        ({"Max_Forwards": "256"}, "Max-Forwards"),
        ({"Content_Length": "abc"}, "invalid Content-Length"),
        ({"Content_Length": "-1"}, "negative Content-Length"),
        ({"From": '"Alice <sip:alice@example.com>;tag=1'}, "unterminated quoted string in From"),
        ({"start": "INVITE sip:bob@biloxi.example.com SIP/3.0"}, "version SIP/3.0"),
        ({"start": "INVITE sip:bob @biloxi.example.com SIP/2.0"}, "Request-URI"),
        ({"start": "INVITE <sip:bob@biloxi.example.com> SIP/2.0"}, "enclosed in <>"),
        ({"start": "INVITE sip:bob@biloxi.example.com"}, "malformed request line"),
        ({"start": "INV ITE"}, "malformed request line"),
        ({"start": "INVITE bob SIP/2.0"}, "without scheme"),
    ],
)
def test_request_defects(overrides: dict[str, str], detail: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(invite(**overrides))
    assert caught.value.status in (400, 505)
    assert detail in str(caught.value)


def test_other_version_is_505() -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(invite(start="INVITE sip:bob@biloxi.example.com SIP/2.1"))
    assert (caught.value.status, caught.value.reason) == (505, "Version Not Supported")


def test_two_equal_content_length_lines_are_accepted() -> None:
    data = invite().replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 0")
    assert parse_message(data).body == b""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"garbage",
        b"INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n",
        b"SIP/2.0 2OO OK\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\n continuation first\r\n\r\n",
    ],
)
def test_garbage_raises_only_sip_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


@pytest.mark.parametrize(
    "overrides",
    [
        {"Expires": "1" + "0" * 5000},  # longer than Python's int() string limit
        {"Contact": "<sip:a@example.com>;expires=\u00b2"},  # a Unicode digit is no DIGIT
        {"Via": "SIP/2.0/UDP h.example.com:\u00b2\u00b2;branch=z9hG4bK1"},
        {"Contact": "<sip:a@example.com:\u0663>"},
        {"Retry-After": "99999999999"},
        {"Warning": '1812 overture "In Progress"'},  # RFC 4475 §3.1.2.5: 3-digit code
    ],
)
def test_overlarge_or_non_ascii_numbers_are_400(overrides: dict[str, str]) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(invite(**overrides)).validate()
    assert caught.value.status == 400


def test_header_folded_over_many_lines_is_joined_in_linear_time() -> None:
    folded = b"X-Long: a" + b"\r\n b" * 30000
    data = invite().replace(b"Contact: <", folded + b"\r\nContact: <")
    msg = parse_message(data)
    assert msg.get("X-Long") == "a" + " b" * 30000
    assert msg.serialize() == data  # the folds are kept byte for byte


def test_max_forwards_zero_parses() -> None:
    # RFC 4475 §3.1.4.11: answering it (483 or an OPTIONS reply) is the element's business.
    assert parse_message(fixture("valid/zeromf.sip")).max_forwards == 0


def test_request_without_max_forwards_parses_as_rfc2543() -> None:
    # RFC 4475 §3.4.1 (inv2543) has no Max-Forwards: a proxy accepts it and adds one
    # (RFC 3261 §16.6 step 3), so the parser reports None rather than a 400.
    msg = parse_message(invite(Max_Forwards=""))
    assert msg.max_forwards is None
    msg.validate()


def test_rfc2543_syntax_is_accepted() -> None:
    # RFC 4475 §3.2.1: no branch, addr-spec To with user=phone.
    msg = parse_message(fixture("valid/inv2543.sip"))
    assert msg.top_via.branch is None
    assert msg.to_addr.params == {"user": "phone"}  # header parameter in addr-spec form
    assert msg.record_routes[0].uri.params["maddr"] == "ss1.example.com"


def test_contact_addr_spec_parameters_belong_to_the_header() -> None:
    # RFC 4475 §3.1.4.12 "cparam01": ";unknownparam" is a contact parameter, not a URI one.
    contact = parse_message(fixture("valid/cparam01.sip")).contacts[0]
    assert contact.uri.params == {}
    assert contact.params == {"unknownparam": None}


def test_invalid_utf8_in_routing_fields_is_400() -> None:
    # Call-ID, tags and the Request-URI are ASCII by grammar; undecodable bytes are malformed.
    data = invite().replace(b"a84b4c76e66710", b"a84\xff\xfe")
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert caught.value.status == 400 and "UTF-8" in caught.value.detail
    # Elsewhere (an unknown header) any byte is kept and round-trips.
    data = invite().replace(b"Contact:", b"X-Bytes: \xff\xfe\r\nContact:")
    msg = parse_message(data)
    assert msg.serialize() == data


def test_more_header_fields_than_the_limit_is_513() -> None:
    from shared.sip.limits import MAX_HEADER_LINES

    many = "".join(f"X-H{i}: {i}\r\n" for i in range(MAX_HEADER_LINES))
    with pytest.raises(SipParseError) as caught:
        parse_message(invite().replace(b"Content-Length", many.encode() + b"Content-Length"))
    assert caught.value.status == 513
    # A response is dropped, never answered.
    with pytest.raises(SipParseError) as caught:
        parse_message(b"SIP/2.0 200 OK\r\n" + invite().split(b"\r\n", 1)[1].replace(
            b"Content-Length", many.encode() + b"Content-Length"))
    assert caught.value.status is None


def test_more_routing_values_than_the_limit_is_513_on_validation() -> None:
    from shared.sip.limits import MAX_ROUTING_VALUES

    routes = ", ".join(f"<sip:p{i}.example.com;lr>" for i in range(MAX_ROUTING_VALUES + 1))
    msg = parse_message(invite(Route=routes))
    with pytest.raises(SipParseError) as caught:
        msg.validate()
    assert caught.value.status == 513 and "Route" in caught.value.detail
    ok = parse_message(invite(Route=routes.rsplit(", ", 1)[0]))
    ok.validate()


def test_validated_lines_spare_repeated_lines_but_never_accept_bad_ones() -> None:
    from shared.sip import ValidatedLines

    known = ValidatedLines(limit=100)
    good = parse_message(invite(Route="<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"))
    good.validate(known)
    assert known.lines[b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>"] == 2
    again = parse_message(invite(Route="<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"))
    again.validate(known)
    assert again.top_via.branch == "z9hG4bK776asdhds"  # Vias still parse on demand
    bad = parse_message(invite(Contact="<sip:alice@pc33.atlanta.example.com>;;expires=x"))
    with pytest.raises(SipParseError):
        bad.validate(known)
    with pytest.raises(SipParseError):
        bad.validate(known)  # still refused: only lines that passed are remembered


@pytest.mark.parametrize("name", ["Require", "Proxy-Require", "Supported", "Unsupported"])
def test_option_tags_must_be_tokens(name: str) -> None:
    # A proxy echoes Proxy-Require values in Unsupported (420): they must be tokens.
    parse_message(invite(**{name.replace("-", "_"): "100rel, timer"})).validate()
    with pytest.raises(SipParseError) as caught:
        parse_message(invite(**{name.replace("-", "_"): "foo@bar"})).validate()
    assert caught.value.status == 400 and "option-tag" in caught.value.detail


@pytest.mark.parametrize("bad", ["a\x00b", "a\rb", "\x00"])
def test_nul_or_bare_cr_in_a_header_is_400_but_a_quoted_pair_nul_is_fine(bad: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(invite(Subject=bad))
    assert caught.value.status == 400 and "bare CR" in caught.value.detail
    parse_message(invite(Subject='"quoted \\\x00 pair"')).validate()  # RFC 4475 intmeth
