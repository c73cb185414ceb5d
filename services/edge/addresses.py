"""Where messages come from and go to: interfaces, sources and destinations.

These are plain frozen values shared by the sans-IO proxy core and the transports.  The core
never opens anything; it names a `Destination` and the transport adapter finds (or opens)
the socket or connection for it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Interface:
    """One listening socket of the edge.

    `via_port` is the port written in our Via sent-by: with several worker processes on one
    SO_REUSEPORT socket each worker sends its requests from a private UDP port so the
    responses come back to the worker that holds the transaction.
    """

    transport: str  # "udp" or "tcp" (lower case)
    host: str
    port: int
    via_port: int = 0
    # Marked `;anycast` in [edge].listen: several edge nodes own this address, so replies,
    # CANCELs and ACKs may arrive at a node that is not the transaction's (anycast.py).
    anycast: bool = False
    # A wildcard listener (0.0.0.0, ::) is written in Via and Record-Route as `advertise`
    # (``[edge] advertise``, else the local address of the default route), and every
    # address of the host (`aliases`, loopback included) counts as this proxy.
    advertise: str = ""
    aliases: tuple[str, ...] = ()

    def __hash__(self) -> int:
        # Written out, the value dataclass would generate: its generated __hash__ stays
        # interpreted Python even in the compiled core, and the worker hashes an interface
        # for every datagram it sends (its socket, looked up by interface).
        return hash((self.transport, self.host, self.port, self.via_port, self.anycast,
                     self.advertise, self.aliases))

    @property
    def wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::")

    @property
    def sent_by_port(self) -> int:
        return self.via_port or self.port

    @property
    def host_in_uri(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def advertised_in_uri(self) -> str:
        """The host written in our Via sent-by and Record-Route (never 0.0.0.0)."""
        host = self.advertise or self.host
        return f"[{host}]" if ":" in host else host

    def record_route(self, signature: str) -> str:
        """Our Record-Route value for this interface (§16.6 step 4, loose routing), with
        the dialog's signature (services/edge/rr_signing.py)."""
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{self.advertised_in_uri}:{self.port}{tp};lr;sg={signature}>"


@dataclass(slots=True, init=False, unsafe_hash=True)
class Source:
    """Where a message was received: our interface, the peer address, the TCP connection."""

    interface: Interface
    host: str
    port: int
    conn: int | None = None

    def __init__(self, interface: Interface, host: str, port: int,
                 conn: int | None = None) -> None:
        # Written out and not frozen (compared and hashed as before; nothing mutates it):
        # a frozen dataclass's generated __init__ is interpreted Python setting each field
        # with object.__setattr__, even in the compiled core, and one is built per datagram.
        self.interface = interface
        self.host = host
        self.port = port
        self.conn = conn

    @property
    def reliable(self) -> bool:
        return self.interface.transport != "udp"


@dataclass(slots=True, init=False, unsafe_hash=True)
class Destination:
    """Where to send: transport, peer host (an IP, or a name the adapter resolves) and port.

    `conn` names an existing connection to reuse (responses on the connection the request
    came in on, §18.2.2); when it is gone the adapter connects to host:port.  `interface` is
    the local socket to send from.
    """

    transport: str
    host: str
    port: int
    interface: Interface | None = None
    conn: int | None = field(default=None, compare=False)

    def __init__(self, transport: str, host: str, port: int,
                 interface: Interface | None = None, conn: int | None = None) -> None:
        # Written out and not frozen (compared and hashed as before; nothing mutates it):
        # a frozen dataclass's generated __init__ is interpreted Python setting each field
        # with object.__setattr__, even in the compiled core, and a proxied call builds five.
        self.transport = transport
        self.host = host
        self.port = port
        self.interface = interface
        self.conn = conn

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


def is_broadcast(host: str) -> bool:
    """True for an address no response may be sent to: broadcast, multicast, unspecified."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if addr.version == 4 and str(addr) == "255.255.255.255":
        return True
    return addr.is_multicast or addr.is_unspecified


_FAMILY: dict[str, int] = {}  # host -> 4, 6 or 0 (a name), remembered: asked per branch


def address_family(host: str) -> int:
    """4 or 6 for a numeric address (brackets allowed), 0 for a name to resolve."""
    family = _FAMILY.get(host)
    if family is None:
        text = host.strip("[]")
        try:
            family = ipaddress.ip_address(text).version
        except ValueError:
            family = 0
            if ":::" in text:  # RFC 5118 §4.10's extra colon: an IPv6 reference still
                family = 6
        if len(_FAMILY) > 65536:
            _FAMILY.clear()  # bounded: many peers cannot grow it without limit
        _FAMILY[host] = family
    return family


def sendable(host: str, port: int, interface: Interface) -> bool:
    """Whether a socket of `interface` can send to host:port at all.

    Port 0 never can, nor a numeric address of the other family (an IPv6 Request-URI on an
    IPv4 socket): uvloop raises for those, asyncio reports them later.  Names are resolved
    by the adapter, which reports a failure itself."""
    if not 0 < port < 65536:
        return False
    family = _FAMILY.get(host)
    if family is None:
        family = address_family(host)
    return family == 0 or family == address_family(interface.host)

