"""Raw malformed datagrams sent to a real edge get the right stateless answer (or none)."""

from __future__ import annotations

import socket

import pytest
from edge_harness import Edge, options_ping

pytestmark = pytest.mark.peers

HEAD = ("Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-raw-{n}\r\nMax-Forwards: 70\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: raw-{n}\r\n")

CASES = [
    pytest.param("INVITE sip:b@127.0.0.1 SIP/3.0\r\n" + HEAD + "CSeq: 1 INVITE\r\n"
                 "Content-Length: 0\r\n\r\n", 505, id="version-505"),
    pytest.param("INVITE sip:b@127.0.0.1 SIP/2.0\r\n" + HEAD + "CSeq: one INVITE\r\n"
                 "Content-Length: 0\r\n\r\n", 400, id="bad-cseq-400"),
    pytest.param("INVITE tel:+15550100 SIP/2.0\r\n" + HEAD + "CSeq: 1 INVITE\r\n"
                 "Content-Length: 0\r\n\r\n", 416, id="tel-uri-416"),
    pytest.param("OPTIONS sip:b@127.0.0.1 SIP/2.0\r\n" + HEAD + "CSeq: 1 OPTIONS\r\n"
                 "Proxy-Require: gin\r\nContent-Length: 0\r\n\r\n", 420, id="proxy-require-420"),
    pytest.param("INVITE sip:b@127.0.0.1 SIP/2.0\r\n" + HEAD + "CSeq: 1 INVITE\r\n"
                 "Content-Length: 99\r\n\r\nshort", 400, id="short-body-400"),
]


def exchange(edge: Edge, text: str, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.sendto(text.format(port=port, n=port).encode(), ("127.0.0.1", edge.port))
        s.settimeout(timeout)
        try:
            while True:
                data, _ = s.recvfrom(65535)
                if not data.startswith(b"SIP/2.0 100 "):
                    return data
        except TimeoutError:
            return None


@pytest.mark.parametrize(("text", "status"), CASES)
def test_malformed_request_is_answered(edge: Edge, text: str, status: int) -> None:
    answer = exchange(edge, text)
    assert answer is not None, "no answer"
    assert answer.startswith(b"SIP/2.0 %d " % status), answer[:60]
    assert b"branch=z9hG4bK-raw-" in answer


def test_malformed_response_and_garbage_get_no_answer_and_no_crash(edge: Edge) -> None:
    assert exchange(edge, "SIP/2.0 2x0 Oops\r\nVia: SIP/2.0/UDP 127.0.0.1:{port}\r\n\r\n",
                    timeout=0.5) is None
    assert exchange(edge, "\x00\x01\x02 not sip at all {n}", timeout=0.5) is None
    assert options_ping("127.0.0.1", edge.port) == 200  # still serving
