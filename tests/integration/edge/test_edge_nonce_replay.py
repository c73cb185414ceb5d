"""A real edge with two SO_REUSEPORT workers: a captured authenticated request replayed
from many source ports (so both workers get it) is always challenged again; a fresh
nonce-count passes whichever worker takes it.  Raw SIP over UDP sockets."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_harness import Edge, start_edge, stop_process, worker_statistic

from shared.sip import (
    Request,
    Response,
    answer_challenge,
    make_response,
    parse_challenge,
    parse_message,
)

pytestmark = pytest.mark.peers

REPLAYS = 24  # different source ports: all on one worker has odds of 2 ** -23


class Far:
    """The next hop: a UDP socket answering 200 to whatever the edge relays to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def answer_one(self, timeout: float = 5.0) -> Request:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65535)
        request = parse_message(data)
        assert isinstance(request, Request)
        via = request.top_via
        self.sock.sendto(make_response(request, 200, to_tag="far").serialize(),
                         (via.host, via.port or 5060))
        return request



def word_after(line: str, word: str) -> str:
    """The word after `word` in an `edge ready` line (its http URL, its pid)."""
    words = line.split()
    return words[words.index(word) + 1]


@pytest.fixture
def two_workers() -> Iterator[tuple[Edge, list[str]]]:
    """The edge and the `edge ready` lines of its two workers."""
    edge = start_edge({"SIPMESH_EDGE_WORKERS": "2", "SIPMESH_EDGE_TRUSTED": "",
                       "SIPMESH_EDGE_USERS": "alice:pw"})
    try:
        assert edge.proc.stdout is not None
        second = edge.proc.stdout.readline()  # the other worker's ready line
        # The supervisor's own line comes once it has seen every worker ready.
        assert edge.proc.stdout.readline().startswith("edge workers 2 ready")
        yield edge, [edge.lines[0], second]
    finally:
        assert stop_process(edge.proc, grace=10) == 0


def test_both_workers_map_one_table_whose_name_is_gone(
        two_workers: tuple[Edge, list[str]]) -> None:
    _, lines = two_workers
    tables = []
    for line in lines:
        maps = Path(f"/proc/{word_after(line, 'pid')}/maps").read_text().splitlines()
        # "device inode path" of the table's mapping (one mapping, maybe several lines)
        mapped = {" ".join(m.split()[3:]) for m in maps if "sipmesh-edge-nonces-" in m}
        assert len(mapped) == 1, mapped
        tables.append(mapped.pop())
    assert tables[0] == tables[1]  # same device, inode and path: one table
    assert tables[0].endswith("(deleted)")  # nothing left behind in /dev/shm


def message(far: Far, n: int, credentials: str | None) -> str:
    """A MESSAGE for the far end; the caller fills in its own port as {port}.  Via
    branch and Call-ID change with `n`: digest credentials do not cover them, so an
    attacker replaying a captured request can change them as well."""
    auth = f"Proxy-Authorization: {credentials}\r\n" if credentials else ""
    return (f"MESSAGE sip:bob@127.0.0.1:{far.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{{port}};branch=z9hG4bK-replay-{n}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\n"
            f"To: <sip:bob@127.0.0.1:{far.port}>\r\nCall-ID: replay-{n}\r\n"
            f"CSeq: 1 MESSAGE\r\n{auth}Content-Length: 0\r\n\r\n")


def send(edge: Edge, text: str, far: Far | None = None, timeout: float = 5.0) -> Response:
    """Send from a new source port; the final response (`far` answers if relayed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(text.format(port=s.getsockname()[1]).encode(), ("127.0.0.1", edge.port))
        relayed = far.answer_one() if far is not None else None
        if relayed is not None:
            assert not relayed.has("Proxy-Authorization")  # consumed by the edge
        return final_response(s, timeout)


def final_response(s: socket.socket, timeout: float) -> Response:
    deadline = time.monotonic() + timeout
    while True:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        resp = parse_message(s.recvfrom(65535)[0])
        assert isinstance(resp, Response)
        if resp.status >= 200:
            return resp


def replay(edge: Edge, text: str, far: Far, timeout: float = 5.0) -> Response | Request:
    """Send from a new source port: the edge's final response, or the request as relayed
    to `far` if the edge let it through (then `far` does not answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(text.format(port=s.getsockname()[1]).encode(), ("127.0.0.1", edge.port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([s, far.sock], [], [], deadline - time.monotonic())
            if far.sock in ready:
                relayed = parse_message(far.sock.recvfrom(65535)[0])
                assert isinstance(relayed, Request)
                return relayed
            if s in ready:
                resp = parse_message(s.recvfrom(65535)[0])
                assert isinstance(resp, Response)
                if resp.status >= 200:
                    return resp
        raise TimeoutError("no answer from the edge")


def received(urls: list[str]) -> list[int]:
    """core:rcv_requests of each worker (MI)."""
    counts: list[int] = worker_statistic(urls, "core:rcv_requests")
    return counts


def credentials(challenge: Response, far: Far, nc: int) -> str:
    offered = parse_challenge(challenge.get("Proxy-Authenticate") or "", "Proxy-Authenticate")
    return str(answer_challenge(offered, username="alice", password="pw", method="MESSAGE",
                                uri=f"sip:bob@127.0.0.1:{far.port}", cnonce="0a4f113b",
                                nc=nc))


def test_a_replay_is_challenged_on_every_worker(two_workers: tuple[Edge, list[str]]) -> None:
    edge, lines = two_workers
    urls = [word_after(line, "http") for line in lines]
    far = Far()
    try:
        challenge = send(edge, message(far, 0, None))
        assert challenge.status == 407
        captured = credentials(challenge, far, 1)
        assert send(edge, message(far, 1, captured), far).status == 200

        before = received(urls)
        for n in range(REPLAYS):
            again = replay(edge, message(far, 100 + n, captured), far)
            assert isinstance(again, Response), f"replay {n} was relayed to the far end"
            assert again.status == 407
            stale = parse_challenge(again.get("Proxy-Authenticate") or "",
                                    "Proxy-Authenticate").stale
            assert not stale  # a replay, not an old nonce
        after = received(urls)
        assert all(b > a for a, b in zip(before, after, strict=True)), (before, after)

        # The phone goes on with the same nonce and the next counts: both workers take them.
        last = 1 + REPLAYS
        for nc in range(2, last + 1):
            fresh = send(edge, message(far, 200 + nc, credentials(challenge, far, nc)), far)
            assert fresh.status == 200, f"nc={nc} was refused"
        final = received(urls)
        assert all(b > a for a, b in zip(after, final, strict=True)), (after, final)
        for nc in (last, 2):
            again = replay(edge, message(far, 300 + nc, credentials(challenge, far, nc)), far)
            assert isinstance(again, Response) and again.status == 407
    finally:
        far.sock.close()
