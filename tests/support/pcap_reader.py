"""A pcap file reader for tests, written from the libpcap savefile format (and RFC 791,
RFC 8200, RFC 768, RFC 9293 for the headers) apart from the edge's writer
(services/edge/pcap.py), strict: the magic, version 2.4, Ethernet link type, record
lengths that tile the file, IPv4 header checksums and lengths, UDP lengths."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path


class PcapError(ValueError):
    pass


@dataclass
class Frame:
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    transport: str
    payload: bytes
    seq: int = 0


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def read(path: Path, *, checksums: bool = True) -> list[Frame]:
    """The frames of a pcap file; ``checksums=False`` for a writer that leaves IPv4
    header checksums 0 (sngrep's saved HEP captures)."""
    data = path.read_bytes()
    if len(data) < 24:
        raise PcapError("no global header")
    magic, major, minor, _, _, _, link = struct.unpack("<IHHiIII", data[:24])
    if magic != 0xA1B2C3D4 or (major, minor) != (2, 4) or link != 1:
        raise PcapError(f"magic {magic:#x} version {major}.{minor} link {link}")
    pos, frames = 24, []
    while pos < len(data):
        if len(data) - pos < 16:
            raise PcapError("a truncated record header")
        sec, usec, incl, orig = struct.unpack("<IIII", data[pos:pos + 16])
        if incl != orig or usec >= 1_000_000 or pos + 16 + incl > len(data):
            raise PcapError(f"bad record at {pos}")
        frames.append(_frame(data[pos + 16:pos + 16 + incl], sec + usec / 1e6, checksums))
        pos += 16 + incl
    return frames


def _frame(frame: bytes, when: float, checksums: bool) -> Frame:
    (ethertype,) = struct.unpack("!H", frame[12:14])
    packet = frame[14:]
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if ethertype == 0x0800:
        ihl = (packet[0] & 0x0F) * 4
        if packet[0] >> 4 != 4 or (checksums and _sum16(packet[:ihl]) != 0xFFFF):
            raise PcapError("a bad IPv4 header (version or checksum)")
        (total,) = struct.unpack("!H", packet[2:4])
        if total != len(packet):
            raise PcapError("IPv4 total length")
        proto = packet[9]
        src, dst = ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])
        segment = packet[ihl:]
    elif ethertype == 0x86DD:
        (length,) = struct.unpack("!H", packet[4:6])
        if packet[0] >> 4 != 6 or length != len(packet) - 40:
            raise PcapError("a bad IPv6 header")
        proto = packet[6]
        src, dst = ipaddress.IPv6Address(packet[8:24]), ipaddress.IPv6Address(packet[24:40])
        segment = packet[40:]
    else:
        raise PcapError(f"ethertype {ethertype:#x}")
    if proto == 17:
        sport, dport, length = struct.unpack("!HHH", segment[:6])
        if length != len(segment):
            raise PcapError("UDP length")
        return Frame(when, (str(src), sport), (str(dst), dport), "udp", segment[8:])
    if proto == 6:
        sport, dport, seq = struct.unpack("!HHI", segment[:8])
        offset = (segment[12] >> 4) * 4
        return Frame(when, (str(src), sport), (str(dst), dport), "tcp", segment[offset:], seq)
    raise PcapError(f"IP protocol {proto}")
