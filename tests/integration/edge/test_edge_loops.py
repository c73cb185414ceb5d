"""The event loops the edge runs on, and sends that cannot be made (issue 11).

Every other edge test runs the default loop, uvloop, as users do (TCP was dead there: a
type check on the transport reset every connection).  asyncio's own loop stays a tested
fallback (`[edge] uvloop = false`): the same calls over UDP and TCP, and raw TCP.

A send no socket can make (an IPv6 target on IPv4 sockets, port 0) fails its own branch
with 477 and nothing else: a call in progress keeps its retransmissions and completes.
"""

from __future__ import annotations

import socket
import time

import pytest
from edge_harness import Edge, Sipp, free_port, summary

pytestmark = pytest.mark.peers

TRANSPORTS = [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")]


def _options(port: int, n: int, transport: str = "TCP") -> bytes:
    return (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK-loop{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:l@127.0.0.1>;tag=l{n}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: loop-{n}\r\nCSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def _tcp_options(edge: Edge) -> bytes:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as s:
        s.sendall(_options(edge.port, time.monotonic_ns()))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_calls_on_the_asyncio_fallback_loop(asyncio_edge: Edge, sipp: Sipp,
                                            transport: str) -> None:
    uas = free_port()
    sipp.uas("uas", uas, transport=transport)
    result = sipp.uac("uac", asyncio_edge, f"127.0.0.1:{uas}", calls=3, transport=transport)
    assert result.returncode == 0, summary(result)


@pytest.mark.parametrize("which", ["uvloop", "asyncio"])
def test_a_raw_tcp_connection_is_answered_on_either_loop(edge: Edge, asyncio_edge: Edge,
                                                         which: str) -> None:
    target = edge if which == "uvloop" else asyncio_edge
    assert _tcp_options(target).startswith(b"SIP/2.0 200 ")


def _invite(uri: str, port: int, n: str) -> bytes:
    return (f"INVITE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-sf{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=sf{n}\r\nTo: <{uri}>\r\n"
            f"Call-ID: sendfail-{n}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:a@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n").encode()


def _call_id(data: bytes) -> str:
    return data.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()


def _finals(sock: socket.socket, deadline: float) -> list[bytes]:
    got = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            break
        if not data.startswith(b"SIP/2.0 1"):
            got.append(data)
    return got


def test_a_send_no_socket_can_make_fails_its_branch_only(edge: Edge) -> None:
    # A silent "UAS": the edge keeps retransmitting the first INVITE to it (Timer A, T1 of
    # 0.1 s in these tests) until Timer B/C.  Meanwhile two INVITEs to unreachable targets
    # must fail fast with 477 without stopping those retransmissions.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        silent.bind(("127.0.0.1", 0))
        caller.bind(("127.0.0.1", 0))
        me = caller.getsockname()[1]
        target = f"sip:s@127.0.0.1:{silent.getsockname()[1]}"
        caller.sendto(_invite(target, me, "live"), ("127.0.0.1", edge.port))
        silent.settimeout(2)
        first, _ = silent.recvfrom(65535)
        assert first.startswith(b"INVITE ")
        for n, uri in enumerate(["sip:x@[2001:db8::1]:5060", "sip:x@127.0.0.1:0",
                                 "sip:x@[::1]:5060"]):
            caller.sendto(_invite(uri, me, f"bad{n}"), ("127.0.0.1", edge.port))
        answers = _finals(caller, time.monotonic() + 1.0)  # with Timer G's copies (no ACK)
        by_call = {_call_id(a): a.split(b" ", 2)[1] for a in answers}
        assert by_call == {f"sendfail-bad{n}": b"477" for n in range(3)}, answers
        # The live transaction still retransmits (Timer A doubles from 0.1 s).
        copies = 0
        silent.settimeout(1.0)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                data, _ = silent.recvfrom(65535)
            except TimeoutError:
                break
            copies += data.startswith(b"INVITE ")
        assert copies >= 2, "retransmissions of the live INVITE stopped"
        # ...and ends as the RFC says (408 after Timer C of 3 s), not with an error.
        finals = [a for a in _finals(caller, time.monotonic() + 5)
                  if _call_id(a) == "sendfail-live"]
        assert finals and finals[0].startswith(b"SIP/2.0 408 ")
    assert not edge.tracebacks()
