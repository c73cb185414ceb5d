"""Address permissions (OpenSIPS ``permissions``: the ``address`` table), sans-IO.

`AddressPermissions` is one loaded copy of SipMesh's ``address`` table
(:mod:`shared.store.edge_tables`): exact hosts (mask 32, or 128 for IPv6) in a hash by
address, networks in a subnet list, as OpenSIPS keeps them. `check` answers
``check_address(grp, ip, port, proto[, pattern])`` with OpenSIPS 2.4's rules (module
``permissions``, ``hash.c`` ``pm_hash_match``; ``check_source_address(grp)`` is the same
with the request's source):

* group: ``grp`` 0 asks any group, and a row of group 0 answers any group; asking a group
  the table does not have matches nothing;
* port: a row's port 0 matches any port, and so does an asked port 0;
* proto: a row's ``any`` matches any transport, and so does an asked ``any``; ``none``
  never matches;
* pattern: when both the row and the call have one, the row's pattern must match the
  call's string -- shell wildcards (``fnmatch``), as the module's code does, although its
  documentation says "regular expression" (**doc≠code**); a row without a pattern, or a
  call without one, matches;
* exact hosts are tried before networks; the first match gives its ``context_info``.

Rows whose ``ip`` is not a numeric address are kept out (the edge resolves nothing here)
and listed in `skipped`, with the reason, for the adapter to log.

`dump` / `subnet_dump` are the MI answers (``address_dump``, ``subnet_dump``) in OpenSIPS
3's JSON shape: ``{"Partitions": [{"name": "default", "Destinations": [{grp, ip, mask,
port, proto, pattern, context_info}]}]}``, the mask ``"32"``/``"128"`` for a host and the
dotted netmask for an IPv4 network (the prefix length for an IPv6 one).
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.edge.routing import TrustedNetworks
from shared.store.edge_tables import PROTOS, Address

if TYPE_CHECKING:
    from collections.abc import Sequence

    from services.edge.addresses import Source

GROUP_ANY = 0
PORT_ANY = 0
PARTITION = "default"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressError(ValueError):
    """An address row or a check's arguments cannot be used."""


@dataclass(frozen=True, slots=True)
class Entry:
    row: Address
    network: IpNetwork
    version: int = 4
    bits: int = 0  # the network address as an integer
    netmask: int = 0  # its mask as an integer: a match is (address & netmask) == bits

    @property
    def is_host(self) -> bool:
        return self.network.prefixlen == self.network.max_prefixlen


def parse_address(grp: int, ip: str, *, port: int = 0, proto: str = "any",
                  pattern: str = "", context_info: str = "") -> Address:
    """A row from an operator's words: ``ip`` is an address or ``ADDRESS/PREFIX``."""
    proto = proto.lower()
    if proto not in PROTOS:
        raise AddressError(f"proto must be one of {', '.join(PROTOS)}, not {proto!r}")
    if grp < 0:
        raise AddressError("the group is a number >= 0")
    if not 0 <= port < 65536:
        raise AddressError(f"port out of range: {port}")
    try:
        net = ipaddress.ip_network(ip, strict=False)
    except ValueError as exc:
        raise AddressError(f"{ip!r} is not an IP address or network: {exc}") from None
    return Address(grp, str(net.network_address), net.prefixlen, port, proto, pattern,
                   context_info)


def _entry(row: Address) -> Entry:
    addr = ipaddress.ip_address(row.ip.strip("[]"))
    max_len = addr.max_prefixlen
    if not 0 <= row.mask <= max_len:
        raise AddressError(f"mask {row.mask} out of range for {row.ip}")
    if row.proto.lower() not in (*PROTOS, "none"):
        raise AddressError(f"unknown proto {row.proto!r}")
    net = ipaddress.ip_network(f"{addr}/{row.mask}", strict=False)
    return Entry(row, net, net.version, int(net.network_address), int(net.netmask))


class AddressPermissions:
    """One loaded copy of the address table (see the module docstring)."""

    def __init__(self, rows: Iterable[Address] = ()) -> None:
        self.hosts: dict[IpAddress, list[Entry]] = {}
        self.subnets: list[Entry] = []
        self.groups: set[int] = set()
        self.skipped: list[tuple[Address, str]] = []
        self.size = 0
        for row in rows:
            try:
                entry = _entry(row)
            except ValueError as exc:
                self.skipped.append((row, str(exc)))
                continue
            self.size += 1
            self.groups.add(row.grp)
            if entry.is_host:
                self.hosts.setdefault(entry.network.network_address, []).append(entry)
            else:
                self.subnets.append(entry)
        # OpenSIPS keeps its subnet table sorted by group; within a group the table's order.
        self.subnets.sort(key=lambda e: e.row.grp)

    def check(self, grp: int, ip: str, port: int = PORT_ANY, proto: str = "any",
              pattern: str | None = None) -> Address | None:
        """The first row matching (``check_address``), else None."""
        if grp != GROUP_ANY and grp not in self.groups and GROUP_ANY not in self.groups:
            return None  # "specified group does not exist": -2 in OpenSIPS, no match here
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        proto = proto.lower()
        for entry in self.hosts.get(addr, ()):
            if _matches(entry.row, grp, port, proto, pattern):
                return entry.row
        version, bits = addr.version, int(addr)
        for entry in self.subnets:  # integers: a scan of many sources stays cheap
            if entry.version == version and bits & entry.netmask == entry.bits \
                    and _matches(entry.row, grp, port, proto, pattern):
                return entry.row
        return None

    # -- MI answers ------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """``address_dump``: the exact hosts."""
        rows = [e for entries in self.hosts.values() for e in entries]
        return _partitions(sorted(rows, key=_order))

    def subnet_dump(self) -> dict[str, Any]:
        """``subnet_dump``: the networks."""
        return _partitions(self.subnets)


def _matches(row: Address, grp: int, port: int, proto: str, pattern: str | None) -> bool:
    if not (row.grp == GROUP_ANY or grp == GROUP_ANY or row.grp == grp):
        return False
    row_proto = row.proto.lower()
    if row_proto == "none":
        return False
    if not (row_proto == "any" or proto == "any" or row_proto == proto):
        return False
    if not (row.port == PORT_ANY or port == PORT_ANY or row.port == port):
        return False
    if not row.pattern or pattern is None:
        return True
    return fnmatch.fnmatchcase(pattern, row.pattern)


def _order(entry: Entry) -> tuple[int, int, int, str, int]:
    net = entry.network
    return (entry.row.grp, net.version, int(net.network_address), entry.row.proto,
            entry.row.port)


def _mask_text(entry: Entry) -> str:
    net = entry.network
    if entry.is_host:
        return str(net.max_prefixlen)
    if net.version == 4:
        return str(net.netmask)
    return str(net.prefixlen)


def _partitions(entries: Iterable[Entry]) -> dict[str, Any]:
    return {"Partitions": [{"name": PARTITION, "Destinations": [
        {"grp": e.row.grp, "ip": str(e.network.network_address), "mask": _mask_text(e),
         "port": e.row.port, "proto": e.row.proto, "pattern": e.row.pattern,
         "context_info": e.row.context_info}
        for e in entries]}]}


class SourceTrust(TrustedNetworks):
    """`ctx.trusted`: the source is in a network of `[edge] trusted`, or matches a row of
    the address table in group `group` (0: any group) -- `check_source_address(group)`.

    Answers are remembered per (address, port, transport) until the next `load` (an
    `address_reload`), bounded as TrustedNetworks' own memory."""

    def __init__(self, networks: Sequence[IpNetwork], table: AddressPermissions | None = None,
                 *, group: int = GROUP_ANY) -> None:
        super().__init__(networks)
        self.table = table or AddressPermissions()
        self.group = group
        self._by_source: dict[tuple[str, int, str], bool] = {}

    def load(self, table: AddressPermissions) -> None:
        """Replaces the loaded table (OpenSIPS swaps its hash tables on reload)."""
        self.table = table
        self._by_source = {}

    def trusts(self, source: Source) -> bool:
        # The remembered answer of `contains` first: no call for a known trusted address
        # (pike asks for every request).
        if self._known.get(source.host) or self.contains(source.host):
            return True
        key = (source.host, source.port, source.interface.transport)
        known = self._by_source.get(key)
        if known is None:
            known = self.table.check(self.group, source.host, source.port,
                                     source.interface.transport) is not None
            if len(self._by_source) > 65536:
                self._by_source.clear()  # bounded: a scan from many sources cannot grow it
            self._by_source[key] = known
        return known

    def check_address(self, grp: int, ip: str, port: int, proto: str,
                      pattern: str | None) -> str | None:
        row = self.table.check(grp, ip, port, proto, pattern)
        return None if row is None else row.context_info
