"""Keep-alives on a datagram transport (RFC 5626 §3.5.1, §4.4.1).

Phones behind NATs send something small every 20-30 s to keep their UDP binding open:
RFC 5626 asks for STUN, but most (linphone, many desk phones) send a bare CRLF, a double
CRLF, or an empty datagram.  None of these is a SIP message, malformed or otherwise: the
edge counts them (`core:rcv_keepalives`) and sends nothing back, as a CRLF pong is a
stream-transport feature (§3.5.1).  On TCP the stream framer tells keep-alives apart
(`shared.sip.framing`).
"""

from __future__ import annotations

_KEEPALIVES = frozenset({b"", b"\r\n", b"\r\n\r\n", b"\n", b"\r", b"\n\n"})


def is_keepalive(datagram: bytes) -> bool:
    """True for an empty datagram or one of CR/LF only (a NAT keep-alive, not SIP)."""
    return datagram in _KEEPALIVES
