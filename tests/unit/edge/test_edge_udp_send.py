"""The worker's UDP sends (`EdgeApp._send_udp`): which socket each datagram leaves from.

A worker remembers the socket of each interface object it sent from, by identity, instead
of hashing the interface (seven fields) for every datagram.  What must not change: a
request leaves from the worker's private port when it has one, a response from the shared
socket, a copy of an interface (equal, another object) finds the same socket, and two
interfaces never share one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from services.edge.addresses import Destination, Interface
from services.edge.app import EdgeApp
from services.edge.config import EdgeConfig
from services.edge.core import Send
from services.edge.transports import UdpEndpoint

A = Interface("udp", "127.0.0.1", 5060)
B = Interface("udp", "127.0.0.2", 5060)


class Socket:
    """A datagram transport that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class CountingDict(dict[Interface, UdpEndpoint]):
    """The app's interface -> socket table, counting lookups (each hashes an interface)."""

    lookups = 0

    def get(self, key: Any, default: Any = None) -> Any:
        CountingDict.lookups += 1
        return super().get(key, default)


def _endpoint(itf: Interface) -> tuple[UdpEndpoint, Socket]:
    endpoint = UdpEndpoint(itf, lambda data, source: None, lambda *a, **k: None)
    sock = Socket()
    endpoint.transport = sock  # type: ignore[assignment]
    return endpoint, sock


def _app(private: bool) -> tuple[EdgeApp, dict[str, Socket]]:
    app = EdgeApp(EdgeConfig(listen=("udp:127.0.0.1:0",), rr_secret="k" * 32))
    socks: dict[str, Socket] = {}
    app.udp, app.private = CountingDict(), CountingDict()
    for name, itf in (("a", A), ("b", B)):
        endpoint, socks[name] = _endpoint(itf)
        app.udp[itf] = endpoint
        if private:
            endpoint, socks[f"{name}-private"] = _endpoint(itf)
            app.private[itf] = endpoint
    return app, socks


def _send(app: EdgeApp, itf: Interface, data: bytes, *, request: bool) -> None:
    app._execute([Send(data, Destination("udp", "192.0.2.9", 5070, itf), request=request)])


def test_requests_leave_from_the_private_port_and_responses_from_the_shared_one() -> None:
    app, socks = _app(private=True)
    for n in range(3):  # the first send looks the socket up, the next ones remember it
        _send(app, A, b"INVITE %d" % n, request=True)
        _send(app, A, b"SIP/2.0 200 %d" % n, request=False)
        _send(app, B, b"BYE %d" % n, request=True)
        _send(app, B, b"SIP/2.0 180 %d" % n, request=False)
    addr = ("192.0.2.9", 5070)
    assert socks["a-private"].sent == [(b"INVITE %d" % n, addr) for n in range(3)]
    assert socks["a"].sent == [(b"SIP/2.0 200 %d" % n, addr) for n in range(3)]
    assert socks["b-private"].sent == [(b"BYE %d" % n, addr) for n in range(3)]
    assert socks["b"].sent == [(b"SIP/2.0 180 %d" % n, addr) for n in range(3)]


def test_a_copy_of_an_interface_finds_the_socket_of_the_original() -> None:
    app, socks = _app(private=False)
    _send(app, A, b"one", request=True)
    copy = dataclasses.replace(A)
    assert copy == A and copy is not A
    _send(app, copy, b"two", request=True)
    _send(app, dataclasses.replace(B), b"three", request=False)
    assert [d for d, _ in socks["a"].sent] == [b"one", b"two"]
    assert [d for d, _ in socks["b"].sent] == [b"three"]


def test_an_interface_sent_from_before_is_not_looked_up_again() -> None:
    """Without a private port a request is looked up once (no lookup in the empty private
    table), and every later send from that interface object uses the remembered socket."""
    app, socks = _app(private=False)
    CountingDict.lookups = 0
    for n in range(5):
        _send(app, A, b"%d" % n, request=n % 2 == 0)
    assert CountingDict.lookups == 1
    assert len(socks["a"].sent) == 5
