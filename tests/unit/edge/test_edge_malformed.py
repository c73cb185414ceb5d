"""Malformed input: stateless answers with the parser's status, responses dropped."""

from __future__ import annotations

import pytest

from services.edge.stateless import answer_malformed
from shared.sip import Response, parse_message
from tests.unit.edge.proxyharness import Harness

GOOD_HEAD = (
    "Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKm1\r\nMax-Forwards: 70\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: m1\r\n"
)


@pytest.mark.parametrize(("data", "status"), [
    (f"INVITE sip:b@127.0.0.1 SIP/3.0\r\n{GOOD_HEAD}CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
     505),
    (f"INVITE sip:b@127.0.0.1 SIP/2.0\r\n{GOOD_HEAD}CSeq: x INVITE\r\nContent-Length: 0\r\n\r\n",
     400),
    ("INVITE sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKm2\r\n"
     "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"
     "Content-Length: 0\r\n\r\n", 400),  # no Call-ID
])
def test_malformed_request_gets_the_parser_status(data: str, status: int) -> None:
    h = Harness()
    sends = h.feed(data)
    assert len(sends) == 1
    # The answer echoes what it can; a header the request got wrong (CSeq) or lacked
    # (Call-ID) cannot be repaired, so check the bytes rather than re-parse them.
    data_out = sends[0].data
    assert data_out.startswith(b"SIP/2.0 %d " % status)
    assert b"Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKm" in data_out
    assert sends[0].dest.port == 5091


def test_malformed_response_is_dropped_silently() -> None:
    h = Harness()
    assert h.feed("SIP/2.0 abc Broken\r\nVia: SIP/2.0/UDP 127.0.0.1:5060\r\n\r\n") == []
    assert h.feed(b"\x00\xff garbage") == []


def test_answer_without_via_is_impossible_and_dropped() -> None:
    assert answer_malformed(b"INVITE x SIP/2.0\r\nCall-ID: 1\r\n\r\n", 400, "Bad Request") is None


def test_answer_echoes_headers_and_adds_to_tag() -> None:
    data = (f"INVITE sip:b@x SIP/9.9\r\n{GOOD_HEAD}CSeq: 1 INVITE\r\n\r\n").encode()
    out = answer_malformed(data, 505, "Version Not Supported")
    assert out is not None
    resp = parse_message(out)
    assert isinstance(resp, Response)
    assert resp.status == 505 and resp.call_id == "m1" and resp.to_tag
