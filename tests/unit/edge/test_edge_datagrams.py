"""The worker's per-message path (services/edge/datagrams.py) as the app runs it: a
datagram from the socket reaches the core with its source, the outputs leave from the
socket, and the one loop timer follows the core's next deadline on 10 ms ticks."""

from __future__ import annotations

from typing import Any

from services.edge.addresses import Destination, Interface, Source
from services.edge.app import EdgeApp
from services.edge.config import EdgeConfig
from services.edge.core import Send
from services.edge.transports import UdpEndpoint

EDGE = Interface("udp", "127.0.0.1", 5060)


class Handle:
    def __init__(self, when: float) -> None:
        self.when = when
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """The clock and `call_at` of the worker's loop."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Handle:
        self.timers.append(Handle(when))
        return self.timers[-1]


class Core:
    """Answers each datagram with one send back to its source; `deadline` is its timer."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Source, float]] = []
        self.deadline: float | None = None
        self.fired: list[float] = []

    def receive(self, data: bytes, source: Source, now: float) -> list[Any]:
        self.received.append((data, source, now))
        return [Send(b"SIP/2.0 200 OK\r\n\r\n",
                     Destination("udp", source.host, source.port, source.interface))]

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> list[Any]:
        self.fired.append(now)
        self.deadline = None
        return []


class Socket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def _app() -> tuple[EdgeApp, UdpEndpoint, Core, Loop, Socket]:
    app = EdgeApp(EdgeConfig(listen=("udp:127.0.0.1:0",), rr_secret="k" * 32))
    core, loop, sock = Core(), Loop(), Socket()
    app.core, app._loop = core, loop  # type: ignore[assignment]
    endpoint = UdpEndpoint(EDGE, app._on_message, app._warn)
    endpoint.connection_made(sock)  # type: ignore[arg-type]
    app.udp[EDGE] = endpoint
    return app, endpoint, core, loop, sock


def test_a_datagram_reaches_the_core_with_its_source_and_the_answer_leaves() -> None:
    _, endpoint, core, loop, sock = _app()
    endpoint.datagram_received(b"OPTIONS sip:x SIP/2.0\r\n\r\n", ("192.0.2.7", 5070))
    assert core.received == [(b"OPTIONS sip:x SIP/2.0\r\n\r\n",
                              Source(EDGE, "192.0.2.7", 5070), 100.0)]
    assert sock.sent == [(b"SIP/2.0 200 OK\r\n\r\n", ("192.0.2.7", 5070))]
    assert loop.timers == []  # no deadline: no timer


def test_the_timer_follows_the_earliest_deadline_on_ticks_and_stops_with_the_app() -> None:
    app, endpoint, core, loop, _ = _app()
    core.deadline = 100.503
    endpoint.datagram_received(b"INVITE", ("192.0.2.7", 5070))
    assert [round(t.when, 6) for t in loop.timers] == [100.51]  # the next 10 ms tick
    core.deadline = 100.7  # later: the armed wake-up stays
    endpoint.datagram_received(b"INVITE", ("192.0.2.7", 5070))
    assert len(loop.timers) == 1
    core.deadline = 100.2  # earlier: re-armed, the later one cancelled
    endpoint.datagram_received(b"INVITE", ("192.0.2.7", 5070))
    assert [round(t.when, 6) for t in loop.timers] == [100.51, 100.21]
    assert [t.cancelled for t in loop.timers] == [True, False]
    loop.now = 100.21
    app.path.on_timer()  # the wake-up: the core's timers, then nothing left to arm
    assert core.fired == [100.21] and len(loop.timers) == 2
    core.deadline = 101.0
    app._rearm()
    app.path.cancel()  # what `stop` does
    assert loop.timers[-1].cancelled
