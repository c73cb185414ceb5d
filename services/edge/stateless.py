"""Stateless answers: to requests the parser rejected (RFC 3261 §8.2, §16.3 step 1), and
the memory of the routing's stateless answers (`RecentAnswers`, §8.2.7).

A malformed request never reached a `Request` object, so `make_response` cannot help; this
module lifts the few header lines a response must echo (Via, From, To, Call-ID, CSeq,
§8.2.6.2) straight out of the raw bytes and builds the answer with the status the parser
chose (`SipParseError.status`).  Without a Via line there is nobody to answer to and the
datagram is dropped; a start line beginning with `SIP/` is a response and is never answered
(§16.7, §18.1.2), nor is an ACK (§17.2.1).
"""

from __future__ import annotations

import hashlib
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RecentAnswers(Generic[K, V]):
    """A routing script's stateless answers, remembered for `hold` seconds (T2) by key.

    Bytes only, no transaction: a retransmission in that window gets the very same bytes (a
    fresh challenge would carry a new nonce, which sloppy clients such as sipp take for a
    second, unexpected response), and the ACK of a stateless non-2xx answer to an INVITE is
    absorbed instead of routed.  Later retransmissions are answered afresh, which §8.2.7
    allows; a compliant client absorbs either in its Completed state (§17.1.2.2).
    Sans-IO: `now` is passed in.
    """

    __slots__ = ("_answers", "hold")

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self._answers: dict[K, tuple[float, V]] = {}  # key -> (deadline, answer)

    def __len__(self) -> int:
        return len(self._answers)

    def remember(self, key: K, answer: V, now: float) -> None:
        answers = self._answers
        while answers:
            oldest = next(iter(answers))
            if answers[oldest][0] > now:
                break
            del answers[oldest]  # deadlines grow with insertion order: oldest first
        answers[key] = (now + self.hold, answer)

    def again(self, key: K, now: float) -> V | None:
        """The answer remembered for `key`, while it is still held."""
        found = self._answers.get(key)
        if found is None or found[0] <= now:
            return None
        return found[1]

_ECHO = {
    b"via": b"Via", b"v": b"Via",
    b"from": b"From", b"f": b"From",
    b"to": b"To", b"t": b"To",
    b"call-id": b"Call-ID", b"i": b"Call-ID",
    b"cseq": b"CSeq",
}


def looks_like_response(data: bytes) -> bool:
    return data.lstrip(b"\r\n")[:4] == b"SIP/"


def answer_malformed(data: bytes, status: int, reason: str) -> bytes | None:
    """The bytes of a `status reason` answer to the raw request `data`, or None (drop)."""
    if looks_like_response(data) or status < 300:
        return None
    head = data.lstrip(b"\r\n")
    if head[:4] == b"ACK ":
        return None  # an ACK is never answered (RFC 3261 §17.2.1), malformed or not
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = head.find(sep)
        if idx >= 0:
            head = head[:idx]
            break
    echoed: list[bytes] = []
    has_via = False
    to_line: bytes | None = None
    for raw in head.split(b"\n")[1:]:
        line = raw.rstrip(b"\r")
        if not line or line[:1] in (b" ", b"\t"):
            continue  # folded continuation: dropped rather than mis-echoed
        name, sep, value = line.partition(b":")
        canonical = _ECHO.get(name.strip().lower())
        if not sep or canonical is None:
            continue
        value = value.strip()
        if canonical == b"Via":
            has_via = True
        if canonical == b"To":
            to_line = value
            continue
        echoed.append(canonical + b": " + value)
    if not has_via:
        return None
    if to_line is not None:
        if to_line.lower().find(b";tag=") < 0:  # not `in`: a bytes needle is slow
            to_line += b";tag=" + hashlib.md5(data).hexdigest()[:10].encode()
        echoed.append(b"To: " + to_line)
    safe_reason = reason.encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")
    start = b"SIP/2.0 %d %s" % (status, safe_reason)
    return b"\r\n".join([start, *echoed, b"Server: SipMesh edge", b"Content-Length: 0"]) + (
        b"\r\n\r\n")
