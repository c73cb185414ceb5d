"""Which messages per-call tracing captures (OpenSIPS ``tracer``'s ``trace()`` scopes and
``trace_start`` filters), sans-IO: no sockets, ``now`` passed in.

A traced call is keyed by its Call-ID (RFC 3261 §8.1.1.4: every request and response of
one dialog carries it, in both directions) and traced in one scope:

* ``d`` (dialog, the default): every message of the call -- the initial request, its
  provisional and final responses, the ACK, in-dialog requests (re-INVITE, BYE, ...) and
  their responses, both ways -- until 32 s (64*T1, RFC 3261 §17.1.1.2: retransmissions)
  after the BYE's final response or a failed INVITE's final response;
* ``t`` (transaction): the messages with the traced request's CSeq number (RFC 3261
  §17.1.3/§17.2.3: its responses, retransmissions, the CANCEL and the ACK of a non-2xx);
* ``m`` (message): the traced request only (as received and as relayed).

A call no message ended is forgotten after `HOLD` s; at most `LIMIT` calls are held
(the oldest forgotten first).

A filter (``trace_start``) is ``caller=X`` (the From URI), ``callee=X`` (the
Request-URI or the To URI) or ``ip=X`` (the source address, an address or subnet); X
matches a URI written in full (``sip:alice@example.com``), as ``user@host`` or as the user
part, case-insensitively. Every filter of a trace id must match (an id without filters
matches every call). Filters are tried on initial requests only (no To tag): a call is
traced from its start.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.sip import Request, SipParseError, Uri, parse_message

SCOPES = ("d", "t", "m")
LINGER = 32.0
HOLD = 4 * 3600.0
LIMIT = 100_000
FILTER_KEYS = ("caller", "callee", "ip")


@dataclass
class Traced:
    ids: set[str]
    scope: str
    cseq: int
    method: str
    expires: float


@dataclass(frozen=True)
class Filter:
    key: str  # caller, callee, ip
    value: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def parse_filter(text: str) -> Filter:
    key, sep, value = text.partition("=")
    key, value = key.strip().lower(), value.strip()
    if not sep or key not in FILTER_KEYS or not value:
        raise ValueError(f"a filter is caller=X, callee=X or ip=X, not {text!r}")
    if key == "ip":
        try:
            return Filter(key, value, ipaddress.ip_network(value.strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"ip filter {value!r} is no address or subnet") from None
    return Filter(key, value.lower())


def _uri_matches(value: str, uri: Uri) -> bool:
    user = (uri.user or "").lower()
    host = uri.host.lower().strip("[]")
    forms = {f"{uri.scheme}:{user}@{host}" if user else f"{uri.scheme}:{host}",
             f"{user}@{host}" if user else host}
    if user:
        forms.add(user)
    return value in forms


def _header_uri(text: str | None) -> Uri | None:
    if not text:
        return None
    from shared.sip import parse_name_addr

    try:
        return parse_name_addr(text).uri
    except SipParseError:
        return None


@dataclass
class FilterSet:
    filters: tuple[Filter, ...] = ()

    def matches(self, request: Request, source_ip: str) -> bool:
        for f in self.filters:
            if f.key == "ip":
                try:
                    ip = ipaddress.ip_address(source_ip.strip("[]"))
                except ValueError:
                    return False
                if f.network is None or ip not in f.network:
                    return False
            elif f.key == "caller":
                uri = _header_uri(request.get("from"))
                if uri is None or not _uri_matches(f.value, uri):
                    return False
            else:
                candidates = [_header_uri(request.get("to"))]
                try:
                    candidates.append(request.parsed_uri)
                except SipParseError:
                    pass
                if not any(u is not None and _uri_matches(f.value, u) for u in candidates):
                    return False
        return True


# Header lookups on the raw header block (RFC 3261 §7.3.3 compact forms included): one
# C-level regex search each, as every message of a worker passes here while tracing is on.
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r\n", re.I)
_CSEQ = re.compile(rb"\r\ncseq[ \t]*:[ \t]*(\d{1,10})[ \t]+([!-~]+)", re.I)
_TO_TAG = re.compile(rb"\r\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.I)


def _end(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    return len(data) if end < 0 else end + 2


def call_id(data: bytes) -> str:
    """The Call-ID of a raw message ('' when it has none)."""
    found = _CALL_ID.search(data, 0, _end(data) + 2)
    return found.group(1).decode("utf-8", "replace") if found else ""


def has_to_tag(data: bytes) -> bool:
    return _TO_TAG.search(data, 0, _end(data)) is not None


def _head(data: bytes) -> tuple[int, str, int]:
    """(status or 0 for a request, CSeq method, CSeq number) from the raw header block."""
    status = 0
    if data.startswith(b"SIP/"):
        parts = data[:20].split(b" ", 2)
        if len(parts) > 1 and parts[1][:3].isdigit():
            status = int(parts[1][:3])
    found = _CSEQ.search(data, 0, _end(data))
    if found is None:
        return status, "", -1
    return status, found.group(2).decode("ascii"), int(found.group(1))


def _request_method(data: bytes) -> str:
    return data.split(b" ", 1)[0].decode("ascii", "replace")


@dataclass
class TraceTable:
    """Traced calls by Call-ID; `targets` answers which trace ids a message goes to."""

    linger: float = LINGER
    hold: float = HOLD
    limit: int = LIMIT
    calls: dict[str, Traced] = field(default_factory=dict)

    def add(self, call_id: str, trace_id: str, scope: str, cseq: int, method: str,
            now: float) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        entry = self.calls.get(call_id)
        if entry is None:
            while len(self.calls) >= self.limit:
                self.calls.pop(next(iter(self.calls)))
            self.calls[call_id] = Traced({trace_id}, scope, cseq, method, now + self.hold)
            return
        entry.ids.add(trace_id)
        # the widest scope asked wins (a dialog traced also by transaction stays a dialog)
        if SCOPES.index(scope) < SCOPES.index(entry.scope):
            entry.scope = scope

    def targets(self, call_id: str, data: bytes, now: float) -> set[str]:
        entry = self.calls.get(call_id)
        if entry is None:
            return set()
        if now >= entry.expires:
            del self.calls[call_id]
            return set()
        status, method, number = _head(data)
        if entry.scope == "m":
            if status or number != entry.cseq or _request_method(data) != entry.method:
                return set()
        elif entry.scope == "t" and number != entry.cseq:
            return set()
        if status >= 200:
            ends = (method == "BYE" if entry.scope == "d" else number == entry.cseq) or (
                method == entry.method and number == entry.cseq and status >= 300)
            if ends:
                entry.expires = min(entry.expires, now + self.linger)
        return entry.ids

    def drop_id(self, trace_id: str) -> None:
        for call_id in [c for c, e in self.calls.items() if trace_id in e.ids]:
            entry = self.calls[call_id]
            entry.ids.discard(trace_id)
            if not entry.ids:
                del self.calls[call_id]

    def expire(self, now: float) -> None:
        for call_id in [c for c, e in self.calls.items() if now >= e.expires]:
            del self.calls[call_id]


def initial_request(data: bytes) -> Request | None:
    """The parsed request when `data` is a request outside any dialog (no To tag)."""
    if data.startswith(b"SIP/") or has_to_tag(data):
        return None  # cheap refusals first: most messages are responses or in a dialog
    try:
        message = parse_message(data)
    except SipParseError:
        return None
    if not isinstance(message, Request) or message.to_tag:
        return None
    return message


def filters_of(texts: Iterable[str]) -> FilterSet:
    return FilterSet(tuple(parse_filter(t) for t in texts))
