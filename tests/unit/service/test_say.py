"""A service's stdout line goes out in one write: children share the supervisor's pipe
unbuffered, where print() writes the text and the newline apart and another process's
line could land between them."""

from __future__ import annotations

import sys

import pytest

from shared.service.say import say


class Writes:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.flushed = 0

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushed += 1


def test_a_line_and_its_newline_are_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Writes()
    monkeypatch.setattr(sys, "stdout", stream)
    say("media ready grpc 127.0.0.1:1")
    assert stream.calls == ["media ready grpc 127.0.0.1:1\n"] and stream.flushed == 1

