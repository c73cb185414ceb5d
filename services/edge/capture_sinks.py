"""Where captured SIP messages go (the IO side of SIP capture): a HEP v3 server over UDP
or TCP, or a pcap file.

A destination is written as a URI:

* ``hep:HOST:PORT`` (or ``HOST:PORT``, ``udp:HOST:PORT``): HEP v3, one datagram a message;
* ``hep:HOST:PORT;transport=tcp`` (or ``tcp:HOST:PORT``): HEP v3 over one TCP connection,
  packets back to back (HEP frames itself by its length field). Opened on first use,
  reopened after a failure at most every `RETRY` s; while it is down or slow, up to
  `QUEUE` octets wait and more are dropped (counted): capture never stops SIP;
* ``file:/PATH`` (``.pcap`` by custom): a pcap file (:mod:`services.edge.pcap`) read by
  tshark, sngrep, Wireshark. Every worker of an edge appends to the same file, each
  record in one ``write`` on an ``O_APPEND`` descriptor (so records never interleave);
  the global header is written once, by whoever creates the file.

``emit(capture)`` answers whether the message was handed on (False: counted as an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Protocol

from services.edge.hep import Capture, encode
from services.edge.pcap import FILE_HEADER, PcapWriter

RETRY = 2.0
QUEUE = 4 * 1024 * 1024


class Sink(Protocol):
    uri: str

    def emit(self, capture: Capture) -> bool: ...

    def close(self) -> None: ...


def parse_uri(value: str) -> tuple[str, str, int | str]:
    """``(kind, host, port)`` with kind ``udp``/``tcp``, or ``("file", "", path)``;
    ValueError naming the accepted forms."""
    text = value.strip()
    low = text.lower()
    if low.startswith("file:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"a file destination needs a path, not {value!r}")
        return "file", "", path
    kind = "udp"
    for prefix, k in (("hep:", "udp"), ("udp:", "udp"), ("tcp:", "tcp")):
        if low.startswith(prefix):
            text, kind = text[len(prefix):], k
            break
    text, _, params = text.partition(";")
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "transport":
            if val.strip().lower() not in ("udp", "tcp"):
                raise ValueError(f"transport must be udp or tcp in {value!r}")
            kind = val.strip().lower()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"a capture destination is hep:host:port[;transport=tcp] or "
                         f"file:/path, not {value!r}")
    return kind, host.strip("[]"), int(port)


class HepUdpSink:
    def __init__(self, uri: str, host: str, port: int, *, capture_id: int,
                 auth_key: str) -> None:
        self.uri = uri
        self.dest = (host, port)
        self.capture_id, self.auth_key = capture_id, auth_key
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def emit(self, capture: Capture) -> bool:
        try:
            self.sock.sendto(encode(capture, capture_id=self.capture_id,
                                    auth_key=self.auth_key), self.dest)
        except (OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        self.sock.close()


class HepTcpSink:
    def __init__(self, uri: str, host: str, port: int, *, capture_id: int,
                 auth_key: str) -> None:
        self.uri = uri
        self.dest = (host, port)
        self.capture_id, self.auth_key = capture_id, auth_key
        self.writer: asyncio.StreamWriter | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.retry_at = 0.0
        self.closed = False

    def emit(self, capture: Capture) -> bool:
        try:
            packet = encode(capture, capture_id=self.capture_id, auth_key=self.auth_key)
        except ValueError:
            return False
        writer = self.writer
        if writer is not None and not writer.is_closing():
            if writer.transport.get_write_buffer_size() > QUEUE:
                return False  # the collector does not keep up
            writer.write(packet)
            return True
        self.writer = None
        if self.pending_bytes + len(packet) > QUEUE:
            return False
        self.pending.append(packet)
        self.pending_bytes += len(packet)
        if self.connecting is None and time.monotonic() >= self.retry_at and not self.closed:
            self.connecting = asyncio.get_running_loop().create_task(self._connect())
        return True

    async def _connect(self) -> None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*self.dest), 5)
        except (OSError, TimeoutError):
            self.retry_at = time.monotonic() + RETRY
            self.pending.clear()  # nowhere to send them: dropped, as a full queue
            self.pending_bytes = 0
            return
        finally:
            self.connecting = None
        if self.closed:
            writer.close()
            return
        writer.write(b"".join(self.pending))
        self.pending.clear()
        self.pending_bytes = 0
        self.writer = writer

    def close(self) -> None:
        self.closed = True
        if self.connecting is not None:
            self.connecting.cancel()
        if self.writer is not None:
            self.writer.close()


class PcapFileSink:
    def __init__(self, uri: str, path: str) -> None:
        self.uri = uri
        self.path = path
        self.writer = PcapWriter()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            # Another worker created it: its header goes first (a moment at most).
            deadline = time.monotonic() + 1.0
            while os.path.getsize(path) < len(FILE_HEADER) and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            os.write(fd, FILE_HEADER)
            os.close(fd)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def emit(self, capture: Capture) -> bool:
        try:
            os.write(self.fd, self.writer.record(capture))
        except (OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def open_sink(uri: str, *, capture_id: int = 1, auth_key: str = "") -> Sink:
    """The destination a URI names (ValueError on a bad one, OSError if it cannot open)."""
    kind, host, port = parse_uri(uri)
    if kind == "file":
        return PcapFileSink(uri, str(port))
    assert isinstance(port, int)
    if kind == "tcp":
        return HepTcpSink(uri, host, port, capture_id=capture_id, auth_key=auth_key)
    return HepUdpSink(uri, host, port, capture_id=capture_id, auth_key=auth_key)
