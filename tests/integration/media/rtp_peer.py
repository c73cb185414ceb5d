"""A small RTP/RTCP endpoint for tests: PCMU every 20 ms plus RTCP sender reports whose
report blocks carry real LSR/DLSR (RFC 3550 §6.4.1), so rtpengine can compute the
round trip and a MOS (it needs RTCP both ways, wave2-testbed.md §1; sipp's pcap replay
resends stale LSR and gets none).

    peer = RtpPeer(ssrc=0x1111)            # binds RTP port and RTP+1 for RTCP
    await peer.open()
    peer.sdp(...)                          # an SDP offer/answer naming its ports
    peer.start(host, port, rtcp_port)      # where to send (from the other side's SDP)
    ...; peer.stop(); peer.close()

`drop_every=N` leaves out every Nth RTP packet (loss the other side reports);
`rtcp_interval` is the time between sender reports.  It counts what it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time

NTP_EPOCH = 2208988800  # seconds from 1900 to 1970


def _ntp(now: float) -> tuple[int, int]:
    seconds = int(now) + NTP_EPOCH
    fraction = int((now - int(now)) * (1 << 32)) & 0xFFFFFFFF
    return seconds & 0xFFFFFFFF, fraction


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_packet: object) -> None:
        self.on_packet = on_packet
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_packet(data, addr)  # type: ignore[operator]


class RtpPeer:
    def __init__(self, *, ssrc: int | None = None, host: str = "127.0.0.1",
                 rtcp_interval: float = 1.0, drop_every: int = 0) -> None:
        self.ssrc = ssrc if ssrc is not None else random.getrandbits(32)
        self.host = host
        self.rtcp_interval = rtcp_interval
        self.drop_every = drop_every
        self.rtp_port = 0
        self.rtp: _Socket | None = None
        self.rtcp: _Socket | None = None
        self.remote: tuple[str, int, int] | None = None
        self.received_rtp = 0
        self.received_rtcp = 0
        self.sent_rtp = 0
        self.sent_rtcp = 0
        self.remote_ssrc: int | None = None
        self.highest_seq = 0
        self.first_seq: int | None = None
        self._last_sr: tuple[int, float] | None = None  # (middle 32 bits, arrival)
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._octets = 0

    async def open(self) -> None:
        """Bind an even RTP port and the next one for RTCP."""
        loop = asyncio.get_running_loop()
        for _ in range(200):
            port = random.randrange(20000, 29998, 2)
            try:
                _, rtp = await loop.create_datagram_endpoint(
                    lambda: _Socket(self._on_rtp), local_addr=(self.host, port))
            except OSError:
                continue
            try:
                _, rtcp = await loop.create_datagram_endpoint(
                    lambda: _Socket(self._on_rtcp), local_addr=(self.host, port + 1))
            except OSError:
                assert rtp.transport is not None
                rtp.transport.close()
                continue
            self.rtp, self.rtcp, self.rtp_port = rtp, rtcp, port
            return
        raise RuntimeError("no free RTP port pair")

    def sdp(self, session: int = 1) -> str:
        return ("v=0\r\n"
                f"o=- {session} {session} IN IP4 {self.host}\r\n"
                "s=-\r\n"
                f"c=IN IP4 {self.host}\r\n"
                "t=0 0\r\n"
                f"m=audio {self.rtp_port} RTP/AVP 0\r\n"
                "a=rtpmap:0 PCMU/8000\r\n"
                "a=sendrecv\r\n")

    def start(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        self.remote = (host, port, rtcp_port or port + 1)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send_rtp()), loop.create_task(self._send_rtcp())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def close(self) -> None:
        for sock in (self.rtp, self.rtcp):
            if sock is not None and sock.transport is not None:
                sock.transport.close()

    # -- sending ---------------------------------------------------------------------
    async def _send_rtp(self) -> None:
        assert self.rtp is not None and self.rtp.transport is not None and self.remote
        payload = b"\xff" * 160
        start = time.monotonic()
        n = 0
        while True:
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + 160) & 0xFFFFFFFF
            n += 1
            if not (self.drop_every and n % self.drop_every == 0):
                header = struct.pack("!BBHII", 0x80, 0, self._seq, self._ts, self.ssrc)
                self.rtp.transport.sendto(header + payload, self.remote[:2])
                self.sent_rtp += 1
                self._octets += len(payload)
            # paced against the start, not drifting with the loop's delays
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))

    async def _send_rtcp(self) -> None:
        assert self.rtcp is not None and self.rtcp.transport is not None and self.remote
        while True:
            await asyncio.sleep(self.rtcp_interval)
            self.rtcp.transport.sendto(self._sender_report(), (self.remote[0], self.remote[2]))
            self.sent_rtcp += 1

    def _sender_report(self) -> bytes:
        now = time.time()
        msw, lsw = _ntp(now)
        blocks = b""
        count = 0
        if self.remote_ssrc is not None and self.first_seq is not None:
            count = 1
            expected = self.highest_seq - self.first_seq + 1
            lost = max(0, expected - self.received_rtp)
            fraction = min(255, int(256 * lost / expected)) if expected > 0 else 0
            lsr, dlsr = 0, 0
            if self._last_sr is not None:
                lsr = self._last_sr[0]
                dlsr = int((time.monotonic() - self._last_sr[1]) * 65536)
            blocks = struct.pack("!IB3sIIII", self.remote_ssrc, fraction,
                                 lost.to_bytes(3, "big"), self.highest_seq, 0, lsr, dlsr)
        sr = struct.pack("!BBHIIIIII", 0x80 | count, 200, 0,
                         self.ssrc, msw, lsw, self._ts, self.sent_rtp, self._octets) + blocks
        sr = sr[:2] + struct.pack("!H", len(sr) // 4 - 1) + sr[4:]
        cname = b"peer@127.0.0.1"
        item = bytes([1, len(cname)]) + cname + b"\x00"
        item += b"\x00" * (-(len(item) + 4) % 4)
        sdes = struct.pack("!BBHI", 0x81, 202, (len(item) + 4) // 4, self.ssrc) + item
        return sr + sdes

    # -- receiving -------------------------------------------------------------------
    def _on_rtp(self, data: bytes, _addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        seq = struct.unpack("!H", data[2:4])[0]
        self.remote_ssrc = struct.unpack("!I", data[8:12])[0]
        if self.first_seq is None:
            self.first_seq = seq
            self.highest_seq = seq
        else:
            ext = (self.highest_seq & ~0xFFFF) | seq
            if ext < self.highest_seq - 0x8000:
                ext += 0x10000
            self.highest_seq = max(self.highest_seq, ext)
        self.received_rtp += 1

    def _on_rtcp(self, data: bytes, _addr: tuple[str, int]) -> None:
        self.received_rtcp += 1
        if len(data) >= 20 and data[1] == 200:
            msw, lsw = struct.unpack("!II", data[8:16])
            self._last_sr = (((msw & 0xFFFF) << 16) | (lsw >> 16), time.monotonic())


def sdp_media(sdp: str) -> tuple[str, int, int]:
    """(connection address, audio port, RTCP port) of an SDP."""
    host, port, rtcp = "", 0, 0
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("c=IN IP4 ") or line.startswith("c=IN IP6 "):
            host = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
        elif line.startswith("a=rtcp:"):
            rtcp = int(line[7:].split()[0])
    return host, port, rtcp or port + 1
