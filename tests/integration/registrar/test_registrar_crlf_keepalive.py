"""CRLF keep-alives for TCP bindings (RFC 5626 §3.5.1), for real: a "phone" registers over
TCP through the edge from behind a NAT (its Contact names another address), the registrar's
pinger asks the edge for a keep-alive, the edge sends a double CRLF on the phone's
connection and the phone's single-CRLF pong gives the binding a measured latency. The
phone never sees an OPTIONS; when it stops answering, the binding is removed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.edge.edge_harness import Edge, start_edge, wait_until
from tests.integration.registrar.harness import Registrar, add_user, start_registrar
from tests.integration.registrar.test_registrar_sipp import mi

pytestmark = pytest.mark.peers


class TcpPhone:
    """A TCP phone: answers CRLFCRLF with CRLF while `answering` is set; keeps all bytes."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.sock = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
        self.received = bytearray()
        self.pings = 0
        self.answering = threading.Event()
        self.answering.set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                if data == b"\r\n\r\n":  # a keep-alive ping: its own write on the edge
                    self.pings += 1
                    if self.answering.is_set():
                        self.sock.sendall(b"\r\n")
                else:
                    self.received += data

    def register(self, user: str, expires: int = 600) -> None:
        port = self.sock.getsockname()[1]
        self.sock.sendall((
            f"REGISTER sip:{self.edge.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK-crlf1\r\n"
            f"From: <sip:{user}@127.0.0.1>;tag=1\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: crlf-{user}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
            # Behind a NAT: the Contact names a private address the edge cannot reach.
            f"Contact: <sip:{user}@10.9.9.9:5070;transport=tcp>\r\nExpires: {expires}\r\n"
            "Content-Length: 0\r\n\r\n").encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Registrar, Edge]]:
    store = tmp_path / "subscribers.sqlite"
    add_user(store, "tina@127.0.0.1", "tina-pw")
    reg = start_registrar(store, {"SIPMESH_REGISTRAR_NATPING_INTERVAL": "0.3",
                                  "SIPMESH_REGISTRAR_PING_THRESHOLD": "0.25",
                                  "SIPMESH_REGISTRAR_MAX_PINGS_LOST": "3"})
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc,
                       "SIPMESH_EDGE_REGISTER_AUTH": "false"})
    yield reg, edge
    edge.stop()
    reg.stop()


def contact(reg: Registrar) -> dict[str, Any] | None:
    answer = mi(reg.mi, "ul_show_contact", ["location", "tina@127.0.0.1"])
    if "result" not in answer:
        return None
    found: dict[str, Any] = answer["result"]["Contacts"][0]
    return found


def test_tcp_binding_gets_crlf_keepalives_not_options(mesh: tuple[Registrar, Edge]) -> None:
    reg, edge = mesh
    phone = TcpPhone(edge)
    try:
        phone.register("tina")
        wait_until(lambda: b"SIP/2.0 200" in phone.received, 10, "200 to the REGISTER")
        first = contact(reg)
        assert first is not None and first["Received"].startswith("sip:127.0.0.1:")
        wait_until(lambda: (c := contact(reg)) is not None and c.get("Ping-Latency", 0) > 0,
                   10, "a latency measured from a CRLF pong")
        assert phone.pings >= 1
        with phone.lock:
            assert b"OPTIONS" not in phone.received, "a TCP binding gets no OPTIONS"
        phone.answering.clear()  # still connected, but silent
        wait_until(lambda: contact(reg) is None, 10, "silent binding removed")
        stats = mi(reg.mi, "get_statistics", [["nathelper:"]])["result"]
        assert stats["nathelper:answered"] >= 1 and stats["nathelper:lost"] >= 3
        with phone.lock:
            assert b"OPTIONS" not in phone.received
    finally:
        phone.close()
