"""A send the socket refuses inside the shared timer tick fails its own branch only.

The real `EdgeApp` on uvloop, real UDP sockets: two INVITEs are forwarded to two silent
"UAS" sockets, so both client transactions retransmit on Timer A in the same ticks.  From
its second copy on, every send to the second UAS raises what uvloop raises for an address
its socket cannot reach (ValueError: family mismatch).  The first branch must keep
retransmitting and end normally; the second fails at once (503, sent upstream as 500 by
RFC 3261 §16.7 step 6), and nothing escapes into the loop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, cast

import uvloop

from services.edge.app import EdgeApp
from services.edge.config import EdgeConfig


def _invite(uri: str, port: int, n: str) -> bytes:
    return (f"INVITE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-tick{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=t{n}\r\nTo: <{uri}>\r\n"
            f"Call-ID: tick-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{port}>\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def _recv_all(sock: socket.socket, seconds: float) -> list[bytes]:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(left):
                got.append(await loop.sock_recv(sock, 65535))
        except TimeoutError:
            break
    return got


async def _scenario() -> tuple[list[bytes], list[bytes], list[Any]]:
    loop = asyncio.get_running_loop()
    errors: list[Any] = []
    config = EdgeConfig(listen=("udp:127.0.0.1:0",), t1=0.05, timer_c=2.0, rr_secret="k" * 32)
    app = EdgeApp(config)
    await app.start()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))  # after the app's
    good, bad, caller = _udp(), _udp(), _udp()
    bad_port = bad.getsockname()[1]
    seen = {"bad": 0}

    class Refusing:
        """The endpoint's uvloop transport, refusing sends to the bad UAS as uvloop's own
        `sendto` refuses an address of the other family (the app sends through it
        directly, not through a Python method that could be patched instead)."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
            if addr[1] == bad_port:
                seen["bad"] += 1
                if seen["bad"] > 1:  # the first copy goes; retransmissions are refused
                    raise ValueError(f"{addr}: socket family mismatch or a DNS lookup "
                                     "is required")
            self.real.sendto(data, addr)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    for endpoint in app.udp.values():
        endpoint.transport = cast(asyncio.DatagramTransport, Refusing(endpoint.transport))
    try:
        edge = ("127.0.0.1", app.interfaces[0].port)
        me = caller.getsockname()[1]
        caller.sendto(_invite(f"sip:g@127.0.0.1:{good.getsockname()[1]}", me, "good"), edge)
        caller.sendto(_invite(f"sip:b@127.0.0.1:{bad_port}", me, "bad"), edge)
        good_copies, _bad_copies, answers = await asyncio.gather(
            _recv_all(good, 1.0), _recv_all(bad, 1.0), _recv_all(caller, 3.0))
    finally:
        await app.stop(drain=0)
        for s in (good, bad, caller):
            s.close()
    return good_copies, answers, errors


def test_a_refused_retransmission_fails_only_its_branch() -> None:
    good_copies, answers, errors = uvloop.run(_scenario())
    # Timer A from 50 ms: 1 + about 4 retransmissions within the first second.
    assert sum(c.startswith(b"INVITE ") for c in good_copies) >= 4
    finals = {a.split(b"Call-ID: ")[1].split(b"\r\n")[0]: a.split(b" ")[1]
              for a in answers if not a.startswith(b"SIP/2.0 100 ")}
    assert finals.get(b"tick-bad") == b"500"  # its transport error (503), §16.7 step 6
    assert finals.get(b"tick-good") == b"408"  # Timer C: it ran its course
    assert errors == []
