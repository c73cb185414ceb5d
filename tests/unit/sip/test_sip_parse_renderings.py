"""The parser's two renderings (compiled: in-place reads of int bytes; interpreted: bytes
methods) give the same messages and the same errors, and the in-place readers answer
what the slices, dicts and splits they replace would."""

from __future__ import annotations

import pytest

from shared.sip import Request, Response, SipParseError, parse_message, parser
from shared.sip.message import _KEY_OF_BYTES, Message
from tests.unit.sip.helpers import fixture, fixture_names

HEADERS = [
    ("Via", "SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK-1"),
    ("From", "sipp <sip:sipp@127.0.0.1:5091>;tag=4242"),
    ("To", "<sip:service@127.0.0.1:5090>"),
    ("Call-ID", "1-4242@127.0.0.1"),
    ("CSeq", "1 INVITE"),
    ("Max-Forwards", "70"),
    ("Content-Length", "0"),
]


def _message(start: str, **overrides: str) -> bytes:
    """`start`, then HEADERS with `overrides` (name with _ for -, a value; "" drops it; a
    name not in HEADERS is appended, its value the whole raw line)."""
    lines = [start]
    given = {name.replace("_", "-"): value for name, value in overrides.items()}
    for name, value in HEADERS:
        if name in given:
            value = given.pop(name)
            if not value:
                continue
        lines.append(f"{name}: {value}")
    lines.extend(given.values())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _outcome(data: bytes, compiled: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(parser, "_COMPILED", compiled)
    try:
        msg = parse_message(data)
    except SipParseError as err:
        return ("error", err.status, err.detail)
    first: tuple[object, ...] = (
        (msg.method, msg.uri) if isinstance(msg, Request) else (msg.status, msg.reason))
    assert isinstance(msg, Message)
    return (type(msg).__name__, first, msg._keys, msg._lines, msg.body, msg.call_id,
            tuple(msg.cseq), msg.from_tag, msg.to_tag, msg.max_forwards)


REQUEST_LINES = [
    "INVITE sip:a@b SIP/2.0", "ACK sip:a@b SIP/2.0", "invite sip:a@b SIP/2.0",
    "FOO sip:a@b SIP/2.0", "INVITE <sip:a@b> SIP/2.0", "INVITE sip:a@b sip/2.0",
    "INVITE sip:a@b SIP/2.0 ", "INVITE  sip:a@b SIP/2.0", "INVITE sip:a@b SIP/2.1",
    "INVITE ab SIP/2.0", "IN-VITE sip:a@b SIP/2.0", "INVITE sip:a@b\udcff SIP/2.0",
    "INVITE sip:a@b SIP/2.0x", "INVITE sip:a@b SIP/2.", "INVITE\tsip:a@b SIP/2.0",
    "INVITE sip:a@b", "INVITE", " INVITE sip:a@b SIP/2.0", "INVITE : SIP/2.0",
    "INVITÉ sip:a@b SIP/2.0", "INVITE sip:é@b SIP/2.0", "INVITES sip:a@b SIP/2.0",
]
STATUS_LINES = [
    "SIP/2.0 200 OK", "SIP/2.0 200 Okay", "SIP/2.0 200", "SIP/2.0 200 ", "SIP/2.0 180 Ringing",
    "SIP/2.0 299 Whatever", "SIP/2.0 099 Low", "SIP/2.0 700 High", "SIP/2.0 20x OK",
    "sip/2.0 200 OK", "SIP/2.0  200 OK", "SIP/2.0 2000 OK", "SIP/2.0 200 Ré", "SIP/2.0 200 O",
    "SIP/2.0 200 OK OK", "SIP/2.0 200\tOK", "SIP/2.0 200 \udcff", "SIP/2.1 200 OK",
    "SIP/2.0 486 Busy Here", "SIP/2.0 486 busy here", "SIP/2.0 200 OKK", "SIP/2.0 100 Trying",
]
HEADER_CASES: list[dict[str, str]] = [
    {"Max_Forwards": "070"}, {"Max_Forwards": "7a"}, {"Max_Forwards": "255"},
    {"Max_Forwards": "256"}, {"Max_Forwards": ""}, {"Max_Forwards": "0"},
    {"Content_Length": "0000000000"}, {"Content_Length": "12345678901"},
    {"Content_Length": "-1"}, {"Content_Length": "4"}, {"Content_Length": "x"},
    {"CSeq": "0000000001 INVITE"}, {"CSeq": "1 invite"}, {"CSeq": "1  INVITE"},
    {"CSeq": "abc INVITE"}, {"CSeq": "4294967295 INVITE"}, {"CSeq": "1 INVITEX"},
    {"CSeq": "1"}, {"CSeq": "1 IN-VITE"}, {"CSeq": "12 ACK"},
    {"From": '"A ;tag=x" <sip:a@b>;tag=1'}, {"From": "<sip:a@b;tag=x>"},
    {"From": "<sip:a@b>;TAG=x"}, {"From": "<sip:a@b>;tag=x;foo"}, {"From": "sip:a@b;tag=t"},
    {"From": '"A\\"B" <sip:a@b>;tag=1'}, {"From": "<sip:a@b>;tag=1, <sip:c@d>"},
    {"From": "<sip:a@b>;tag=\udcff"}, {"From": "<sip:a@b>"},
    {"To": "<sip:a@b>;tag= x ;y"}, {"To": "<sip:a@b>;Tag=x"}, {"To": "<sip:a;tag=1@b>"},
    {"To": '"B" <sip:b@c>;tag=2'}, {"To": "sip:b@c;tag=3"}, {"To": "<sip:b@c>;x=1"},
    {"Call_ID": "a b"}, {"Call_ID": "a,b"}, {"Call_ID": "\udcff"},
    {"X": "VIA: SIP/2.0/UDP h;branch=z9hG4bK-2"}, {"X": "ViA: SIP/2.0/UDP h"},
    {"X": "v: SIP/2.0/UDP h"}, {"X": "V: SIP/2.0/UDP h"}, {"X": "Via : SIP/2.0/UDP h"},
    {"X": "X-Custom: 1"}, {"X": "Via"}, {"X": ": x"}, {"X": "i: other"},
    {"X": "CONTENT-TYPE: text/plain"}, {"X": "c: text/plain"}, {"X": " folded"},
    {"X": "Subject:"}, {"X": "Max-Forwards: 70"}, {"X": "From: <sip:x@y>"},
    {"X": "Content-Length: 0"}, {"X": "Content-Length: 1"}, {"X": "\udcff: x"},
]


@pytest.mark.parametrize("start", REQUEST_LINES)
def test_request_lines_read_alike_in_both_renderings(
        start: str, monkeypatch: pytest.MonkeyPatch) -> None:
    method = start.split(" ")[0] if " " in start else "INVITE"
    data = _message(start, CSeq=f"1 {method}")
    assert _outcome(data, True, monkeypatch) == _outcome(data, False, monkeypatch)


@pytest.mark.parametrize("start", STATUS_LINES)
def test_status_lines_read_alike_in_both_renderings(
        start: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _message(start, Max_Forwards="")
    assert _outcome(data, True, monkeypatch) == _outcome(data, False, monkeypatch)


@pytest.mark.parametrize("overrides", HEADER_CASES, ids=repr)
def test_routing_headers_read_alike_in_both_renderings(
        overrides: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for start in ("INVITE sip:a@b SIP/2.0", "SIP/2.0 200 OK"):
        data = _message(start, **overrides)
        assert _outcome(data, True, monkeypatch) == _outcome(data, False, monkeypatch)


BARE_CR_CASES = [
    b"INVITE sip:a@b SIP/2.0\r\n", b"INVITE sip:a@b\r SIP/2.0\r\n", b"SIP/2.0 200 O\rK\r\n",
    b"SIP/2.0 200 OK\r\n", b"INVITE sip:a@b SIP/2.0\r\r\n", b"INVITE sip:a@b SIP/2.0\r\n\r",
]


@pytest.mark.parametrize("start", BARE_CR_CASES, ids=repr)
@pytest.mark.parametrize("where", ["none", "name", "value", "end", "alone", "lf-cr"])
def test_a_bare_cr_is_found_alike_in_both_renderings(
        start: bytes, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled rendering looks for a CR line by line (`_has_bare_cr`), the interpreted
    one counts the block's CRs against its CRLFs: the same messages refused."""
    extra = {"none": b"", "name": b"X-\rA: 1\r\n", "value": b"X-A: 1\r2\r\n",
             "end": b"X-A: 1\r\r\n", "alone": b"\r\r\n", "lf-cr": b"X-A: 1\n\r2\r\n"}[where]
    data = start + _message("X").split(b"\r\n", 1)[1].replace(b"Via:", extra + b"Via:", 1)
    head = data[:data.find(b"\r\n\r\n")]
    lines = head.split(b"\r\n")
    assert parser._has_bare_cr(lines) == (head.count(b"\r") != len(lines) - 1)
    assert _outcome(data, True, monkeypatch) == _outcome(data, False, monkeypatch)
    if parser._has_bare_cr(lines):
        outcome = _outcome(data, True, monkeypatch)
        assert isinstance(outcome, tuple) and outcome[0] == "error"
        assert outcome[2] == "NUL or bare CR in the header block"


@pytest.mark.parametrize("name", fixture_names("valid") + fixture_names("invalid"))
def test_fixtures_read_alike_in_both_renderings(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = fixture(name)
    assert _outcome(data, True, monkeypatch) == _outcome(data, False, monkeypatch)


def test_a_header_name_is_looked_up_in_place_as_the_dict_would() -> None:
    lines = [spelling + b": x" for spelling in _KEY_OF_BYTES]
    lines += [spelling[:-1] + b": x" for spelling in _KEY_OF_BYTES]
    lines += [spelling + b"x: x" for spelling in _KEY_OF_BYTES]
    lines += [spelling.swapcase() + b": x" for spelling in _KEY_OF_BYTES]
    lines += [b"", b":", b": x", b"Via", b"\xff: x", b"Via\xff: x"]
    for line in lines:
        end = line.find(b":")
        end = len(line) if end < 0 else end
        assert parser._name_key(line, end) == _KEY_OF_BYTES.get(line[:end]), line


def test_the_usual_methods_and_reasons_are_shared_constants() -> None:
    # What the compiled core reads in place is not decoded again for every message.
    for method in ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS"):
        raw = f"{method} sip:a@b SIP/2.0".encode()
        assert parser._method_at(raw, 0, len(method)) is parser._method_at(raw, 0, len(method))
        assert parser._method_at(raw, 0, len(method)) == method
    assert parser._method_at(b"invite", 0, 6) == "invite"
    assert parser._reason_at(b"SIP/2.0 180 Ringing", 180) is parser._reason_at(
        b"SIP/2.0 180 Ringing", 180)
    assert parser._reason_at(b"SIP/2.0 180 ringing", 180) == "ringing"
    assert parser._reason_at(b"SIP/2.0 180 ", 180) == ""


@pytest.mark.parametrize("compiled", [True, False])
def test_a_start_line_is_written_back_as_received_until_it_is_edited(
        compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parser, "_COMPILED", compiled)
    req = parse_message(_message("INVITE sip:a@b SIP/2.0"))
    assert isinstance(req, Request)
    # The received line itself, not a new one per serialization; copies share it.
    assert req._start_line() is req._start_line() is req.copy()._start_line()
    assert req.serialize() == _message("INVITE sip:a@b SIP/2.0")
    edited = req.copy()
    edited.set_uri("sip:c@d")
    assert edited.serialize().startswith(b"INVITE sip:c@d SIP/2.0\r\n")
    assert edited.copy().serialize().startswith(b"INVITE sip:c@d SIP/2.0\r\n")
    renamed = req.copy()
    renamed.method = "FOO"
    assert renamed.serialize().startswith(b"FOO sip:a@b SIP/2.0\r\n")
    assert renamed.copy().serialize().startswith(b"FOO sip:a@b SIP/2.0\r\n")
    assert req.serialize().startswith(b"INVITE sip:a@b SIP/2.0\r\n")  # the original kept
    lower = parse_message(_message("INVITE sip:a@b sip/2.0"))
    assert lower.serialize().startswith(b"INVITE sip:a@b SIP/2.0\r\n")

    resp = parse_message(_message("SIP/2.0 180 Ringing", Max_Forwards=""))
    assert isinstance(resp, Response)
    assert resp._start_line() is resp._start_line() is resp.copy()._start_line()
    for start, written in (("SIP/2.0 180 ringing  x", b"SIP/2.0 180 ringing  x"),
                           ("SIP/2.0 180", b"SIP/2.0 180 "), ("SIP/2.0 180 ", b"SIP/2.0 180 "),
                           ("SIP/2.0 180  OK", b"SIP/2.0 180  OK")):
        data = _message(start, Max_Forwards="")
        assert parse_message(data).serialize().split(b"\r\n")[0] == written
    status = resp.copy()
    status.status = 183
    assert status.serialize().startswith(b"SIP/2.0 183 Ringing\r\n")
    assert status.copy().serialize().startswith(b"SIP/2.0 183 Ringing\r\n")
    reason = resp.copy()
    reason.reason = "Ringing"[:4] + "ing"  # equal text, another object: written anew
    assert reason.serialize().startswith(b"SIP/2.0 180 Ringing\r\n")
    reason.reason = "Alerting"
    assert reason.serialize().startswith(b"SIP/2.0 180 Alerting\r\n")
    assert reason.copy().serialize().startswith(b"SIP/2.0 180 Alerting\r\n")
    assert resp.serialize().startswith(b"SIP/2.0 180 Ringing\r\n")
