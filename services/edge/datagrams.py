"""The worker's per-message glue: a message in, the core's outputs out, the timer re-armed.

`EdgeApp` (services/edge/app.py) owns the sockets, the loop and the worker's features; this
module is what it runs for every message and every timer tick, written apart so that
`make compiled` compiles it with the core (shared/compiled.py): interpreted, these few
functions were five Python frames per datagram received and one per datagram sent, ~90 k
interpreted instructions per stateful call around a core of ~1 M (docs/perf.md, "Tenth
round, INVITE").  What it does is what `EdgeApp` did, unchanged:

- :meth:`DatagramPath.on_message`: the pike guard for requests, the core's `receive`, the
  outputs carried out, the timer re-armed, `exec_msg_threshold` timing.
- :meth:`DatagramPath.execute`: UDP sends (the socket of the interface remembered by the
  interface object's identity), TCP sends, awaits of routing hooks, cluster sends; a send
  the socket refuses fails its own transaction only.
- :meth:`DatagramPath.rearm` / :meth:`DatagramPath.on_timer`: one loop timer at the
  core's next deadline, on 10 ms ticks.
- :class:`Receiver`: the UDP socket's `datagram_received` (set on each `UdpEndpoint`), so
  that uvloop calls compiled code for a datagram, not an interpreted method.

The app is read through its attributes (`core`, `_loop`, `pike`, `capture`, `udp`, ...)
on every use, as its own methods did: they are set after construction (`start`, the
tracer, the pike module, tests' stand-ins).  No sockets here: the transports are the
app's; what needs a task (a name to resolve, a hook to await) goes back to the app.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from typing import Any

from services.edge.addresses import Destination, Interface, Source
from services.edge.core import Await, Output, Send

TIMER_TICK = 0.01  # s: granularity of the worker's one loop timer (see DatagramPath.rearm)


def is_ip(host: str, known_hosts: dict[str, bool]) -> bool:
    """Numeric address? (remembered per app: it is asked for every datagram sent)"""
    known = known_hosts.get(host)
    if known is None:
        try:
            ipaddress.ip_address(host)
            known = True
        except ValueError:
            known = False
        if len(known_hosts) > 65536:
            known_hosts.clear()
        known_hosts[host] = known
    return known


def start_line(data: bytes) -> str:
    """The start line of a SIP message, for E_CORE_THRESHOLD's `extra`."""
    return data.split(b"\r\n", 1)[0][:200].decode("utf-8", "replace")


class DatagramPath:
    """One worker's message path and loop timer (the hot path of `EdgeApp`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.timer: Any = None  # asyncio.TimerHandle of the next wake-up, or None
        self.timer_at = -1.0  # its time; < 0: none armed
        self.numeric: dict[str, bool] = {}
        # id(interface) -> (interface, its socket), for `send_udp` (plain and private)
        self.endpoint_of: dict[int, tuple[Interface, Any]] = {}
        self.private_of: dict[int, tuple[Interface, Any]] = {}

    def on_message(self, data: bytes, source: Source) -> None:
        app = self.app
        core = app.core
        if core is None:
            return
        capture = app.capture
        if capture is not None:
            capture.received(data, source)  # SIP capture (sip_trace on)
        loop = app._loop
        assert loop is not None
        pike = app.pike
        # Responses always pass the guard (PikeGuard.admit): not even asked.
        if pike is not None and not data.startswith(b"SIP/") and not pike.admit(data, source):
            app.counters.drop_requests.value += 1  # a flooding source (OpenSIPS pike)
            return
        threshold: int = app.exec_threshold
        started = time.perf_counter() if threshold else 0.0
        try:
            outputs = core.receive(data, source, loop.time())
        except Exception:  # never let one message take the worker down
            app.log.exception("edge.internal_error", peer=f"{source.host}:{source.port}")
            # OpenSIPS err_requests / err_replies: a message whose processing failed.
            if data.startswith(b"SIP/"):
                app.counters.err_replies.value += 1
            else:
                app.counters.err_requests.value += 1
            return
        if outputs:
            app._execute(outputs)
        self.rearm()
        if threshold:
            micros = int((time.perf_counter() - started) * 1e6)
            on_slow = app.on_slow
            if micros > threshold and on_slow is not None:
                on_slow("msg processing", micros, start_line(data))

    def execute(self, outputs: Sequence[Output]) -> None:
        app = self.app
        failed: list[Send] = []
        capture = app.capture
        for item in outputs:
            if type(item) is Send:
                dest = item.dest
                if capture is not None:
                    capture.sent(item.data, dest)  # SIP capture (sip_trace on)
                try:
                    if dest.transport == "udp":
                        self.send_udp(item, dest)
                    else:
                        app.tcp.send(dest, item.data)
                except (OSError, ValueError, OverflowError) as exc:
                    # One send the socket refuses (uvloop raises for an address of the other
                    # family) fails its own transaction only; the other outputs of this
                    # batch - other transactions' retransmissions in a timer tick - still go.
                    app._warn("send.failed", to=f"{dest.transport}:{dest.host}:{dest.port}",
                              error=str(exc))
                    failed.append(item)
            elif isinstance(item, Await):
                app._spawn_await(item)
            else:
                app._other_output(item)
        if failed and app.core is not None and app._loop is not None:
            for sent in failed:
                app._execute(app.core.send_failed(sent, app._loop.time()))

    def send_udp(self, item: Send, dest: Destination) -> None:
        app = self.app
        itf = dest.interface
        endpoint: Any = None
        if itf is not None:
            # The socket of an interface object seen before, by identity: hashing an
            # Interface (seven fields) cost more than the rest of a send's glue, and the
            # core's destinations carry the very objects `start` bound.  The pair keeps
            # the object alive, so its id names it while it is remembered.
            private = item.request and bool(app.private)
            known = (self.private_of if private else self.endpoint_of).get(id(itf))
            if known is not None and known[0] is itf:
                endpoint = known[1]
            else:
                if private:
                    endpoint = app.private.get(itf)
                if endpoint is None:
                    endpoint = app.udp.get(itf)
                    private = False
                if endpoint is not None:
                    remembered = self.private_of if private else self.endpoint_of
                    if len(remembered) > 64:
                        remembered.clear()  # bounded: copies of interfaces made elsewhere
                    remembered[id(itf)] = (itf, endpoint)
        if endpoint is None:
            endpoint = next(iter(app.udp.values()), None)
        if endpoint is None:
            return
        host = dest.host
        # The remembered answer first: no call of `is_ip` for an address sent to before
        # (seven sends per call).
        if self.numeric.get(host) or is_ip(host, self.numeric):
            transport = endpoint.transport
            if transport is not None:
                transport.sendto(item.data, (host, dest.port))
            return
        app._resolve_later(endpoint, item)

    def rearm(self) -> None:
        app = self.app
        core = app.core
        loop = app._loop
        if core is None or loop is None:
            return
        deadline = core.next_deadline()
        if deadline is None:
            return
        # Wake up on the next TIMER_TICK boundary at or after the deadline: every deadline
        # of that tick is handled by one wake-up.  Under load the transactions' deadlines
        # are spread over every millisecond, and one loop wake-up per deadline cost ~15% of
        # a worker (py-spy under sipp); SIP timers (T1 = 500 ms) do not mind 10 ms.
        when: float = (deadline // TIMER_TICK + 1) * TIMER_TICK
        if self.timer_at >= 0 and self.timer_at <= when:
            return  # an earlier wake-up is already due; it re-arms after firing
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        self.timer = loop.call_at(when, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        self.timer_at = -1.0
        app = self.app
        core = app.core
        if core is None or app._loop is None:
            return
        try:
            app._execute(core.handle_timer(app._loop.time()))
        except Exception:
            app.log.exception("edge.internal_error", where="timer")
        self.rearm()

    def cancel(self) -> None:
        """No more wake-ups (the worker stops)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_at = -1.0


class Receiver:
    """A UDP socket's `datagram_received` (`UdpEndpoint`): the datagram and its source to
    `on_message`."""

    def __init__(self, interface: Interface, on_message: Callable[[bytes, Source], None]
                 ) -> None:
        self.interface = interface
        self.on_message = on_message

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_message(data, Source(self.interface, addr[0], addr[1]))
