"""The Via header (RFC 3261 §20.42, §18.2.1, RFC 3581 rport, RFC 5118 IPv6).

    Via: SIP / 2.0 / UDP host[:port] *(;via-param)

Linear whitespace is allowed around the slashes and before the parameters (RFC 3261 §25.1
`SLASH`, `SEMI`; RFC 4475 §3.1.1.1 shows it), so the value is cut at the first two `/`, the
transport ends at whitespace, and sent-by ends at `;`. Unknown transports and parameters are
kept. `received` may hold an IPv6 address without brackets (RFC 5118 §4.5), so parameter
values are never split at `:`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.sip.errors import bad_request
from shared.sip.headers import parse_params
from shared.sip.uri import _GOOD_HOSTS, ipv6_address, valid_hostname


@dataclass(eq=False, slots=True, init=False)
class Via:
    """One Via value. Parameter names are lower-case; `None` marks a flag (`;rport`)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    def __init__(self, transport: str, host: str, port: int | None = None,
                 params: dict[str, str | None] | None = None,
                 protocol: str = "SIP/2.0") -> None:
        # Written out (init=False): a dataclass's generated __init__ is interpreted Python
        # even in the compiled core, and a proxied call builds about ten of these.
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.protocol = protocol

    @property
    def branch(self) -> str | None:
        """Transaction id (RFC 3261 §8.1.1.7); RFC 3261 ones start with `z9hG4bK`."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """Source address the previous hop was seen from (RFC 3261 §18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The `rport` value filled in by the server (RFC 3581); None when absent or empty."""
        value = self.params.get("rport")
        if value is None or not value.isdigit() or not value.isascii() or len(value) > 5:
            return None
        return int(value)

    @property
    def has_rport(self) -> bool:
        """True when `rport` is present, even as a bare flag asking for symmetric response."""
        return "rport" in self.params

    @property
    def maddr(self) -> str | None:
        """Multicast address parameter (RFC 3261 §18.2.2)."""
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        """Multicast TTL parameter (RFC 3261 §20.42)."""
        value = self.params.get("ttl")
        if value is None or not value.isdigit() or not value.isascii() or len(value) > 3:
            return None
        return int(value)

    @property
    def sent_by(self) -> str:
        """`host[:port]` as sent."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        out = [f"{self.protocol}/{self.transport} {self.sent_by}"]
        for key, value in self.params.items():
            out.append(f";{key}" if value is None else f";{key}={value}")
        return "".join(out)

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.transport.upper() == other.transport.upper()
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Via:
        """An independent copy."""
        return Via(self.transport, self.host, self.port, dict(self.params), self.protocol)


def parse_via(text: str) -> Via:
    """Parse one Via value (already split at top-level commas). Raises 400 on defects."""
    if "\x00" in text:
        # Only a quoted-pair could carry a NUL here (a quoted parameter value); a proxy
        # rewrites the top Via (received, rport), and no Via needs one: refused.
        raise bad_request("NUL in Via")
    # Fast path for the canonical spelling `SIP/2.0/T host[:port];a=b;c` (no LWS, no IPv6,
    # no quoted parameter values); everything else goes through the general parser.
    if text[:8] == "SIP/2.0/":
        sp = text.find(" ", 8)
        tail = text[sp + 1 :]
        if (
            sp > 8
            and " " not in tail
            and "\t" not in tail
            and '"' not in tail
            and "," not in tail
            and tail[:1] != "["
        ):
            sent_by, _, ptext = tail.partition(";")
            host, colon, port_text = sent_by.partition(":")
            good = _GOOD_HOSTS.get(host)  # inlined `valid_hostname`: a hot path
            if (good if good is not None else valid_hostname(host)) and (
                not colon or (port_text.isdigit() and port_text.isascii() and len(port_text) < 6)
            ):
                port = int(port_text) if colon else None
                if port is None or port <= 65535:
                    params: dict[str, str | None] = {}
                    if ptext:
                        for piece in ptext.split(";"):
                            name, eq, value = piece.partition("=")
                            params[name.lower()] = value if eq else None
                        params.pop("", None)
                    return Via(text[8:sp], host, port, params)
    return _parse_via_general(text)


def _parse_via_general(text: str) -> Via:
    name, s1, rest = text.partition("/")
    version, s2, rest = rest.partition("/")
    if not s1 or not s2:
        raise bad_request("malformed sent-protocol in Via")
    name = name.strip()
    version = version.strip()
    if not name or not version:
        raise bad_request("malformed sent-protocol in Via")
    rest = rest.lstrip()
    cut = 0
    n = len(rest)
    while cut < n and rest[cut] not in " \t;":
        cut += 1
    transport = rest[:cut]
    if not transport:
        raise bad_request("missing transport in Via")
    rest = rest[cut:].lstrip()
    sent_by, _, ptext = rest.partition(";")
    sent_by = sent_by.strip()
    if not sent_by:
        raise bad_request("missing sent-by in Via")
    if sent_by[0] == "[":
        close = sent_by.find("]")
        if close < 0:
            raise bad_request("unterminated IPv6 reference in Via")
        host = sent_by[: close + 1]
        if ipv6_address(host[1:-1]) is None:  # RFC 5118 §4.10's extra colon is tolerated
            raise bad_request(f"invalid IPv6 reference {host[:60]!r} in Via")
        after = sent_by[close + 1 :].strip()
        if after:
            if after[0] != ":":
                raise bad_request("garbage after IPv6 reference in Via")
            port = _port(after[1:].strip())
        else:
            port = None
    else:
        host, colon, ptxt = sent_by.partition(":")
        host = host.strip()
        if colon and ":" in ptxt:
            raise bad_request("IPv6 address without brackets in Via sent-by")
        port = _port(ptxt.strip()) if colon else None
        if not valid_hostname(host):
            raise bad_request(f"invalid host {host[:60]!r} in Via")
    params = parse_params(ptext, "Via") if ptext else {}
    return Via(transport, host, port, params, f"{name}/{version}")


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise bad_request(f"invalid port {text!r} in Via")
    return int(text)
