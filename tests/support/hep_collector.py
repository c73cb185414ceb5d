"""A fake HEP capture server (Homer's collector side), decoding HEP v3 per the HEP3
Network Protocol Specification (sipcapture/HEP) -- written apart from the edge's encoder
(services/edge/hep.py) so a mistake in one is not copied into the other.

`decode(packet)` checks the framing strictly: the ``HEP3`` id, a total length equal to
the datagram's, chunks whose lengths (6-octet header included) tile the body exactly, the
size each generic chunk type must have. `HepCollector` is a UDP listener keeping what it
decoded (and what it could not). There is no real Homer here; point a sender at a real
collector (heplify-server, sngrep -L) to compare.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

# generic chunk type -> (name, fixed size or None)
GENERIC: dict[int, tuple[str, int | None]] = {
    0x01: ("ip_family", 1), 0x02: ("ip_proto", 1), 0x03: ("src_ip4", 4),
    0x04: ("dst_ip4", 4), 0x05: ("src_ip6", 16), 0x06: ("dst_ip6", 16),
    0x07: ("src_port", 2), 0x08: ("dst_port", 2), 0x09: ("time_sec", 4),
    0x0A: ("time_usec", 4), 0x0B: ("proto_type", 1), 0x0C: ("capture_id", 4),
    0x0D: ("keepalive", 2), 0x0E: ("auth_key", None), 0x0F: ("payload", None),
    0x10: ("compressed_payload", None), 0x11: ("correlation_id", None),
    0x12: ("vlan", 2),
}


class HepError(ValueError):
    pass


@dataclass
class HepPacket:
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def src(self) -> tuple[str, int]:
        ip = self.fields.get("src_ip4") or self.fields.get("src_ip6")
        return str(ip), int(self.fields["src_port"])

    @property
    def dst(self) -> tuple[str, int]:
        ip = self.fields.get("dst_ip4") or self.fields.get("dst_ip6")
        return str(ip), int(self.fields["dst_port"])

    @property
    def payload(self) -> bytes:
        value: bytes = self.fields["payload"]
        return value


def decode(packet: bytes) -> HepPacket:
    if len(packet) < 6 or packet[:4] != b"HEP3":
        raise HepError("no HEP3 id")
    (total,) = struct.unpack("!H", packet[4:6])
    if total != len(packet):
        raise HepError(f"total length {total} but {len(packet)} octets")
    out = HepPacket()
    pos = 6
    while pos < total:
        if total - pos < 6:
            raise HepError("a truncated chunk header")
        vendor, kind, length = struct.unpack("!HHH", packet[pos:pos + 6])
        if length < 6 or pos + length > total:
            raise HepError(f"chunk {kind:#x}: bad length {length}")
        value = packet[pos + 6:pos + length]
        pos += length
        if vendor != 0:
            out.fields[f"vendor{vendor}_{kind}"] = value
            continue
        name, size = GENERIC.get(kind, (f"generic_{kind}", None))
        if size is not None and len(value) != size:
            raise HepError(f"chunk {name}: {len(value)} octets, not {size}")
        if name in ("src_ip4", "dst_ip4", "src_ip6", "dst_ip6"):
            out.fields[name] = ipaddress.ip_address(value)
        elif size is not None:
            out.fields[name] = int.from_bytes(value, "big")
        elif name in ("auth_key", "correlation_id"):
            out.fields[name] = value.decode()
        else:
            out.fields[name] = value
    for required in ("ip_family", "ip_proto", "src_port", "dst_port", "time_sec",
                     "proto_type", "payload"):
        if required not in out.fields:
            raise HepError(f"no {required} chunk")
    family = out.fields["ip_family"]
    if (family == 2) != ("src_ip4" in out.fields and "dst_ip4" in out.fields):
        raise HepError("the address chunks do not match the family")
    return out


class HepCollector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[HepPacket] = []
        self.errors: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> HepCollector:
        loop = asyncio.get_running_loop()
        collector = cls()
        await loop.create_datagram_endpoint(lambda: collector, local_addr=(host, 0))
        return collector

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.packets.append(decode(data))
        except HepError as exc:
            self.errors.append(str(exc))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HepTcpCollector:
    """A HEP v3 server over TCP: packets back to back on each connection, framed by their
    total-length field (HEP3 spec); a stream that does not start with ``HEP3`` where a
    packet should is an error and closes the connection."""

    def __init__(self) -> None:
        self.packets: list[HepPacket] = []
        self.errors: list[str] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0) -> HepTcpCollector:
        collector = cls()
        collector.server = await asyncio.start_server(collector._serve, host, port)
        return collector

    @property
    def address(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readexactly(6)
                if head[:4] != b"HEP3":
                    self.errors.append("no HEP3 id on the stream")
                    return
                (total,) = struct.unpack("!H", head[4:6])
                if total < 6:
                    self.errors.append(f"total length {total}")
                    return
                body = await reader.readexactly(total - 6)
                try:
                    self.packets.append(decode(head + body))
                except HepError as exc:
                    self.errors.append(str(exc))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
