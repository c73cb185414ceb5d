"""Property tests: the parser only ever raises its own error, and round-trips what it accepts.

Inputs come from three sources: arbitrary bytes, valid fixture messages with random damage
(bytes inserted, deleted or replaced), and messages generated from the grammar's pieces
(tokens, quoted display names with quoted-pairs, compact names, folding, binary bodies).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.sip import Request, SipParseError, StreamFramer, parse_message
from tests.unit.sip.helpers import fixture, fixture_names

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [fixture(n) for n in fixture_names("valid") + fixture_names("invalid")]


def _check_round_trip(data: bytes) -> None:
    """Parse; when accepted, serialize(parse(m)) must parse back equal (and validate alike)."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    again = parse_message(msg.serialize())
    assert again == msg
    assert again.serialize() == msg.serialize()
    try:
        msg.validate()
    except SipParseError:
        valid = False
    else:
        valid = True
    try:
        again.validate()
    except SipParseError:
        assert not valid
    else:
        assert valid


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(
            st.one_of(
                st.binary(min_size=1, max_size=4),
                st.sampled_from(
                    [
                        b"\r\n",
                        b"\r\n ",
                        b":",
                        b",",
                        b";",
                        b'"',
                        b"<",
                        b">",
                        b"\\",
                        b" ",
                        b"%",
                        b"[",
                        b"]",
                        b"\x00",
                        b"\r\n\r\n",
                        b"=",
                        b"@",
                        b"SIP/2.0",
                    ]
                ),
            )
        )
        if action == "insert":
            data[pos:pos] = chunk
        elif action == "delete":
            del data[pos : pos + len(chunk)]
        else:
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


@SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    _check_round_trip(data)
    try:
        StreamFramer(max_header=300, max_body=300).feed(data)
    except SipParseError as err:
        assert err.stream_fatal


@SETTINGS
@given(damaged())
def test_damaged_messages_raise_only_sip_parse_error_or_round_trip(data: bytes) -> None:
    _check_round_trip(data)


@SETTINGS
@given(damaged(), st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_framer_never_raises_anything_else(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer()
    pos = 0
    try:
        for cut in cuts:
            for item in framer.feed(data[pos : pos + cut]):
                if isinstance(item, bytes):
                    _check_round_trip(item)
            pos += cut
        framer.feed(data[pos:])
    except SipParseError as err:
        assert err.stream_fatal


TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
# RFC 3261 §25.1 hostnames: a label starts and ends with an alphanumeric character.
HOST = st.from_regex(
    r"[a-z]([a-z0-9-]{0,9}[a-z0-9])?(\.[a-z]([a-z0-9-]{0,7}[a-z0-9])?){0,3}", fullmatch=True)
QUOTED_CONTENT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=15,
)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def generated(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE"]) | TOKEN)
    user = draw(TOKEN)
    host = draw(HOST)
    port = draw(st.none() | st.integers(1, 65535))
    hostport = host if port is None else f"{host}:{port}"
    display = draw(st.none() | QUOTED_CONTENT)
    from_tag = draw(TOKEN)
    to_tag = draw(st.none() | TOKEN)
    call_id = draw(TOKEN) + "@" + host
    number = draw(st.integers(0, 2**32 - 1))
    max_forwards = draw(st.integers(0, 255))
    branches = draw(st.lists(TOKEN, min_size=1, max_size=4))
    body = draw(st.binary(max_size=200))
    sep = draw(st.sampled_from([": ", ":", " : ", ":\t"]))
    name = draw(st.sampled_from([("Via", "From", "To", "Call-ID"), ("v", "f", "t", "i")]))
    fold = draw(st.booleans())
    from_value = (
        f"{_quoted(display) if display is not None else ''} <sip:{user}@{hostport}>;tag={from_tag}"
    )
    to_value = f"<sip:{user}@{host}>" + (f";tag={to_tag}" if to_tag is not None else "")
    vias = [f"SIP/2.0/UDP {host};branch=z9hG4bK{b}" for b in branches]
    lines = [
        f"{method} sip:{user}@{hostport} SIP/2.0",
        f"{name[0]}{sep}{', '.join(vias)}",
        f"Max-Forwards{sep}{max_forwards}",
        f"{name[1]}{sep}{from_value}",
        f"{name[2]}{sep}" + ("\r\n " if fold else "") + to_value,
        f"{name[3]}{sep}{call_id}",
        f"CSeq{sep}{number} {method}",
        f"X-Extra{sep}{draw(TOKEN)}",
        f"Content-Length{sep}{len(body)}",
    ]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    facts: dict[str, object] = {
        "method": method,
        "display": display,
        "from_tag": from_tag,
        "to_tag": to_tag,
        "call_id": call_id,
        "cseq": (number, method),
        "max_forwards": max_forwards,
        "branches": ["z9hG4bK" + b for b in branches],
        "body": body,
        "port": port,
    }
    return data, facts


@SETTINGS
@given(generated())
def test_generated_messages_parse_to_what_was_written(
    case: tuple[bytes, dict[str, object]],
) -> None:
    data, facts = case
    msg = parse_message(data)
    msg.validate()
    assert isinstance(msg, Request)
    assert msg.method == facts["method"]
    assert msg.parsed_uri.port == facts["port"]
    assert msg.from_tag == facts["from_tag"]
    assert msg.to_tag == facts["to_tag"]
    assert msg.from_addr.display_name == facts["display"]
    assert msg.call_id == facts["call_id"]
    assert tuple(msg.cseq) == facts["cseq"]
    assert msg.max_forwards == facts["max_forwards"]
    assert [v.branch for v in msg.vias] == facts["branches"]
    assert msg.body == facts["body"]
    assert msg.serialize() == data  # untouched: byte for byte
    _check_round_trip(data)


HEADER_NAMES = st.sampled_from(
    [
        "Via",
        "v",
        "From",
        "To",
        "Contact",
        "m",
        "Route",
        "Record-Route",
        "Expires",
        "Min-Expires",
        "Retry-After",
        "Warning",
        "CSeq",
        "Max-Forwards",
        "Call-ID",
        "Content-Length",
        "Allow",
        "Authorization",
        "X-Any",
    ]
)
VALUE_TEXT = st.lists(
    st.sampled_from(
        [
            *'<>"\\;:,=@[]?&% \t0123456789abcdefsip/.',
            *("\u00b2", "\u0663", "\u00e9", "\u2028", "SIP/2.0/UDP ", "sip:", "tag=", "expires="),
        ]
    ),
    max_size=25,
).map("".join)


@SETTINGS
@given(HEADER_NAMES, VALUE_TEXT, st.booleans())
def test_odd_header_values_raise_only_sip_parse_error(name: str, value: str, add: bool) -> None:
    # Typed views are parsed lazily: reading them must fail only with SipParseError too.
    base = fixture("valid/wsinv.sip")
    line = f"{name}: {value}".encode()
    data = (
        base.replace(b"Content-Type:", line + b"\r\nContent-Type:")
        if add
        else base.replace(b"Max-Forwards: 70", line).replace(b"MaX-fOrWaRdS: 0068", line)
    )
    _check_round_trip(data)
    try:
        msg = parse_message(data)
        msg.validate()
        msg.top_via.rport  # noqa: B018
        msg.top_via.ttl  # noqa: B018
        for value_ in msg.get_all(name):
            assert isinstance(value_, str)
    except SipParseError:
        pass
