"""The rtpengine ng control protocol, sans-IO: framing, cookies, retransmission, matching.

rtpengine's ng protocol (rtpengine README, "The ng Control Protocol"): each UDP datagram is
`<cookie> <bencoded dictionary>`; the reply repeats the cookie.  rtpengine keeps the replies
it sent by cookie for a while and answers a datagram whose cookie it has seen with the very
same reply, without doing the command again: so a request that got no answer is sent again
**with the same cookie** (a lost reply must not create a second call leg), and every new
request needs a new cookie.  OpenSIPS 2.4 sends a request up to `rtpengine_retr` (5) times,
waiting `rtpengine_tout` (1 s) for each, then declares the instance dead.

`NgProtocol` keeps the requests waiting for their reply, keyed by cookie, each with the
deadline of its next retransmission; the adapter passes `now` in:

    cookie, datagram = ng.request(target, {"command": "ping"}, now, tag=future)
    ...send datagram to target...
    got = ng.receive(datagram_in)            # Reply(cookie, target, tag, message) | None
    for action in ng.due(now): ...           # Retransmit(target, datagram) | Expired(...)
    ng.next_deadline()                       # when to call due() again

Cookies are `<prefix>_<counter>`: the prefix is unique per process (the adapter passes pid
and a random number, as OpenSIPS's `<pid>_<rand>_<seq>`), the counter never repeats.
Bencoding is bencode.py's (`bencodepy`), which, unlike fastbencode, decodes rtpengine's
replies whose dictionary keys are not sorted; keys and strings come back as `str` (bytes
that are not UTF-8 stay bytes).  A datagram that is not `<cookie> <dictionary>`, or whose
cookie matches no waiting request (a late duplicate), is dropped and counted.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import bencodepy

_CODEC = bencodepy.Bencode(encoding="utf-8", encoding_fallback="value")

Target = tuple[str, int]  # (host, port) of one rtpengine ng socket


class NgDecodeError(ValueError):
    """A datagram that is not `<cookie> <bencoded dictionary>`."""


def encode(cookie: str, message: dict[str, Any]) -> bytes:
    body: bytes = bencodepy.encode(message)
    return cookie.encode() + b" " + body


def decode(datagram: bytes) -> tuple[str, dict[str, Any]]:
    """(cookie, dictionary) of one ng datagram; NgDecodeError otherwise."""
    cookie, sep, body = datagram.partition(b" ")
    if not sep or not cookie:
        raise NgDecodeError("no cookie")
    try:
        message = _CODEC.decode(body)
    except Exception as exc:  # bencodepy raises its own and plain errors alike
        raise NgDecodeError(f"bad bencoding: {exc}") from None
    if not isinstance(message, dict):
        raise NgDecodeError("not a dictionary")
    try:
        return cookie.decode("ascii"), message
    except UnicodeDecodeError:
        raise NgDecodeError("cookie is not ASCII") from None


@dataclass(slots=True)
class _Pending:
    cookie: str
    target: Target
    datagram: bytes
    tag: Hashable | object
    sent: int  # transmissions so far
    deadline: float


@dataclass(frozen=True, slots=True)
class Reply:
    cookie: str
    target: Target
    tag: Any
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Retransmit:
    """Send `datagram` (the same cookie) to `target` again."""

    target: Target
    datagram: bytes


@dataclass(frozen=True, slots=True)
class Expired:
    """No reply after every transmission: the request failed, the instance did not answer."""

    cookie: str
    target: Target
    tag: Any


@dataclass
class NgStats:
    requests: int = 0
    retransmissions: int = 0
    replies: int = 0
    timeouts: int = 0
    dropped: int = 0  # undecodable, or for no waiting request
    by_target: dict[Target, int] = field(default_factory=dict)


class NgProtocol:
    """Requests waiting for replies (see the module docstring)."""

    def __init__(self, prefix: str, *, timeout: float = 1.0, tries: int = 5) -> None:
        if tries < 1 or timeout <= 0:
            raise ValueError("ng: tries must be >= 1 and timeout > 0")
        self.prefix = prefix
        self.timeout = timeout  # wait for one transmission (OpenSIPS rtpengine_tout)
        self.tries = tries  # transmissions of one request (OpenSIPS rtpengine_retr)
        self._seq = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._heap: list[tuple[float, int, str]] = []  # (deadline, tiebreak, cookie)
        self._tie = itertools.count()
        self.stats = NgStats()

    def __len__(self) -> int:
        return len(self._pending)

    def request(self, target: Target, message: dict[str, Any], now: float,
                tag: Any = None) -> tuple[str, bytes]:
        """A new request to `target`: its cookie and the datagram to send now."""
        cookie = f"{self.prefix}_{next(self._seq)}"
        datagram = encode(cookie, message)
        deadline = now + self.timeout
        self._pending[cookie] = _Pending(cookie, target, datagram, tag, 1, deadline)
        heapq.heappush(self._heap, (deadline, next(self._tie), cookie))
        self.stats.requests += 1
        self.stats.by_target[target] = self.stats.by_target.get(target, 0) + 1
        return cookie, datagram

    def receive(self, datagram: bytes) -> Reply | None:
        """The waiting request this datagram answers, now finished; None to drop it."""
        try:
            cookie, message = decode(datagram)
        except NgDecodeError:
            self.stats.dropped += 1
            return None
        pending = self._pending.pop(cookie, None)
        if pending is None:
            self.stats.dropped += 1  # a reply to a retransmission we no longer wait for
            return None
        self.stats.replies += 1
        return Reply(cookie, pending.target, pending.tag, message)

    def cancel(self, cookie: str) -> Any:
        """Stop waiting for `cookie` (its tag, or None when it was not waiting)."""
        pending = self._pending.pop(cookie, None)
        return None if pending is None else pending.tag

    def fail_target(self, target: Target) -> list[Expired]:
        """Every request waiting on `target` fails now (the adapter learnt the instance is
        unreachable, e.g. ICMP port unreachable on its socket)."""
        gone = [p for p in self._pending.values() if p.target == target]
        for p in gone:
            del self._pending[p.cookie]
        self.stats.timeouts += len(gone)
        return [Expired(p.cookie, p.target, p.tag) for p in gone]

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and (heap[0][2] not in self._pending
                        or self._pending[heap[0][2]].deadline != heap[0][0]):
            heapq.heappop(heap)  # answered or rescheduled since
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[Retransmit | Expired]:
        """What the deadlines passed by `now` ask for: resend with the same cookie while
        tries remain, else give up."""
        out: list[Retransmit | Expired] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, cookie = heapq.heappop(heap)
            pending = self._pending.get(cookie)
            if pending is None or pending.deadline != deadline:
                continue
            if pending.sent >= self.tries:
                del self._pending[cookie]
                self.stats.timeouts += 1
                out.append(Expired(cookie, pending.target, pending.tag))
                continue
            pending.sent += 1
            pending.deadline = now + self.timeout
            heapq.heappush(heap, (pending.deadline, next(self._tie), cookie))
            self.stats.retransmissions += 1
            out.append(Retransmit(pending.target, pending.datagram))
        return out
