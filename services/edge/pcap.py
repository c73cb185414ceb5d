"""Captured SIP messages as a pcap file (libpcap's classic format), sans-IO.

Written from the pcap file format (the tcpdump/libpcap "savefile" layout, the same the
IETF draft-ietf-opsawg-pcap describes): a 24-octet global header (magic ``a1b2c3d4``
written in the host's byte order here as little-endian, version 2.4, snaplen, link type)
then per packet a 16-octet record header (seconds, microseconds, captured length,
original length) and the packet. The link type is 1 (Ethernet, RFC 894 framing), which
every reader (tshark, sngrep, Homer's tools) decodes; each SIP message becomes one frame:
Ethernet (zero MACs) + IPv4 (RFC 791, header checksum computed) or IPv6 (RFC 8200) +
UDP (RFC 768, checksum 0 = none, allowed over IPv4; computed over IPv6 where it is
mandatory) or TCP (RFC 9293: one PSH/ACK segment per message, sequence numbers running
per direction so a reader reassembles the stream in order).

An address that is not a numeric IP is written as the unspecified address
(:func:`services.edge.hep.addresses`, as in HEP).
"""

from __future__ import annotations

import struct

from services.edge.hep import Capture, addresses

LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
MAX_IP_PAYLOAD = 65535 - 60  # IPv4's 16-bit total length, the largest headers taken off

FILE_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


class PcapWriter:
    """Frames captures into pcap records; keeps the TCP sequence number per direction."""

    def __init__(self) -> None:
        self._seq: dict[tuple[str, int, str, int], int] = {}

    def record(self, capture: Capture) -> bytes:
        """The pcap record (header + frame) of one message; ValueError when too big."""
        src, dst = addresses(capture)
        version = src.version
        payload = capture.payload
        if len(payload) > MAX_IP_PAYLOAD:
            raise ValueError(f"a {len(payload)}-octet message does not fit one IP packet")
        sport, dport = capture.src[1] & 0xFFFF, capture.dst[1] & 0xFFFF
        tcp = capture.transport != "udp"
        if tcp:
            key = (str(src), sport, str(dst), dport)
            seq = self._seq.get(key, 1)
            self._seq[key] = (seq + len(payload)) & 0xFFFFFFFF
            if len(self._seq) > 65536:  # a long capture of many peers: forget old flows
                self._seq.pop(next(iter(self._seq)))
            # offset 5 words, flags PSH|ACK, a window of 65535, urgent 0
            l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, 0x18, 0xFFFF, 0, 0)
            proto = 6
        else:
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
            proto = 17
        segment = l4 + payload
        if version == 4:
            header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0x4000,
                                 64, proto, 0, src.packed, dst.packed)
            header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
            ethertype = 0x0800
        else:
            header = struct.pack("!IHBB16s16s", 6 << 28, len(segment), proto, 64,
                                 src.packed, dst.packed)
            ethertype = 0x86DD
        pseudo = (src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(segment))
                  if version == 4 else
                  src.packed + dst.packed + struct.pack("!IxxxB", len(segment), proto))
        check = _checksum(pseudo + segment) if tcp or version == 6 else 0
        if tcp:
            segment = segment[:16] + struct.pack("!H", check) + segment[18:]
        elif version == 6:
            segment = segment[:6] + struct.pack("!H", check or 0xFFFF) + segment[8:]
        frame = b"\0" * 12 + struct.pack("!H", ethertype) + header + segment
        seconds = int(capture.time)
        micros = min(round((capture.time - seconds) * 1_000_000), 999_999)
        return struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame
