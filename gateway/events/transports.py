"""Delivery of one event to one subscriber socket, in the wire format of the OpenSIPS module
the socket syntax names.

- ``udp:`` (event_datagram): one JSON-RPC 2.0 notification per datagram,
  ``{"jsonrpc": "2.0", "method": <event>, "params": {...}}``.
- ``tcp:`` (event_stream): the same JSON text over TCP. One connection per event: the
  ``opensips`` Python package's stream listener accepts, reads once and closes, and a
  kept-open connection would lose the next event silently when the peer has closed it.
- ``jsonrpc:`` (event_jsonrpc, sync_mode 0): raw JSON-RPC 2.0 over TCP with ``id: null``
  (what OpenSIPS sends), method = the socket's ``/method`` or the event name.
- ``rabbitmq:`` (event_rabbitmq): the OpenSIPS 2.4 text payload - the event name, then one
  ``name::value`` line per parameter (strings quoted when they hold blanks, quotes or
  ``::``) - published to the socket's exchange (default exchange when none) with its
  routing key. The module never declares exchanges or queues, like OpenSIPS.

Every delivery is bounded by ``timeout``; a failure raises :class:`TransportError`, which
the subscription manager counts and logs. It never reaches the event's publisher.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jsonrpcclient import notification, request

from gateway.events.sockets import (
    DatagramSocket,
    JsonRpcSocket,
    RabbitMQSocket,
    StreamSocket,
    SubscriberSocket,
)

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection


class TransportError(Exception):
    """An event could not be delivered to a subscriber socket."""


def jsonrpc_notification(
    method: str, params: Mapping[str, Any], *, null_id: bool = False
) -> bytes:
    msg = (request(method, params=dict(params), id=None) if null_id
           else notification(method, params=dict(params)))
    return json.dumps(msg, separators=(",", ":")).encode()


def _quote(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if not text or any(c in text for c in ' \t\r\n"\\') or "::" in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def rabbitmq_payload(event: str, params: Mapping[str, Any]) -> bytes:
    """OpenSIPS 2.4 event_rabbitmq body: the event name, then ``name::value`` lines."""
    lines = [event] + [f"{name}::{_quote(value)}" for name, value in params.items()]
    return "\n".join(lines).encode()


class SocketDeliverer:
    """Sends events to subscriber sockets; owns the UDP sockets and AMQP connections."""

    def __init__(self, *, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._udp: dict[int, socket.socket] = {}
        self._amqp: dict[str, tuple[AbstractConnection, AbstractChannel]] = {}

    async def deliver(self, sock: SubscriberSocket, event: str, params: Mapping[str, Any]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                if isinstance(sock, DatagramSocket):
                    await self._send_udp(sock, jsonrpc_notification(event, params))
                elif isinstance(sock, StreamSocket):
                    await self._send_tcp(sock.host, sock.port, jsonrpc_notification(event, params))
                elif isinstance(sock, JsonRpcSocket):
                    body = jsonrpc_notification(sock.method or event, params, null_id=True)
                    await self._send_tcp(sock.host, sock.port, body)
                else:
                    await self._send_amqp(sock, rabbitmq_payload(event, params))
        except TransportError:
            raise
        except TimeoutError as exc:
            raise TransportError(f"{sock}: timed out after {self.timeout}s") from exc
        except OSError as exc:
            raise TransportError(f"{sock}: {exc!r}") from exc

    async def _send_udp(self, sock: DatagramSocket, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(sock.host, sock.port, type=socket.SOCK_DGRAM)
        if not infos:
            raise TransportError(f"{sock}: cannot resolve {sock.host}")
        family, _, _, _, addr = infos[0]
        udp = self._udp.get(family)
        if udp is None:
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.setblocking(False)
            self._udp[family] = udp
        try:
            await loop.sock_sendto(udp, data, addr)
        except NotImplementedError:
            # uvloop (the services' loop) has no sock_sendto. A datagram socket that
            # cannot take a datagram right now raises BlockingIOError: a failed delivery.
            udp.sendto(data, addr)

    @staticmethod
    async def _send_tcp(host: str, port: int, data: bytes) -> None:
        _, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(data)
            await writer.drain()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass  # the peer closing first after reading is fine

    async def _send_amqp(self, sock: RabbitMQSocket, body: bytes) -> None:
        # Imported here: aio_pika costs the gateway ~35 ms of CPU at every start, and only
        # a subscriber on a RabbitMQ socket needs it.
        import aio_pika

        try:
            await self._publish_amqp(sock, body)
        except aio_pika.exceptions.AMQPError as exc:
            raise TransportError(f"{sock}: {exc!r}") from exc

    async def _publish_amqp(self, sock: RabbitMQSocket, body: bytes) -> None:
        import aio_pika

        key = sock.url
        cached = self._amqp.get(key)
        if cached is None or cached[0].is_closed or cached[1].is_closed:
            connection = await aio_pika.connect(sock.url, timeout=self.timeout)
            channel = await connection.channel(publisher_confirms=True)
            cached = self._amqp[key] = (connection, channel)
        _, channel = cached
        if sock.exchange:
            exchange = await channel.get_exchange(sock.exchange, ensure=False)
        else:
            exchange = channel.default_exchange
        try:
            await exchange.publish(
                aio_pika.Message(body, content_type="text/plain"),
                routing_key=sock.routing_key, mandatory=False, timeout=self.timeout,
            )
        except BaseException:
            # A broken connection must not be reused for the next event.
            self._amqp.pop(key, None)
            raise

    async def close(self) -> None:
        for udp in self._udp.values():
            udp.close()
        self._udp.clear()
        conns, self._amqp = list(self._amqp.values()), {}
        for connection, _ in conns:
            try:
                await connection.close()
            except Exception:
                pass
