"""The sans-IO side of the edge's Uac API (OpenSIPS t_uac_dlg): building a service's
request and following its client transaction.

`build_request(method, ruri, headers, route, body)` makes the SIP request a service asked
for (services/edge/uac.py turns the gRPC message into these arguments): the given headers
in order, Route values first hop first, and what RFC 3261 §8.1.1 requires when absent --
Max-Forwards 70, a Call-ID, a From tag, `CSeq: 1 <method>`, Content-Length. The proxy core
then adds its Via and runs the client transaction (`ProxyCore.uac_request`).

`UacOwner` owns that transaction: the first final response (or the transaction's failure:
408 on Timer B/F, 503 when the destination cannot be reached) goes to `on_final`, once.
For an INVITE it also sends the ACK of a 2xx (RFC 3261 §13.2.2.4: Request-URI = the 2xx's
Contact, Route = its Record-Route reversed, same CSeq number) unless the caller asked to
send it itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from shared.sip import Request, Response, SipParseError

if TYPE_CHECKING:
    from services.edge.core import Output, ProxyCore

FinalCallback = Callable[[int, str, Response | None], None]
_REQUIRED = ("max-forwards", "call-id", "from", "to", "cseq")


def _token() -> str:
    return os.urandom(8).hex()


def build_request(method: str, ruri: str, headers: Sequence[tuple[str, str]],
                  route: Sequence[str] = (), body: bytes = b"", *,
                  host: str = "sipmesh") -> Request:
    """The request a service asked for (see the module docstring); ValueError when it
    cannot be one (no method or URI, a header with CR/LF, no To)."""
    method = method.strip().upper()
    if not method or not method.isalpha() or not ruri.strip():
        raise ValueError("a request needs a method and a Request-URI")
    lines: list[tuple[str, str]] = []
    names: set[str] = set()
    for value in route:
        if not value.strip():
            continue
        lines.append(("Route", value if "<" in value else f"<{value.strip()}>"))
    for name, value in headers:
        if not name or any(c in name + value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"bad header {name!r}")
        lowered = name.strip().lower()
        if lowered in ("via", "content-length"):
            continue  # ours to write
        names.add({"i": "call-id", "f": "from", "t": "to"}.get(lowered, lowered))
        lines.append((name.strip(), value.strip()))
    if "to" not in names:
        raise ValueError("a request needs a To header")
    if "max-forwards" not in names:
        lines.insert(0, ("Max-Forwards", "70"))
    if "from" not in names:
        lines.append(("From", f"<sip:{host}>;tag={_token()}"))
    else:
        for i, (name, value) in enumerate(lines):
            if name.lower() in ("from", "f") and ";tag=" not in value.replace(" ", ""):
                lines[i] = (name, f"{value};tag={_token()}")  # §8.1.1.3
    if "call-id" not in names:
        lines.append(("Call-ID", f"{_token()}@{host}"))
    if "cseq" not in names:
        lines.append(("CSeq", f"1 {method}"))
    try:
        return Request(method, ruri.strip(), lines, body)
    except SipParseError as exc:  # a From/To/CSeq/Call-ID value that does not parse
        raise ValueError(str(exc)) from None


def build_ack(invite: Request, response: Response) -> tuple[Request, str | None]:
    """The ACK of a 2xx to `invite` (§13.2.2.4) and its next hop (None: its route/URI)."""
    contact = response.contacts[0].uri if response.contacts else invite.parsed_uri
    lines: list[tuple[str, str]] = [("Route", r) for r in reversed(
        response.get_all("Record-Route"))]
    lines += [("Max-Forwards", "70"), ("From", invite.get("From") or ""),
              ("To", response.get("To") or ""), ("Call-ID", invite.call_id),
              ("CSeq", f"{invite.cseq.number} ACK"), ("Content-Length", "0")]
    return Request("ACK", str(contact), lines), None


class UacOwner:
    """The owner of one Uac API client transaction (see the module docstring)."""

    __slots__ = ("auto_ack", "core", "done", "on_final", "request")

    def __init__(self, request: Request, on_final: FinalCallback, core: ProxyCore,
                 *, auto_ack: bool = True) -> None:
        self.request = request
        self.on_final = on_final
        self.core = core
        self.auto_ack = auto_ack
        self.done = False

    def on_response(self, response: Response, now: float) -> list[Output]:
        if response.status < 200 or self.done:
            return []
        self.done = True
        self.on_final(response.status, response.reason, response)
        if self.request.method == "INVITE" and response.status < 300 and self.auto_ack:
            from services.edge.routing import Target

            ack, hop = build_ack(self.request, response)
            return self.core.uac_request(ack, Target(ack.uri, hop), None, now)
        return []

    def on_failure(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        self.on_final(status, "Request Timeout" if status == 408 else "Service Unavailable",
                      None)


__all__ = ["UacOwner", "build_ack", "build_request"]
