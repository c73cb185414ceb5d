"""Typed parsing for tests: a test knows which kind of message it holds."""

from __future__ import annotations

from shared.sip import Request, Response, parse_message


def parse_request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request), f"expected a request: {data[:80]!r}"
    return msg


def parse_response(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response), f"expected a response: {data[:80]!r}"
    return msg
