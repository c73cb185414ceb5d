"""Thin asyncio transports for the proxy core: UDP endpoints and TCP connections.

They only move bytes (aioquic's `asyncio/protocol.py` is the model): a datagram or a framed
stream message is handed to `on_message(data, source)`; sending is `send(dest, data)`.
TCP follows RFC 3261 §18.3: messages are cut by `shared.sip.StreamFramer` (Content-Length is
mandatory), CRLFCRLF keep-alive pings get a CRLF pong (RFC 5626 §3.5.1), and connections are
reused in both directions: a response goes back on the connection its request came in on,
and a request to host:port goes on any open connection to that peer (inbound ones included)
before a new one is opened.  Sockets are opened with SO_REUSEPORT so several worker
processes can share the SIP port.

TCP is bounded (`tcp_limits.py` holds the rules): the pool accepts connections itself
(`add_reader` on the listening socket, `connect_accepted_socket` for the ones it keeps)
so a connection over the global or per-address cap is closed before any buffer or protocol
object exists, and a failed accept (EMFILE and friends) pauses accepting for a second
with one rate-limited log line instead of a traceback per loop iteration.  One sweep per
second closes connections whose message has not completed in time or that stayed idle.
The transports work with the loop users run, uvloop, as well as asyncio's own: only the
`asyncio.Transport` methods are used, never an isinstance check on the loop's classes.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import struct
from collections.abc import Callable
from itertools import count
from typing import Any, cast

from services.edge.addresses import Destination, Interface, Source
from services.edge.datagrams import Receiver
from services.edge.stateless import answer_malformed
from services.edge.tcp_limits import ConnectionBudget, TcpLimits, deadline_reason
from shared.sip import KeepAlive, SipParseError, StreamFramer

OnMessage = Callable[[bytes, Source], None]
OnFailure = Callable[[Destination], None]
Log = Callable[..., None]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_socket(interface: Interface, *, reuse_port: bool, rcvbuf: int = 4 << 20) -> socket.socket:
    """A bound socket for `interface` (SO_REUSEPORT so workers can share the port)."""
    kind = socket.SOCK_DGRAM if interface.transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(_family(interface.host), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_DGRAM:
            # A burst of datagrams must wait in the kernel while Python is busy.
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                except OSError:
                    pass
        sock.bind((interface.host, interface.port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class UdpEndpoint(asyncio.DatagramProtocol):
    """One UDP socket: datagrams in, `sendto` out."""

    def __init__(self, interface: Interface, on_message: OnMessage, log: Log) -> None:
        self.interface = interface
        self.on_message = on_message
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None
        # The loop looks `datagram_received` up per datagram: this instance's is the
        # compiled `Receiver`'s (services/edge/datagrams.py), one interpreted frame fewer
        # per datagram than the method below, which does the same.
        self.datagram_received = Receiver(  # type: ignore[method-assign]
            interface, on_message).datagram_received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_message(data, Source(self.interface, addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction's timers handle the loss.
        self.log("udp.error", error=str(exc))

    def send(self, data: bytes, host: str, port: int) -> None:
        if self.transport is not None:
            self.transport.sendto(data, (host, port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# accept() errors that mean "out of resources": stop accepting for a moment (as asyncio
# does), rather than spin on a listening socket that stays readable.
_ACCEPT_PAUSE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE = 1.0  # s
ACCEPT_BATCH = 64  # connections accepted per wake-up of the listening socket
SWEEP_INTERVAL = 1.0  # s between checks of the connections' deadlines


class TcpConnection(asyncio.Protocol):
    """One TCP connection, inbound or outbound."""

    def __init__(self, pool: TcpPool, interface: Interface, *, inbound: bool = False,
                 budget_ip: str | None = None) -> None:
        self.pool = pool
        self.interface = interface
        limits = pool.limits
        self.framer = StreamFramer(max_header=limits.max_header, max_body=limits.max_body)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.id = 0
        self.pending: list[bytes] = []
        self.pongs: list[asyncio.Future[None]] = []  # our CRLFCRLF pings awaiting a CRLF
        self.inbound = inbound
        self.budget_ip = budget_ip  # the address its budget slot is held for (None: ours)
        self.last_activity = pool.now()
        self.partial_since: float | None = None
        self.awaiting_first = inbound  # an accepted connection owes us a first message
        self.released = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not a subclass of asyncio.Transport, though it has every
        # method of one: an isinstance check here reset every connection under uvloop.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self.last_activity = self.pool.now()
        self.pool._register(self)
        for data in self.pending:
            self.transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        now = self.pool.now()
        self.last_activity = now
        if self.pongs and not self.framer.buffered and data.startswith(b"\r\n") \
                and not data.startswith(b"\r\n\r\n"):
            # The pong to our ping: a lone CRLF, which the framer would hold back as the
            # possible start of a CRLFCRLF ping.
            self._pong()
            data = data[2:]
            if not data:
                return
        try:
            items = self.framer.feed(data)
        except SipParseError as err:
            # §18.3: the stream cannot be framed any more; answer if we can, then close.
            self.pool.log("tcp.unframable", peer=f"{self.peer[0]}:{self.peer[1]}",
                          error=str(err))
            if err.status is not None and self.transport is not None:
                answer = answer_malformed(self.framer.head(), err.status, err.reason)
                if answer:
                    self.transport.write(answer)
            self.close()
            return
        if self.framer.partial:
            # A message is under way: its clock starts with its first byte, which is in this
            # read when the read also completed other messages (a busy trunk whose reads
            # always end mid-message must not be taken for a slow sender).
            if self.partial_since is None or items:
                self.partial_since = now
        else:
            self.partial_since = None
        source = Source(self.interface, self.peer[0], self.peer[1], self.id)
        for item in items:
            if isinstance(item, KeepAlive):
                if item.needs_pong and self.transport is not None:
                    self.transport.write(b"\r\n")
                elif not item.needs_pong:  # the pong to our ping (RFC 5626 §3.5.1)
                    self._pong()
                continue
            self.awaiting_first = False
            self.pool.on_message(item, source)

    def _pong(self) -> None:
        for fut in self.pongs:
            if not fut.done():
                fut.set_result(None)
        self.pongs.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._unregister(self)
        self.pool._release(self)
        for fut in self.pongs:
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))
        self.pongs.clear()

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Listener:
    """One listening socket the pool accepts on."""

    __slots__ = ("interface", "paused", "sock")

    def __init__(self, interface: Interface, sock: socket.socket) -> None:
        self.interface = interface
        self.sock = sock
        self.paused = False


class TcpPool:
    """Every TCP connection of one process, by id and by peer address."""

    def __init__(self, on_message: OnMessage, on_failure: OnFailure, log: Log,
                 connect_timeout: float = 5.0, limits: TcpLimits | None = None,
                 clock: Callable[[], float] | None = None,
                 fd_limit: int | None = None) -> None:
        self.on_message = on_message
        self.on_failure = on_failure
        self.log = log  # rate-limited by the app: a flood costs a few lines per second
        self.connect_timeout = connect_timeout
        self.limits = limits or TcpLimits()
        self._clock = clock
        if fd_limit is None:
            fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            fd_limit = None if fd_limit == resource.RLIM_INFINITY else fd_limit
        self.budget = ConnectionBudget(self.limits.effective_cap(fd_limit),
                                       self.limits.max_per_ip)
        self.by_id: dict[int, TcpConnection] = {}
        self.by_peer: dict[tuple[str, int], TcpConnection] = {}
        self._ids = count(1)
        self._listeners: list[_Listener] = []
        self._connecting: dict[tuple[str, int], TcpConnection] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.refused = 0  # connections closed at accept: over a cap
        self.timed_out = 0  # connections closed by the header or idle timeout
        self.accept_errors = 0

    def statistics(self) -> dict[str, int]:
        """MI `get_statistics tcp:` (read at request time, nothing on the hot path)."""
        conns = list(self.by_id.values())
        return {
            "connections": len(conns),
            "buffered_bytes": sum(c.framer.buffered for c in conns),
            "max_connections": self.budget.cap,
            "refused": self.refused,
            "timed_out": self.timed_out,
            "accept_errors": self.accept_errors,
        }

    def now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    async def listen(self, interface: Interface, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.listen(1024)
        sock.setblocking(False)
        listener = _Listener(interface, sock)
        self._listeners.append(listener)
        loop.add_reader(sock.fileno(), self._accept, listener)
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    # -- accepting ------------------------------------------------------------------------
    def _accept(self, listener: _Listener) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.accept_errors += 1
                if exc.errno in _ACCEPT_PAUSE_ERRNOS:
                    self.log("tcp.accept_failed", error=str(exc), paused=ACCEPT_PAUSE)
                    self._pause(listener)
                # ECONNABORTED and the like concern one connection only: go on.
                return
            ip = addr[0]
            refused = self.budget.admit(ip)
            if refused is not None:
                self.refused += 1
                self.log("tcp.refused", peer=f"{ip}:{addr[1]}", cap=refused,
                         connections=self.budget.total)
                _close_now(conn)
                continue
            conn.setblocking(False)
            protocol = TcpConnection(self, listener.interface, inbound=True, budget_ip=ip)
            task = loop.create_task(self._adopt(conn, protocol))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _adopt(self, conn: socket.socket, protocol: TcpConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn)
        except (OSError, RuntimeError) as exc:
            self.log("tcp.accept_failed", error=str(exc))
            conn.close()
            self._release(protocol)

    def _pause(self, listener: _Listener) -> None:
        if listener.paused:
            return
        loop = asyncio.get_running_loop()
        listener.paused = True
        loop.remove_reader(listener.sock.fileno())

        def resume() -> None:
            listener.paused = False
            if listener in self._listeners:
                loop.add_reader(listener.sock.fileno(), self._accept, listener)

        loop.call_later(ACCEPT_PAUSE, resume)

    def _release(self, conn: TcpConnection) -> None:
        if not conn.released:
            conn.released = True
            self.budget.release(conn.budget_ip)

    # -- deadlines --------------------------------------------------------------------------
    def _sweep(self) -> None:
        self._sweeper = None
        now = self.now()
        limits = self.limits
        for conn in list(self.by_id.values()):
            reason = deadline_reason(limits, now, last_activity=conn.last_activity,
                                     partial_since=conn.partial_since,
                                     awaiting_first=conn.awaiting_first)
            if reason is not None:
                self.timed_out += 1
                self.log("tcp.timeout", peer=f"{conn.peer[0]}:{conn.peer[1]}", reason=reason)
                conn.abort()
        if self._listeners or self.by_id:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def _register(self, conn: TcpConnection) -> None:
        conn.id = next(self._ids)
        self.by_id[conn.id] = conn
        self.by_peer[conn.peer] = conn
        if self._sweeper is None:  # an outbound connection of a UDP-only edge, too
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def _unregister(self, conn: TcpConnection) -> None:
        self.by_id.pop(conn.id, None)
        if self.by_peer.get(conn.peer) is conn:
            del self.by_peer[conn.peer]

    def send(self, dest: Destination, data: bytes) -> None:
        conn = self.by_id.get(dest.conn) if dest.conn is not None else None
        if conn is None:
            conn = self.by_peer.get((dest.host, dest.port))
        if conn is None:
            conn = self._connecting.get((dest.host, dest.port))
        if conn is not None:
            conn.write(data)
            return
        assert dest.interface is not None
        if self.budget.admit(None) is not None:
            # Every slot is taken: this send fails like a refused connection (§18.4).
            self.log("tcp.refused", peer=f"{dest.host}:{dest.port}", cap="global",
                     connections=self.budget.total, outbound=True)
            asyncio.get_running_loop().call_soon(self.on_failure, dest)
            return
        conn = TcpConnection(self, dest.interface)
        conn.pending.append(data)
        self._connecting[(dest.host, dest.port)] = conn
        task = asyncio.get_running_loop().create_task(self._connect(dest, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def crlf_ping(self, host: str, port: int, timeout: float) -> bool:
        """RFC 5626 §3.5.1 keep-alive on the open connection to (host, port): sends a
        double CRLF, True when the single-CRLF pong came within `timeout`. No connection
        (the NAT binding is gone with it) is False: a keep-alive never dials out."""
        conn = self.by_peer.get((host, port))
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.pongs.append(fut)
        conn.transport.write(b"\r\n\r\n")
        try:
            async with asyncio.timeout(timeout):
                await fut
        except (TimeoutError, ConnectionError):
            return False
        finally:
            if fut in conn.pongs:
                conn.pongs.remove(fut)
        return True

    async def _connect(self, dest: Destination, conn: TcpConnection) -> None:
        loop = asyncio.get_running_loop()
        key = (dest.host, dest.port)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: conn, dest.host, dest.port)
        except (OSError, TimeoutError, ValueError) as exc:
            # ValueError: an address the loop refuses outright (family mismatch, port 0).
            self.log("tcp.connect_failed", peer=f"{dest.host}:{dest.port}", error=str(exc))
            self._release(conn)
            self.on_failure(dest)
        finally:
            if self._connecting.get(key) is conn:
                del self._connecting[key]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            if not listener.paused:
                loop.remove_reader(listener.sock.fileno())
            listener.sock.close()
        self._listeners.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.by_id.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()


def _close_now(sock: socket.socket) -> None:
    """Close an accepted socket at once, with a reset rather than a lingering FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
