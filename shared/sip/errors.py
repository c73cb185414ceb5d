"""Errors of the SIP message core.

A defect in a message is reported as one exception type, `SipParseError`, that carries the
answer RFC 3261 prescribes as data: the status code and reason phrase a server sends back
(400, 505, ...) or `status=None` when the message must be dropped silently (a response can
never be answered, RFC 3261 §16.7/§18.1.2). `stream_fatal` tells a stream transport that the
connection can no longer be framed (RFC 3261 §18.3) and must be closed.
"""

from __future__ import annotations


class SipParseError(Exception):
    """A message (or stream) the parser cannot accept, with the RFC's answer attached."""

    status: int | None
    reason: str
    detail: str
    stream_fatal: bool

    def __init__(
        self,
        status: int | None,
        detail: str,
        reason: str | None = None,
        *,
        stream_fatal: bool = False,
    ) -> None:
        self.status = status
        if reason is None:
            # Imported here because the status table imports nothing but is optional weight
            # on the error path only.
            from shared.sip.status import reason_phrase

            reason = reason_phrase(status) if status is not None else ""
        self.reason = reason
        self.detail = detail
        self.stream_fatal = stream_fatal
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.status is None:
            return f"drop: {self.detail}"
        return f"{self.status} {self.reason}: {self.detail}"

    def __repr__(self) -> str:
        return (
            f"SipParseError(status={self.status!r}, reason={self.reason!r}, "
            f"detail={self.detail!r}, stream_fatal={self.stream_fatal!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.status, self.detail, self.reason, self.stream_fatal))


def _rebuild(status: int | None, detail: str, reason: str, fatal: bool) -> SipParseError:
    return SipParseError(status, detail, reason, stream_fatal=fatal)


def bad_request(detail: str, *, stream_fatal: bool = False) -> SipParseError:
    """400 Bad Request: the generic answer to a malformed request (RFC 3261 §21.4.1)."""
    return SipParseError(400, detail, "Bad Request", stream_fatal=stream_fatal)
