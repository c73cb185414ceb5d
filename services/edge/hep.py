"""HEP v3 (the Homer/EEP capture protocol) encoder, sans-IO.

Written from the HEP3 Network Protocol Specification (sipcapture/HEP): a packet is the
4 octets ``HEP3``, a 2-octet total length (this header included), then chunks; a chunk is
a 2-octet vendor id (0: generic), a 2-octet type, a 2-octet length (its 6-octet header
included) and the value; every integer is in network byte order. The generic chunks
written here:

====  =======================  ====================================================
type  meaning                  value
====  =======================  ====================================================
0x01  IP protocol family       uint8: 2 IPv4, 10 IPv6
0x02  IP protocol id           uint8: 17 UDP, 6 TCP
0x03  IPv4 source address      4 octets (0x05 for IPv6: 16 octets)
0x04  IPv4 destination addr.   4 octets (0x06 for IPv6: 16 octets)
0x07  source port              uint16
0x08  destination port         uint16
0x09  timestamp, seconds       uint32 (Unix time)
0x0a  timestamp, microseconds  uint32 (offset within the second)
0x0b  protocol type            uint8: 1 SIP
0x0c  capture agent id         uint32
0x0e  authenticate key         octets (only when configured)
0x0f  captured packet payload  octets: the SIP message
0x11  internal correlation id  octets: the Call-ID (only when given)
====  =======================  ====================================================

An address that is not a numeric IP (a next hop still to be resolved) is written as the
unspecified address of the other side's family.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

MAGIC = b"HEP3"
FAMILY_IPV4, FAMILY_IPV6 = 2, 10
PROTO_UDP, PROTO_TCP = 17, 6
TYPE_SIP = 1
MAX_PACKET = 0xFFFF  # the total length is 16 bits


@dataclass(frozen=True, slots=True)
class Capture:
    """One SIP message seen on the wire."""

    payload: bytes
    src: tuple[str, int]
    dst: tuple[str, int]
    transport: str  # "udp" or "tcp" (TLS/WS travel over TCP)
    time: float  # Unix time, seconds
    correlation: str = ""  # the Call-ID, when known


def _chunk(kind: int, value: bytes) -> bytes:
    if 6 + len(value) > MAX_PACKET:
        raise ValueError(f"a HEP3 chunk holds at most {MAX_PACKET - 6} octets")
    return struct.pack("!HHH", 0, kind, 6 + len(value)) + value


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(host: str) -> IpAddress | None:
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _zero(version: int) -> IpAddress:
    return ipaddress.IPv6Address(0) if version == 6 else ipaddress.IPv4Address(0)


def addresses(capture: Capture) -> tuple[IpAddress, IpAddress]:
    """The capture's source and destination as IP addresses of one family (the source's,
    else the destination's, else IPv4): one that is not a numeric IP of it is written as
    the unspecified address; an IPv4-mapped IPv6 address as its IPv4 one."""
    src = _address(capture.src[0])
    dst = _address(capture.dst[0])
    version = src.version if src is not None else dst.version if dst is not None else 4
    if src is None or src.version != version:
        src = _zero(version)
    if dst is None or dst.version != version:
        dst = _zero(version)
    return src, dst


def encode(capture: Capture, *, capture_id: int = 0, auth_key: str = "") -> bytes:
    """The HEP3 packet of one captured message; ValueError when it cannot be one (a
    payload too big for the 16-bit length)."""
    src, dst = addresses(capture)
    v6 = src.version == 6
    seconds = int(capture.time)
    micros = round((capture.time - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    chunks = [
        _chunk(0x01, bytes([FAMILY_IPV6 if v6 else FAMILY_IPV4])),
        _chunk(0x02, bytes([PROTO_UDP if capture.transport == "udp" else PROTO_TCP])),
        _chunk(0x05 if v6 else 0x03, src.packed),
        _chunk(0x06 if v6 else 0x04, dst.packed),
        _chunk(0x07, struct.pack("!H", capture.src[1] & 0xFFFF)),
        _chunk(0x08, struct.pack("!H", capture.dst[1] & 0xFFFF)),
        _chunk(0x09, struct.pack("!I", seconds & 0xFFFFFFFF)),
        _chunk(0x0A, struct.pack("!I", micros)),
        _chunk(0x0B, bytes([TYPE_SIP])),
        _chunk(0x0C, struct.pack("!I", capture_id & 0xFFFFFFFF)),
    ]
    if auth_key:
        chunks.append(_chunk(0x0E, auth_key.encode()))
    if capture.correlation:
        chunks.append(_chunk(0x11, capture.correlation.encode("utf-8", "replace")))
    chunks.append(_chunk(0x0F, capture.payload))
    body = b"".join(chunks)
    total = 6 + len(body)
    if total > MAX_PACKET:
        raise ValueError(f"a HEP3 packet holds at most {MAX_PACKET} octets, not {total}")
    return MAGIC + struct.pack("!H", total) + body


def call_id_of(message: bytes) -> str:
    """The Call-ID of a SIP message's header block (``i`` compact form too), or ''."""
    head = message.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"call-id", b"i"):
            return value.strip().decode("utf-8", "replace")
    return ""
