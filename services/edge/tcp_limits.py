"""Bounds on the edge's TCP connections, as sans-IO policy (no sockets, `now` passed in).

A stream transport hands every peer a buffer and a file descriptor; without bounds a few
hundred idle or half-sent connections cost hundreds of megabytes, and at the file-descriptor
limit legitimate clients get no answer at all.  The rules, each with its `[edge]` key:

* **caps** (`tcp_max_connections`, `tcp_max_per_ip`): an accepted connection beyond either
  cap is closed at once, before any buffer exists.  The global cap is also kept below the
  process's file-descriptor limit (`effective_cap`), so the edge never runs out of
  descriptors for UDP, gRPC and its own outbound connections.
* **message completion** (`tcp_header_timeout`): a message must arrive whole within this
  many seconds of its first byte, and a new inbound connection must bring its first
  message within the same time (slow-loris senders, connect-and-wait).
* **idle** (`tcp_idle_timeout`): a connection with nothing received for this long is
  closed.  The default outlives a default registration (3600 s), so a phone registered over
  TCP stays reachable on its connection; phones that refresh more often, or send RFC 5626
  CRLF keep-alives, keep it open indefinitely.
* **size** (`tcp_max_header`, `tcp_max_body`): the most a connection may buffer for one
  message; beyond it the stream is answered 513/413 and closed (`shared.sip.framing`).

`ConnectionBudget` counts connections per peer address; `deadline_reason` says whether a
connection's time is up.  The asyncio side (`transports.py`) asks both.
"""

from __future__ import annotations

from dataclasses import dataclass

# Descriptors kept back from the TCP cap for UDP sockets, the HTTP/MI server, gRPC
# channels to the registrar, log files and outbound connections.
FD_RESERVE = 64


@dataclass(frozen=True, slots=True)
class TcpLimits:
    idle_timeout: float = 3900.0
    header_timeout: float = 10.0
    max_connections: int = 2048
    max_per_ip: int = 64
    max_header: int = 32768
    max_body: int = 65536

    def effective_cap(self, fd_limit: int | None) -> int:
        """The global cap, lowered to fit the process's descriptor limit when it is low."""
        if fd_limit is None or fd_limit <= 0:
            return self.max_connections
        return max(1, min(self.max_connections, fd_limit - FD_RESERVE))


class ConnectionBudget:
    """Open connections: all of them against the global cap, inbound ones per peer address."""

    __slots__ = ("_by_ip", "cap", "per_ip", "total")

    def __init__(self, cap: int, per_ip: int) -> None:
        self.cap = cap
        self.per_ip = per_ip
        self.total = 0
        self._by_ip: dict[str, int] = {}

    def admit(self, ip: str | None) -> str | None:
        """Take a slot for a new connection (`ip` None: one we open ourselves).

        Returns None when admitted, else why not ("global" or "per_ip")."""
        if self.total >= self.cap:
            return "global"
        if ip is not None:
            held = self._by_ip.get(ip, 0)
            if held >= self.per_ip:
                return "per_ip"
            self._by_ip[ip] = held + 1
        self.total += 1
        return None

    def release(self, ip: str | None) -> None:
        self.total = max(0, self.total - 1)
        if ip is None:
            return
        held = self._by_ip.get(ip, 0) - 1
        if held > 0:
            self._by_ip[ip] = held
        else:
            self._by_ip.pop(ip, None)

    def held_by(self, ip: str) -> int:
        return self._by_ip.get(ip, 0)


def deadline_reason(limits: TcpLimits, now: float, *, last_activity: float,
                    partial_since: float | None, awaiting_first: bool) -> str | None:
    """Why a connection must be closed now ("header_timeout", "idle_timeout"), or None.

    `partial_since`: when the first byte of the message still incomplete arrived (None when
    nothing is buffered); `awaiting_first`: an inbound connection that has not yet brought a
    complete message (its accept time is then `last_activity`)."""
    if partial_since is not None and now - partial_since >= limits.header_timeout:
        return "header_timeout"
    if awaiting_first and now - last_activity >= limits.header_timeout:
        return "header_timeout"
    if now - last_activity >= limits.idle_timeout:
        return "idle_timeout"
    return None
