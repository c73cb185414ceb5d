"""ESL framing (services/freeswitch/esl.py FrameParser): header blocks ended by a blank
line, bodies counted in bytes by Content-Length, whatever way TCP cuts the stream."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.freeswitch.esl import MAX_HEADER_BLOCK, Frame, FrameParser, ProtocolError


def frame(headers: dict[str, str], body: str = "") -> bytes:
    payload = body.encode()
    lines = [f"{k}: {v}" for k, v in headers.items()]
    if payload:
        lines.append(f"Content-Length: {len(payload)}")
    return ("\n".join(lines) + "\n\n").encode() + payload


EVENT = json.dumps({"Event-Name": "CUSTOM", "Caller-ID-Name": "Jürgen Çelik 日本",
                    "_body": "naïve ☎"}, ensure_ascii=False)
STREAM = (frame({"Content-Type": "auth/request"})
          + frame({"Content-Type": "command/reply", "Reply-Text": "+OK accepted"})
          + frame({"Content-Type": "api/response"}, "UP 0 years\nünïcödé\n")
          + frame({"Content-Type": "text/event-json"}, EVENT))


def expected() -> list[Frame]:
    return FrameParser().feed(STREAM)


def test_a_whole_stream_gives_each_message_with_its_body() -> None:
    frames = expected()
    assert [f.content_type for f in frames] == [
        "auth/request", "command/reply", "api/response", "text/event-json"]
    assert frames[1].headers["Reply-Text"] == "+OK accepted"
    assert frames[2].text() == "UP 0 years\nünïcödé\n"
    assert json.loads(frames[3].text())["Caller-ID-Name"] == "Jürgen Çelik 日本"


def test_content_length_counts_bytes_not_characters() -> None:
    body = "☎" * 10  # 30 bytes, 10 characters
    [f] = FrameParser().feed(frame({"Content-Type": "api/response"}, body))
    assert len(f.body) == 30 and f.text() == body


def test_byte_by_byte_gives_the_same_frames() -> None:
    parser = FrameParser()
    got: list[Frame] = []
    for i in range(len(STREAM)):
        got += parser.feed(STREAM[i:i + 1])
    assert got == expected()


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=20))
def test_any_cut_gives_the_same_frames(cuts: list[int]) -> None:
    parser = FrameParser()
    got: list[Frame] = []
    last = 0
    for cut in sorted(set(cuts)):
        got += parser.feed(STREAM[last:cut])
        last = cut
    got += parser.feed(STREAM[last:])
    assert got == expected()


def test_a_body_that_has_not_fully_arrived_waits() -> None:
    data = frame({"Content-Type": "api/response"}, "0123456789")
    parser = FrameParser()
    assert parser.feed(data[:-3]) == []
    [f] = parser.feed(data[-3:])
    assert f.text() == "0123456789"


def test_broken_utf8_is_replaced_not_fatal() -> None:
    raw = b"Content-Type: api/response\nContent-Length: 3\n\n\xff\xfeA"
    [f] = FrameParser().feed(raw)
    assert f.text().endswith("A")


@pytest.mark.parametrize("raw", [
    b"Content-Type: api/response\nContent-Length: 12x\n\n",
    b"Content-Type: api/response\nContent-Length: -1\n\n",
    b"no colon on this line\n\n",
    b"Content-Type: api/response\nContent-Length: 999999999999\n\n",
])
def test_garbage_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameParser().feed(raw)


def test_an_endless_header_block_is_refused() -> None:
    parser = FrameParser()
    with pytest.raises(ProtocolError, match="too large"):
        parser.feed(b"X: " + b"a" * (MAX_HEADER_BLOCK + 10))


def test_crlf_line_ends_and_stray_blank_lines_are_tolerated() -> None:
    raw = b"\n\nContent-Type: command/reply\r\nReply-Text: +OK\r\n\n"
    [f] = FrameParser().feed(raw)
    assert f.headers == {"Content-Type": "command/reply", "Reply-Text": "+OK"}
