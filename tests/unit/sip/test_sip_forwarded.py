"""`Request.forwarded`: the proxy's forwarded copy in one pass, the same as its edits."""

from __future__ import annotations

import pytest

from shared.sip import Request, parse_message

INVITE = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Record-Route: <sip:p1.example.com;lr>\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa\r\n"
    "Max-Forwards: 12\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
    "To: <sip:bob@example.com>\r\nCall-ID: f1\r\nCSeq: 7 INVITE\r\n"
    "Content-Length: 0\r\n\r\n")


def _parsed(text: str) -> Request:
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


def _edited(base: Request, uri: str, rrs: tuple[str, ...],
            extra: tuple[str, str] | None) -> Request:
    request = base.copy()
    if uri != request.uri:
        request.set_uri(uri)
    mf = request.max_forwards
    if mf is None:
        request.add_header("Max-Forwards", "70", first=False)
    else:
        request.set_header("Max-Forwards", str(mf - 1))
    for value in reversed(rrs):
        request.add_header("Record-Route", value)
    request.push_via("TCP", "[2001:db8::1]", 5070, "z9hG4bKx.1", extra)
    return request


@pytest.mark.parametrize("extra", [None, ("cid", "3")])
@pytest.mark.parametrize("rrs", [(), ("<sip:a;lr>",), ("<sip:a;lr>", "<sip:b;lr>")])
@pytest.mark.parametrize("uri", ["sip:bob@example.com", "sip:bob@192.0.2.9:5062"])
@pytest.mark.parametrize("text", [INVITE, INVITE.replace("Max-Forwards: 12\r\n", ""),
                                  INVITE.replace("Record-Route: <sip:p1.example.com;lr>\r\n",
                                                 "")])
def test_forwarded_is_the_copy_edited(text: str, uri: str, rrs: tuple[str, ...],
                                      extra: tuple[str, str] | None) -> None:
    base = _parsed(text)
    before = base.serialize()
    one = base.forwarded(uri, rrs, "TCP", "[2001:db8::1]", 5070, "z9hG4bKx.1", extra)
    edited = _edited(base, uri, rrs, extra)
    assert one is not None
    assert one.serialize() == edited.serialize()
    assert one == edited
    assert (one.uri, one.max_forwards, one.call_id, one.cseq, one.from_tag, one.to_tag) == (
        edited.uri, edited.max_forwards, edited.call_id, edited.cseq, edited.from_tag,
        edited.to_tag)
    assert str(one.top_via) == str(edited.top_via) and one.top_via.params == {
        "branch": "z9hG4bKx.1", **dict([extra] if extra else [])}
    assert one.parsed_uri == edited.parsed_uri
    assert [str(v) for v in one.vias] == [str(v) for v in edited.vias]
    assert base.serialize() == before


def test_forwarded_leaves_odd_max_forwards_to_the_edits() -> None:
    assert _parsed(INVITE.replace("Max-Forwards: 12", "Max-Forwards: 0")).forwarded(
        "sip:x@example.com", (), "UDP", "h", 5060, "z9hG4bKx") is None


def test_forwarded_refuses_what_set_uri_and_add_header_refuse() -> None:
    base = _parsed(INVITE)
    with pytest.raises(ValueError):
        base.forwarded("sip:bob@exa mple.com", (), "UDP", "h", 5060, "z9hG4bKx")
    with pytest.raises(ValueError):
        base.forwarded(base.uri, ("<sip:a;lr>\r\nX: y",), "UDP", "h", 5060, "z9hG4bKx")


def test_forwarded_writes_the_received_start_line_back_when_the_uri_stays() -> None:
    base = _parsed(INVITE)
    same = base.forwarded(base.uri, (), "UDP", "192.0.2.5", 5060, "z9hG4bKy.1")
    other = base.forwarded("sip:bob@192.0.2.9", (), "UDP", "192.0.2.5", 5060, "z9hG4bKy.2")
    assert same is not None and other is not None
    assert same._start_line() is base._start_line()  # the received line, no new bytes
    assert other.serialize().startswith(b"INVITE sip:bob@192.0.2.9 SIP/2.0\r\n")
    same.set_uri("sip:carol@example.com")  # an edit after the build still rewrites it
    assert same.serialize().startswith(b"INVITE sip:carol@example.com SIP/2.0\r\n")
