"""Thin asyncio transports for the proxy core: UDP endpoints and TCP connections.

They only move bytes (aioquic's `asyncio/protocol.py` is the model): a datagram or a framed
stream message is handed to `on_message(data, source)`; sending is `send(dest, data)`.
TCP follows RFC 3261 §18.3: messages are cut by `shared.sip.StreamFramer` (Content-Length is
mandatory), CRLFCRLF keep-alive pings get a CRLF pong (RFC 5626 §3.5.1), and connections are
reused in both directions: a response goes back on the connection its request came in on,
and a request to host:port goes on any open connection to that peer (inbound ones included)
before a new one is opened.  Sockets are opened with SO_REUSEPORT so several worker
processes can share the SIP port.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from itertools import count
from typing import Any

from services.edge.addresses import Destination, Interface, Source
from services.edge.stateless import answer_malformed
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


class TcpConnection(asyncio.Protocol):
    """One TCP connection, inbound or outbound."""

    def __init__(self, pool: TcpPool, interface: Interface) -> None:
        self.pool = pool
        self.interface = interface
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.id = 0
        self.pending: list[bytes] = []
        self.pongs: list[asyncio.Future[None]] = []  # our CRLFCRLF pings awaiting a CRLF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self.pool._register(self)
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
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
                answer = answer_malformed(data, err.status, err.reason)
                if answer:
                    self.transport.write(answer)
            self.close()
            return
        source = Source(self.interface, self.peer[0], self.peer[1], self.id)
        for item in items:
            if isinstance(item, KeepAlive):
                if item.needs_pong and self.transport is not None:
                    self.transport.write(b"\r\n")
                elif not item.needs_pong:  # the pong to our ping (RFC 5626 §3.5.1)
                    self._pong()
                continue
            self.pool.on_message(item, source)

    def _pong(self) -> None:
        for fut in self.pongs:
            if not fut.done():
                fut.set_result(None)
        self.pongs.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._unregister(self)
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


class TcpPool:
    """Every TCP connection of one process, by id and by peer address."""

    def __init__(self, on_message: OnMessage, on_failure: OnFailure, log: Log,
                 connect_timeout: float = 5.0) -> None:
        self.on_message = on_message
        self.on_failure = on_failure
        self.log = log
        self.connect_timeout = connect_timeout
        self.by_id: dict[int, TcpConnection] = {}
        self.by_peer: dict[tuple[str, int], TcpConnection] = {}
        self._ids = count(1)
        self._servers: list[asyncio.AbstractServer] = []
        self._connecting: dict[tuple[str, int], TcpConnection] = {}

    async def listen(self, interface: Interface, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: TcpConnection(self, interface), sock=sock)
        self._servers.append(server)

    def _register(self, conn: TcpConnection) -> None:
        conn.id = next(self._ids)
        self.by_id[conn.id] = conn
        self.by_peer[conn.peer] = conn

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
        conn = TcpConnection(self, dest.interface)
        conn.pending.append(data)
        self._connecting[(dest.host, dest.port)] = conn
        asyncio.get_running_loop().create_task(self._connect(dest, conn))

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
        except (OSError, TimeoutError) as exc:
            self.log("tcp.connect_failed", peer=f"{dest.host}:{dest.port}", error=str(exc))
            self.on_failure(dest)
        finally:
            if self._connecting.get(key) is conn:
                del self._connecting[key]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.by_id.values()):
            conn.close()
        for server in self._servers:
            await server.wait_closed()
