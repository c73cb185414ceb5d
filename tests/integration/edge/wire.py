"""Talking to a running edge datagram by datagram, and judging what it did.

`Wire.send` puts our own Via on top of a request (`mutations.with_our_via`: answers come
back to us, never to a port a mutation made up), sends it from a fresh socket, then an
OPTIONS ping on the same socket: the edge handles datagrams in order, so everything that
arrived before the ping's 200 is all it did with the message.  Requests it forwarded are
read from the sink socket its static routes point at.  `check_agreement` holds that up
against `sipmesh parse`'s verdict.
"""

from __future__ import annotations

import socket
import time
from itertools import count

from edge_harness import Edge
from mutations import Verdict, verdict, with_our_via

from services.edge.stateless import answer_malformed

_ids = count(1)


class Wire:
    """The sink the edge forwards to, and a fresh caller socket per message (late answers
    to one message, retransmitted finals for instance, never land in another's)."""

    def __init__(self, edge: Edge, sink: socket.socket) -> None:
        self.edge = edge
        self.sink = sink
        self.sock = self._fresh()
        self.port: int = self.sock.getsockname()[1]

    @staticmethod
    def _fresh() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        return sock

    def next_port(self) -> int:
        """The caller port the next `exchange` will use (for messages naming it)."""
        return self.port

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> tuple[bytes, list[bytes], list[bytes]]:
        """`data` with our Via on top (`with_our_via`): (what was sent, answers, forwards)."""
        n = f"w{next(_ids)}"
        data = with_our_via(data, self.port, n)
        marker = f"branch=z9hG4bK-ours{n};".encode()
        answers, forwarded = self.exchange(data, marker if marker in data else None)
        return data, answers, forwarded

    def exchange(self, data: bytes, marker: bytes | None = None
                 ) -> tuple[list[bytes], list[bytes]]:
        """(answers to us, requests forwarded to the sink) for one datagram; forwards are
        recognised by `marker` (default: the message's first branch, when distinctive)."""
        try:
            return self._exchange(data, marker if marker is not None else _first_branch(data))
        finally:
            self.sock.close()
            self.sock = self._fresh()
            self.port = self.sock.getsockname()[1]

    def _exchange(self, data: bytes, marker: bytes | None) -> tuple[list[bytes], list[bytes]]:
        self.sock.sendto(data, ("127.0.0.1", self.edge.port))
        ping = f"ping-{next(_ids)}-{time.monotonic_ns()}"
        self.sock.sendto(
            (f"OPTIONS sip:127.0.0.1:{self.edge.port} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{ping}\r\n"
             f"Max-Forwards: 70\r\nFrom: <sip:p@127.0.0.1>;tag=p\r\n"
             f"To: <sip:127.0.0.1>\r\nCall-ID: {ping}\r\nCSeq: 1 OPTIONS\r\n"
             f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", self.edge.port))
        answers: list[bytes] = []
        self.sock.settimeout(5)
        while True:
            got, _ = self.sock.recvfrom(65535)
            if ping.encode() in got:
                break
            if not got.startswith(b"SIP/2.0 100 "):
                answers.append(got)
        # The sink never answers, so earlier requests are still being retransmitted to it:
        # only what carries this message's first branch is this message's (a message with
        # no branch at all has no Via the edge could forward it with).
        forwarded: list[bytes] = []
        self.sink.setblocking(False)
        while True:
            try:
                got = self.sink.recv(65535)
            except BlockingIOError:
                break
            if marker is not None and marker in got:
                forwarded.append(got)
        return answers, forwarded


def _first_branch(data: bytes) -> bytes | None:
    at = data.find(b"branch=")
    if at < 0:
        return None
    end = at + 7
    while end < len(data) and data[end:end + 1] not in b";,\r\n \t":
        end += 1
    return data[at:end] if end - at >= 7 + 16 else None  # short ones match others too


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def check_agreement(data: bytes, answers: list[bytes], forwarded: list[bytes]) -> None:
    """The edge did what the parser's verdict says."""
    v: Verdict = verdict(data)
    if not v.ok:
        assert forwarded == [], f"forwarded what the parser refuses ({v.status}): {data!r}"
        expected = (None if v.status is None or not v.request
                    or answer_malformed(data, v.status, "x") is None else v.status)
        got = sorted({status(a) for a in answers})
        if expected is None:
            assert got == [], f"answered {got} to a message to drop: {data!r}"
        else:
            assert got == [expected], f"answered {got}, parser says {expected}: {data!r}"
        return
    refused = {status(a) for a in answers} & {400, 500, 505, 513}
    assert not refused, f"answered {refused} to what the parser accepts: {data!r}"
    if not v.request:
        assert answers == [], "a response is never answered"


def start_sink_edge(extra: dict[str, str] | None = None, *, routes: tuple[str, ...] = (),
                    **kwargs: object) -> tuple[Edge, socket.socket]:
    """An edge that trusts nobody and routes the fixtures' domains (`LOCAL_DOMAINS`) to a
    sink socket: nothing it forwards leaves the machine, no DNS lookup is ever made."""
    from edge_harness import start_edge
    from mutations import LOCAL_DOMAINS

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    # UDP whatever the request came on: the sink has no TCP listener, and a refused
    # connection would be a transport error (a 500 upstream, RFC 3261 §16.9 + §16.7).
    sink_uri = f"sip:127.0.0.1:{sink.getsockname()[1]};transport=udp"
    routes = (*routes, *(f"{d}={sink_uri}" for d in LOCAL_DOMAINS))  # `routes` win
    env = {
        "SIPMESH_EDGE_TRUSTED": "",
        # Thousands of messages from one untrusted address: a flood pike would cut off.
        "SIPMESH_EDGE_PIKE_DENSITY": "0",
        "SIPMESH_EDGE_LOCAL_DOMAINS": ",".join(LOCAL_DOMAINS),
        "SIPMESH_EDGE_STATIC_ROUTES": ",".join(routes),
        "SIPMESH_EDGE_TIMER_C": "1", "SIPMESH_EDGE_T1": "0.05",
    }
    env.update(extra or {})
    try:
        return start_edge(env, **kwargs), sink
    except BaseException:
        sink.close()
        raise
