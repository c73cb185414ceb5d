"""Framing SIP messages on a stream transport (RFC 3261 §18.3, RFC 5626 §3.5.1).

A stream carries messages back to back; each one is the header block up to the first empty
line plus exactly Content-Length body bytes (mandatory on streams, RFC 3261 §18.3). Between
messages a peer may send keep-alives (RFC 5626 §3.5.1): a double CRLF "ping", which must be
answered with a single CRLF "pong", and a single CRLF "pong" itself. `StreamFramer.feed`
takes whatever bytes arrived and returns the complete messages (raw bytes, to be given to
`parse_message`) and `KeepAlive` events in order, keeping incomplete data for the next feed.

When the stream can no longer be framed (no/invalid/conflicting Content-Length, a header
block or body larger than the limits) `feed` raises `SipParseError(stream_fatal=True)`: the
connection must be closed (after sending the answer if it is a request): 400 for a broken
Content-Length, 413 Request Entity Too Large for a body over `max_body` (RFC 3261 §21.4.11),
513 Message Too Large for a header block over `max_header` (§21.5.7).

The search for the end of the header block resumes where the previous feed stopped, so a
peer sending one byte at a time costs linear work, not a rescan of the whole buffer per byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.sip.errors import SipParseError, bad_request

_PING = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A keep-alive seen between messages: `ping` (CRLFCRLF, answer with CRLF) or a pong."""

    ping: bool

    @property
    def needs_pong(self) -> bool:
        """True when the peer expects a single CRLF back (RFC 5626 §3.5.1)."""
        return self.ping


class StreamFramer:
    """Cuts a byte stream into messages; one instance per connection."""

    __slots__ = ("_buf", "_need", "_scanned", "max_body", "max_header")

    def __init__(self, *, max_header: int = 65536, max_body: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes of `_buf` known to hold no CRLFCRLF ending a header block
        self._need = 0  # length of the message being received, once its header block is in
        self.max_header = max_header
        self.max_body = max_body

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        """Add received bytes; return every complete message and keep-alive, in order."""
        buf = self._buf
        buf += data
        out: list[bytes | KeepAlive] = []
        while buf:
            if self._need:  # header block already read: waiting for the body only
                if len(buf) < self._need:
                    break
                total, self._need, self._scanned = self._need, 0, 0
                out.append(bytes(buf[:total]))
                del buf[:total]
                continue
            if buf[0] == 13:  # CR: a keep-alive, or the CRLF before a message
                if buf.startswith(_PING):
                    del buf[:4]
                    out.append(KeepAlive(ping=True))
                    continue
                if len(buf) < 4 and _PING.startswith(bytes(buf)):
                    break  # could still become a ping
                if buf.startswith(b"\r\n"):
                    del buf[:2]
                    out.append(KeepAlive(ping=False))
                    continue
            # Resume the search 3 bytes before where the last one ended: the CRLFCRLF may
            # straddle the two reads.
            end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_header:
                    raise SipParseError(513, f"header block over {self.max_header} bytes on "
                                        "stream", stream_fatal=True)
                break
            if end > self.max_header:
                raise SipParseError(513, f"header block over {self.max_header} bytes on stream",
                                    stream_fatal=True)
            length = _content_length(bytes(buf[:end]))
            if length > self.max_body:
                raise SipParseError(
                    413, f"Content-Length {length} over the limit of {self.max_body}",
                    stream_fatal=True,
                )
            total = end + 4 + length
            if len(buf) < total:
                self._need = total  # the header block is not parsed again for each read
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
            self._scanned = 0
        return out

    def head(self, limit: int = 8192) -> bytes:
        """The first bytes buffered (to answer a message the stream could not frame)."""
        return bytes(self._buf[:limit])

    @property
    def partial(self) -> bool:
        """True while part of a message (not only keep-alive bytes) waits for the rest."""
        buf = self._buf
        return bool(buf) and not (len(buf) < 4 and _PING.startswith(bytes(buf)))


def _content_length(head: bytes) -> int:
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon or line[:1] in (b" ", b"\t"):
            continue
        name = name.strip(b" \t").lower()
        if name != b"content-length" and name != b"l":
            continue
        value = value.strip(b" \t")
        if not value.isdigit():
            if value[:1] == b"-":
                raise bad_request("negative Content-Length on stream", stream_fatal=True)
            raise bad_request("invalid Content-Length on stream", stream_fatal=True)
        digits = value.lstrip(b"0") or b"0"
        if len(digits) > 10:
            raise bad_request("Content-Length out of range on stream", stream_fatal=True)
        number = int(digits)
        if found is not None and found != number:
            raise bad_request("conflicting Content-Length values on stream", stream_fatal=True)
        found = number
    if found is None:
        # RFC 3261 §18.3: Content-Length MUST be used on streams; without it the end of the
        # message cannot be known.
        raise bad_request("missing Content-Length on stream", stream_fatal=True)
    return found
