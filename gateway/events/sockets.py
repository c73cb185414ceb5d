"""Subscriber sockets in OpenSIPS syntax, parsed into typed addresses.

``event_subscribe`` names its subscriber with the same socket strings OpenSIPS modules
accept; the prefix picks the transport (the OpenSIPS module that would deliver it):

============================================================  ==================
``udp:host:port``                                               event_datagram
``tcp:host:port``                                               event_stream
``jsonrpc:host:port[/method]``                                  event_jsonrpc
``rabbitmq:[user[:pass]@]host[:port]/[exchange?]routing_key``   event_rabbitmq
============================================================  ==================

Hosts are names, IPv4 addresses or bracketed IPv6 addresses (``[::1]``). A string that
does not parse raises :class:`SocketSyntaxError` whose message says what is wrong; the MI
layer turns it into a JSON-RPC error for the client. ``str(address)`` is the canonical
form used as the subscription key, so ``UDP:127.0.0.1:9`` and ``udp:127.0.0.1:9`` are
the same subscriber.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUPPORTED = ("udp", "tcp", "jsonrpc", "rabbitmq")


class SocketSyntaxError(ValueError):
    """A subscriber socket string that does not follow the OpenSIPS syntax."""


_HOST = r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
_HOSTPORT = re.compile(_HOST + r":(?P<port>[0-9]{1,5})$")
_HOST_OPTPORT = re.compile(_HOST + r"(?::(?P<port>[0-9]{1,5}))?$")
_METHOD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


def _host(raw: str) -> str:
    return raw[1:-1] if raw.startswith("[") else raw


def _show(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port(raw: str | None, default: int | None, text: str) -> int:
    if raw is None:
        if default is None:
            raise SocketSyntaxError(f"{text!r}: missing port")
        return default
    port = int(raw)
    if not 0 < port < 65536:
        raise SocketSyntaxError(f"{text!r}: port {port} out of range 1-65535")
    return port


@dataclass(frozen=True, slots=True)
class DatagramSocket:
    """``udp:host:port``: one JSON-RPC notification per datagram."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"udp:{_show(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class StreamSocket:
    """``tcp:host:port``: JSON-RPC notifications written on a TCP connection."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"tcp:{_show(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class JsonRpcSocket:
    """``jsonrpc:host:port[/method]``: raw JSON-RPC 2.0 over TCP, no HTTP."""

    host: str
    port: int
    method: str | None = None  # None: the event name is the method

    def __str__(self) -> str:
        tail = f"/{self.method}" if self.method else ""
        return f"jsonrpc:{_show(self.host)}:{self.port}{tail}"


@dataclass(frozen=True, slots=True)
class RabbitMQSocket:
    """``rabbitmq:[user[:pass]@]host[:port]/[exchange?]routing_key`` (event_rabbitmq)."""

    host: str
    routing_key: str
    port: int = 5672
    user: str = "guest"
    password: str = "guest"
    exchange: str = ""  # the default exchange: routing_key is then a queue name

    def __str__(self) -> str:
        # The password is part of the key but never shown in full by listings (see redacted).
        cred = f"{self.user}:{self.password}@"
        ex = f"{self.exchange}?" if self.exchange else ""
        return f"rabbitmq:{cred}{_show(self.host)}:{self.port}/{ex}{self.routing_key}"

    def redacted(self) -> str:
        ex = f"{self.exchange}?" if self.exchange else ""
        return f"rabbitmq:{self.user}@{_show(self.host)}:{self.port}/{ex}{self.routing_key}"

    @property
    def url(self) -> str:
        from urllib.parse import quote

        return (
            f"amqp://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{_show(self.host)}:{self.port}/"
        )


SubscriberSocket = DatagramSocket | StreamSocket | JsonRpcSocket | RabbitMQSocket


def display(sock: SubscriberSocket) -> str:
    """How a socket is shown to operators (no password)."""
    return sock.redacted() if isinstance(sock, RabbitMQSocket) else str(sock)


def parse_socket(text: str) -> SubscriberSocket:
    if not isinstance(text, str) or not text.strip():
        raise SocketSyntaxError("empty subscriber socket")
    text = text.strip()
    proto, sep, rest = text.partition(":")
    proto = proto.lower()
    if not sep or proto not in SUPPORTED:
        raise SocketSyntaxError(
            f"{text!r}: unknown socket type {proto!r}; expected one of "
            + ", ".join(f"{p}:" for p in SUPPORTED)
        )
    if proto in ("udp", "tcp"):
        m = _HOSTPORT.match(rest)
        if not m:
            raise SocketSyntaxError(f"{text!r}: expected {proto}:host:port")
        cls = DatagramSocket if proto == "udp" else StreamSocket
        return cls(_host(m["host"]), _port(m["port"], None, text))
    if proto == "jsonrpc":
        addr, slash, method = rest.partition("/")
        m = _HOSTPORT.match(addr)
        if not m:
            raise SocketSyntaxError(f"{text!r}: expected jsonrpc:host:port[/method]")
        if slash and not _METHOD.match(method):
            raise SocketSyntaxError(f"{text!r}: bad method name {method!r}")
        return JsonRpcSocket(_host(m["host"]), _port(m["port"], None, text), method or None)
    # rabbitmq
    addr, slash, target = rest.partition("/")
    if not slash:
        raise SocketSyntaxError(
            f"{text!r}: expected rabbitmq:[user[:pass]@]host[:port]/[exchange?]routing_key"
        )
    user, password = "guest", "guest"
    if "@" in addr:
        cred, _, addr = addr.rpartition("@")
        user, has_pass, pw = cred.partition(":")
        if not user:
            raise SocketSyntaxError(f"{text!r}: empty user name")
        if has_pass:
            password = pw
    m = _HOST_OPTPORT.match(addr)
    if not m:
        raise SocketSyntaxError(f"{text!r}: bad host {addr!r}")
    exchange, q, key = target.partition("?")
    if not q:
        exchange, key = "", target
    if not key:
        raise SocketSyntaxError(f"{text!r}: missing routing key")
    return RabbitMQSocket(
        host=_host(m["host"]), port=_port(m["port"], 5672, text), user=user,
        password=password, exchange=exchange, routing_key=key,
    )
