"""Stream framing for TCP (RFC 3261 §18.3) and keep-alives (RFC 5626 §3.5.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.sip import KeepAlive, SipParseError, StreamFramer, parse_message
from tests.unit.sip.helpers import fixture, invite

WITH_BODY = invite(Content_Length="4").replace(b"\r\n\r\n", b"\r\n\r\nv=0\n")


def test_messages_split_across_and_within_reads() -> None:
    framer = StreamFramer()
    stream = WITH_BODY + invite() + WITH_BODY
    out: list[bytes | KeepAlive] = []
    for i in range(0, len(stream), 7):  # arbitrary chunking
        out.extend(framer.feed(stream[i : i + 7]))
    assert out == [WITH_BODY, invite(), WITH_BODY]
    assert framer.buffered == 0
    assert parse_message(out[0]).body == b"v=0\n"  # type: ignore[arg-type]


def test_binary_body_with_crlfcrlf_inside_is_framed_by_length() -> None:
    data = fixture("valid/mpart01.sip")
    framer = StreamFramer()
    assert framer.feed(data + data[:10]) == [data]
    assert framer.feed(data[10:]) == [data]


def test_ping_and_pong_between_messages() -> None:
    framer = StreamFramer()
    out = framer.feed(b"\r\n\r\n" + invite() + b"\r\n")
    assert out == [KeepAlive(ping=True), invite()]
    assert out[0].needs_pong  # type: ignore[union-attr]
    # The lone CRLF may still be the start of a ping: wait for more bytes.
    assert framer.feed(b"") == []
    assert framer.feed(b"\r\n") == [KeepAlive(ping=True)]
    # A pong, then the start of a message: the pong is reported once it is unambiguous.
    assert framer.feed(b"\r\nINV") == [KeepAlive(ping=False)]
    assert framer.feed(invite()[3:]) == [invite()]


def test_incomplete_message_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(WITH_BODY[:-2]) == []
    assert framer.buffered == len(WITH_BODY) - 2
    assert framer.feed(WITH_BODY[-2:]) == [WITH_BODY]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (invite(Content_Length=""), "missing Content-Length"),
        (invite(Content_Length="-3"), "negative Content-Length"),
        (invite(Content_Length="x"), "invalid Content-Length"),
        (invite().replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 5"), "conflicting"),
    ],
)
def test_unframeable_stream_is_fatal(data: bytes, detail: str) -> None:
    with pytest.raises(SipParseError) as caught:
        StreamFramer().feed(data)
    assert caught.value.stream_fatal
    assert caught.value.status == 400
    assert detail in caught.value.detail


def test_body_over_the_limit_is_413_and_fatal() -> None:
    # RFC 3261 §21.4.11: the body is larger than the server is willing to process.
    with pytest.raises(SipParseError) as caught:
        StreamFramer(max_body=1000).feed(invite(Content_Length="1001"))
    assert caught.value.stream_fatal
    assert caught.value.status == 413 and "over the limit" in caught.value.detail


def test_header_block_without_end_is_fatal_past_the_limit() -> None:
    framer = StreamFramer(max_header=100)
    assert framer.feed(b"INVITE sip:a@b SIP/2.0\r\n") == []
    assert framer.partial
    with pytest.raises(SipParseError) as caught:
        framer.feed(b"X: " + b"y" * 200)
    assert caught.value.stream_fatal
    assert caught.value.status == 513  # RFC 3261 §21.5.7 Message Too Large


def test_header_block_ending_past_the_limit_is_fatal_even_in_one_read() -> None:
    with pytest.raises(SipParseError) as caught:
        StreamFramer(max_header=100).feed(invite(X_Pad="p" * 200))
    assert caught.value.status == 513


def test_a_message_trickled_byte_by_byte_costs_linear_work() -> None:
    # A slow sender must not make every read rescan (or re-parse) what is buffered: feed a
    # 60 KB message one byte at a time and count the bytes `find` is asked to look at.
    body = b"x" * 30000
    head = invite(X_Pad="p" * 30000, Content_Length=str(len(body)))
    data = head + body
    framer = StreamFramer(max_header=65536, max_body=65536)
    out: list[bytes | KeepAlive] = []
    scanned = 0
    real_find = bytearray.find

    class Counting(bytearray):
        def find(self, sub, start=0, *rest):  # type: ignore[no-untyped-def]
            nonlocal scanned
            scanned += len(self) - start
            return real_find(self, sub, start, *rest)

    framer._buf = Counting()
    for i in range(len(data)):
        out.extend(framer.feed(data[i : i + 1]))
    assert out == [data]
    assert scanned < 10 * len(data), f"{scanned} bytes scanned for a {len(data)}-byte message"


def test_keepalive_bytes_are_not_a_partial_message() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []  # could still become a ping
    assert not framer.partial


def test_overlong_content_length_digits_are_fatal_not_a_crash() -> None:
    with pytest.raises(SipParseError) as caught:
        StreamFramer().feed(invite(Content_Length="9" * 5000))
    assert caught.value.stream_fatal and "out of range" in caught.value.detail


VALID = [fixture(n) for n in ("valid/wsinv.sip", "valid/mpart01.sip", "valid/unreason.sip")]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([*range(len(VALID)), -1]), min_size=1, max_size=6),
    st.lists(st.integers(1, 300), min_size=1, max_size=20),
)
def test_any_chunking_gives_back_the_same_messages(order: list[int], cuts: list[int]) -> None:
    # -1 stands for a CRLFCRLF ping between messages.
    stream = b"".join(VALID[i] if i >= 0 else b"\r\n\r\n" for i in order)
    expected = [VALID[i] if i >= 0 else KeepAlive(ping=True) for i in order]
    framer = StreamFramer()
    out: list[bytes | KeepAlive] = []
    pos = 0
    for cut in cuts:
        out.extend(framer.feed(stream[pos : pos + cut]))
        pos += cut
    out.extend(framer.feed(stream[pos:]))
    assert out == expected
    assert framer.buffered == 0
