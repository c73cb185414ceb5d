"""URIs, name-addr and Via values (RFC 3261 §19.1, §20.10, §20.42; RFC 3966; RFC 5118)."""

from __future__ import annotations

import pytest

from shared.sip import SipParseError, parse_name_addr, parse_uri, parse_via


def test_sip_uri_parts() -> None:
    uri = parse_uri("sips:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=x&a=b")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "atlanta.example.com",
        5061,
    )
    assert uri.params == {"transport": "tcp", "lr": None}
    assert uri.headers == {"subject": "x", "a": "b"}
    assert uri.transport == "tcp" and uri.lr
    assert str(uri) == "sips:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=x&a=b"


# RFC 3261 §19.1.4, the two example lists.
EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    # IPv6 references (RFC 5118) compare as addresses, not as text.
    ("sip:[2001:db8::9:1]", "sip:[2001:db8::9:01]"),
    ("sip:[2001:db8::10]:5070", "sip:[2001:db8:0:0:0:0:0:10]:5070"),
    ("tel:+1-201-555-0123", "tel:+1.201.555.0123"),
]
NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice@atlanta.com;maddr=239.255.255.1", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com"),
    ("sip:a%3Bb@atlanta.com", "sip:a;b@atlanta.com"),  # a reserved character stays escaped
    ("sip:[2001:db8::9:1]", "sip:[2001:db8::9:2]"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_uris(a: str, b: str) -> None:
    assert parse_uri(a).equivalent(parse_uri(b))
    assert parse_uri(b).equivalent(parse_uri(a))
    assert parse_uri(a) == parse_uri(b)


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT)
def test_not_equivalent_uris(a: str, b: str) -> None:
    assert not parse_uri(a).equivalent(parse_uri(b))
    assert not parse_uri(b).equivalent(parse_uri(a))


def test_ipv6_uri_with_and_without_port() -> None:
    uri = parse_uri("sip:alice@[2001:db8::10]:5070;transport=udp")
    assert (uri.host, uri.port, uri.host_port) == ("[2001:db8::10]", 5070, "[2001:db8::10]:5070")


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("sip:2001:db8::10", "IPv6 address without brackets"),
        ("sip:[2001:db8::10", "unterminated IPv6"),
        ("sip:[2001:db8:::::10]", "invalid IPv6"),
        ("sip:alice@host:99999", "out of range"),
        ("sip:alice@host:12a", "invalid port"),
        ("sip:alice@", "empty host"),
        ("sip:@host", "empty user"),
        ("sip:alice @host", "whitespace"),
        ("nocolon", "no scheme"),
        ("1sip:x", "invalid scheme"),
        ("tel:", "empty telephone number"),
    ],
)
def test_bad_uris(text: str, detail: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)
    assert caught.value.status == 400
    assert detail in caught.value.detail


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;ext=42")
    assert (uri.scheme, uri.user, uri.host, uri.params) == (
        "tel",
        "+1-201-555-0123",
        "",
        {"ext": "42"},
    )
    assert str(uri) == "tel:+1-201-555-0123;ext=42"


def test_name_addr_forms() -> None:
    quoted = parse_name_addr('"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=1;x')
    assert quoted.display_name == 'Alice "A"'
    assert quoted.uri.params == {"transport": "tcp"}
    assert quoted.params == {"tag": "1", "x": None}
    assert str(quoted) == '"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=1;x'
    token = parse_name_addr("Bob <sip:bob@example.com>")
    assert token.display_name == "Bob" and token.tag is None
    assert str(token) == "Bob <sip:bob@example.com>"
    # addr-spec: every ;param after the URI belongs to the header (RFC 3261 §20.10).
    spec = parse_name_addr("sip:carol@example.com;tag=9;transport=udp")
    assert spec.display_name is None
    assert spec.uri.params == {}
    assert spec.params == {"tag": "9", "transport": "udp"}


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('"Alice <sip:a@example.com>', "unterminated quoted string"),
        ("<sip:a@example.com", "unterminated <URI>"),
        ("< sip:a@example.com>", "whitespace inside <URI>"),
        ("sip:a@example.com?x=1", "not enclosed in <>"),
        ('"Alice" sip:a@example.com', "display name without <URI>"),
        ("<sip:a@example.com> junk", "garbage after <URI>"),
        ("", "empty value"),
    ],
)
def test_bad_name_addr(text: str, detail: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_name_addr(text, "To")
    assert caught.value.status == 400
    assert detail in caught.value.detail


def test_via_parts() -> None:
    via = parse_via(
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=192.0.2.99;rport=1234;"
        "maddr=239.1.1.1;ttl=16"
    )
    assert (via.transport, via.host, via.port) == ("UDP", "192.0.2.1", 5060)
    assert via.branch == "z9hG4bK1" and via.received == "192.0.2.99"
    assert via.rport == 1234 and via.maddr == "239.1.1.1" and via.ttl == 16
    assert str(via).startswith("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1")
    assert parse_via(str(via)) == via


def test_via_with_lws_and_unknown_transport() -> None:
    via = parse_via("SIP / 2.0 / FOO  host.example.com ; branch = z9hG4bKx ; rport")
    assert (via.transport, via.host, via.branch, via.has_rport) == (
        "FOO",
        "host.example.com",
        "z9hG4bKx",
        True,
    )


def test_via_ipv6_sent_by_and_received() -> None:
    via = parse_via("SIP/2.0/TCP [2001:db8::1]:5061;received=2001:db8::99;branch=z9hG4bKv6")
    assert (via.host, via.port, via.received) == ("[2001:db8::1]", 5061, "2001:db8::99")


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ;branch=x",
        "SIP/2.0/UDP h:99999",
        "SIP/2.0/UDP 2001:db8::1",
        "SIP/2.0/UDP [2001:db8::1",
        ";",
    ],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_via(text)
    assert caught.value.status == 400


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_uris_hash_alike(a: str, b: str) -> None:
    assert hash(parse_uri(a)) == hash(parse_uri(b))
    assert len({parse_uri(a), parse_uri(b)}) == 1


@pytest.mark.parametrize(
    "host",
    [
        "exa%41mple.com",  # escapes are userinfo syntax, never host syntax (RFC 3261 §25.1)
        "ex\u00e4mple.com",  # non-ASCII: not a SIP hostname (and IDNA-invalid for DNS)
        "a..b",  # an empty label
        "-a.example.com",
        "a-.example.com",
        "a" * 64 + ".example.com",  # a label over 63 characters
        "127.0.0\x00.1",
        "127.0.0\r.1",
    ],
)
def test_hosts_outside_the_hostname_grammar_are_400(host: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_uri(f"sip:bob@{host}:5060")
    assert caught.value.status == 400
    with pytest.raises(SipParseError):
        parse_via(f"SIP/2.0/UDP {host}:5060;branch=z9hG4bK1")


@pytest.mark.parametrize("host", ["a_b.example.com", "x", "192.0.2.1", "example.com."])
def test_hostnames_and_ipv4_addresses_parse(host: str) -> None:
    assert parse_uri(f"sip:bob@{host}").host == host
    assert parse_via(f"SIP/2.0/UDP {host};branch=z9hG4bK1").host == host


def test_ipv6_reference_with_the_rfc3261_abnf_extra_colon_is_tolerated() -> None:
    # RFC 5118 §4.10: `2001:db8:::192.0.2.1` follows RFC 3261's buggy ABNF; robust parsers
    # accept it as the two-colon form.
    uri = parse_uri("sip:user@[2001:db8:::192.0.2.1]")
    assert uri.host == "[2001:db8:::192.0.2.1]"
    assert uri == parse_uri("sip:user@[2001:db8::192.0.2.1]")
    assert parse_via("SIP/2.0/UDP [2001:db8:::192.0.2.1];branch=z9hG4bKas3").host == (
        "[2001:db8:::192.0.2.1]")
    with pytest.raises(SipParseError):
        parse_via("SIP/2.0/UDP [2001:db8::zz];branch=z9hG4bKas3")
