"""Path (RFC 3327) for real: a sipp phone registers through the real edge with
`Path: <sip:p1@..;lr>, <sip:p2@..;lr>` and `Supported: path` (digest auth, from a port other
than its Contact, so the registrar also keeps `received`).  A call to the AOR then reaches
a raw UDP socket standing for the outbound proxy p1, with the Request-URI = the contact
and Route p1 then p2 (RFC 3327 §5.3: the edge puts every Path value as a Route; p1 pops
its own).  The Path hop wins over the NAT `received` address.  p1 answers 486; the
caller gets it through the edge and the edge's ACK goes back to p1."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.sip import Request, Response, parse_message
from tests.integration.edge.edge_harness import Edge, free_port, start_edge, summary
from tests.integration.registrar.harness import SCENARIOS, Registrar, add_user, start_registrar
from tests.integration.registrar.test_registrar_sipp import mi

pytestmark = pytest.mark.peers


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Registrar, Edge]]:
    store = tmp_path / "subscribers.sqlite"
    add_user(store, "dave@127.0.0.1", "dave-pw")
    reg = start_registrar(store)
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc})
    yield reg, edge
    edge.stop()
    reg.stop()


def udp_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    return sock


def receive(sock: socket.socket, wanted: Callable[[Request | Response], bool], what: str,
            timeout: float = 10.0) -> tuple[Request | Response, tuple[str, int]]:
    """The first message for which `wanted(msg)` holds, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(65535)
        except TimeoutError:
            break
        msg = parse_message(data)
        if wanted(msg):
            return msg, peer
    raise TimeoutError(f"timed out waiting for {what}")


def response_to(req: Request, status: int, reason: str) -> bytes:
    vias = "".join(f"Via: {v}\r\n" for v in req.get_all("Via"))
    return (f"SIP/2.0 {status} {reason}\r\n{vias}From: {req.get('From')}\r\n"
            f"To: {req.get('To')};tag=p1tag\r\nCall-ID: {req.call_id}\r\n"
            f"CSeq: {req.cseq.number} {req.cseq.method}\r\nContent-Length: 0\r\n\r\n").encode()


def test_call_to_the_aor_goes_to_the_first_path_hop_with_every_path_value_as_route(
        mesh: tuple[Registrar, Edge], tmp_path: Path) -> None:
    reg, edge = mesh
    # Our sockets are bound first so that the ports picked for sipp cannot be theirs.
    p1 = udp_socket()  # the outbound proxy p1, listening
    caller = udp_socket()
    phone, contact_port, p2_port = free_port(), free_port(), free_port()
    try:
        p1_port = p1.getsockname()[1]
        cmd = ["sipp", "-sf", str(SCENARIOS / "register_path.xml"), "-i", "127.0.0.1",
               "-p", str(phone), edge.address, "-s", "dave", "-au", "dave", "-ap", "dave-pw",
               "-key", "contact_port", str(contact_port), "-key", "p1_port", str(p1_port),
               "-key", "p2_port", str(p2_port), "-m", "1", "-nostdin", "-timeout", "15s",
               "-timeout_error"]
        result = subprocess.run(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=45)
        assert result.returncode == 0, summary(result)  # incl. the Path echoed in the 200
        path1 = f"<sip:p1@127.0.0.1:{p1_port};lr>"
        path2 = f"<sip:p2@127.0.0.1:{p2_port};lr>"
        [shown] = mi(reg.mi, "ul_show_contact", ["location", "dave@127.0.0.1"])["result"][
            "Contacts"]
        assert shown["Path"] == f"{path1},{path2}"
        assert shown["Received"] == f"sip:127.0.0.1:{phone}"  # natted too: Path must win

        caller_port = caller.getsockname()[1]
        invite = (
            f"INVITE sip:dave@{edge.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{caller_port};branch=z9hG4bKpathcall1;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:carol@far.example>;tag=c1\r\n"
            f"To: <sip:dave@{edge.address}>\r\nCall-ID: path-call-1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:carol@127.0.0.1:{caller_port}>\r\nContent-Length: 0\r\n\r\n")
        edge_addr = ("127.0.0.1", edge.port)
        caller.sendto(invite.encode(), edge_addr)

        fwd, via_edge = receive(p1, lambda m: isinstance(m, Request) and m.method == "INVITE",
                                "the INVITE at p1")
        assert isinstance(fwd, Request)
        assert fwd.uri == f"sip:dave@127.0.0.1:{contact_port}"  # the contact
        assert fwd.get_all("Route") == [path1, path2]
        assert fwd.call_id == "path-call-1" and fwd.max_forwards == 69

        p1.sendto(response_to(fwd, 486, "Busy Here"), via_edge)
        final, _ = receive(caller, lambda m: isinstance(m, Response) and m.status >= 200,
                           "the final response at the caller")
        assert isinstance(final, Response) and final.status == 486
        # §17.1.1.3: the edge's ACK for p1's 486 goes where the INVITE went, same Route.
        ack, _ = receive(p1, lambda m: isinstance(m, Request) and m.method == "ACK",
                         "the edge's ACK at p1")
        assert ack.get_all("Route") == [path1, path2]
        caller.sendto((
            f"ACK sip:dave@{edge.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{caller_port};branch=z9hG4bKpathcall1;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:carol@far.example>;tag=c1\r\n"
            f"To: {final.get('To')}\r\nCall-ID: path-call-1\r\nCSeq: 1 ACK\r\n"
            "Content-Length: 0\r\n\r\n").encode(), edge_addr)
    finally:
        p1.close()
        caller.close()
