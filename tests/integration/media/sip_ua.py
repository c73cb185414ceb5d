"""A minimal SIP user agent over UDP for the media tests: one caller and one callee, a call
with SDP through the edge (INVITE, 200, ACK, BYE, record-routed), so a test can point the
SDP at its own RTP peers (rtp_peer.py) and read the SDP rtpengine wrote.  It knows just
enough RFC 3261 for that: a request is resent every 0.5 s until a final answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator

from shared.sip import Request, Response, make_response, parse_message

_ids = itertools.count(1)


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, ua: SipUA) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ua._on_datagram(data, addr)


class SipUA:
    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.requests: asyncio.Queue[tuple[Request, tuple[str, int]]] = asyncio.Queue()
        # by (Via branch, CSeq method): a CANCEL shares its INVITE's branch
        self._waiting: dict[tuple[str, str], asyncio.Queue[Response]] = {}

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self), local_addr=(self.host, 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse_message(data)
        except Exception:
            return
        if isinstance(msg, Response):
            queue = self._waiting.get((msg.top_via.branch or "", msg.cseq.method))
            if queue is not None:
                queue.put_nowait(msg)
        else:
            self.requests.put_nowait((msg, addr))

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, dest)

    def request(self, method: str, uri: str, *, call_id: str, from_tag: str, to: str,
                cseq: int, routes: list[str] = (), body: bytes = b"",  # type: ignore[assignment]
                to_tag: str | None = None) -> Request:
        branch = f"z9hG4bK{self.name}{os.getpid()}x{next(_ids)}"
        headers = [("Via", f"SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport")]
        headers += [("Route", r) for r in routes]
        headers += [
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.name}@{self.host}:{self.port}>;tag={from_tag}"),
            ("To", f"<{to}>" + (f";tag={to_tag}" if to_tag else "")),
            ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{self.name}@{self.host}:{self.port}>"),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return Request(method, uri, headers, body)

    async def transact(self, req: Request, dest: tuple[str, int], timeout: float = 10.0
                       ) -> Response:
        """Send `req` (resent every 0.5 s) and return its final response."""
        branch = (req.top_via.branch or "", req.method)
        queue: asyncio.Queue[Response] = asyncio.Queue()
        self._waiting[branch] = queue
        data = req.serialize()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if req.method != "ACK":
                        self.send(data, dest)
                    try:
                        resp = await asyncio.wait_for(queue.get(), 0.5)
                    except TimeoutError:
                        continue
                    if resp.status >= 200:
                        return resp
                    while True:  # provisional: wait for the final one, no resending
                        resp = await queue.get()
                        if resp.status >= 200:
                            return resp
        finally:
            self._waiting.pop(branch, None)

    def answer(self, req: Request, addr: tuple[str, int], status: int, *,
               to_tag: str | None = None, body: bytes = b"") -> None:
        headers = [("Contact", f"<sip:{self.name}@{self.host}:{self.port}>")]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        resp = make_response(req, status, to_tag=to_tag, headers=headers)
        if status < 300:
            for rr in req.get_all("Record-Route"):
                resp.add_header("Record-Route", rr, first=False)
        resp.body = body
        self.send(resp.serialize(), addr)


async def next_request(ua: SipUA, method: str, timeout: float = 10.0
                       ) -> tuple[Request, tuple[str, int]]:
    """The next request of `method` the UA receives (others are ignored: retransmissions)."""
    async with asyncio.timeout(timeout):
        while True:
            req, addr = await ua.requests.get()
            if req.method == method:
                return req, addr


@contextlib.asynccontextmanager
async def two_uas() -> AsyncIterator[tuple[SipUA, SipUA]]:
    caller, callee = SipUA("alice"), SipUA("bob")
    await caller.open()
    await callee.open()
    try:
        yield caller, callee
    finally:
        caller.close()
        callee.close()
