"""The addresses a wildcard (0.0.0.0, ::) listener of the edge stands for: the one it
advertises and every one it receives on. IO (sockets, ioctl, /proc), so apart from the
sans-IO `addresses.py`; the adapter (app.py) fills `Interface.advertise`/`aliases`."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct


def route_address(family_v6: bool = False) -> str:
    """The local address of the default route (a UDP connect sends nothing); loopback
    when there is no route."""
    probe, fallback = ("2001:db8::1", "::1") if family_v6 else ("192.0.2.1", "127.0.0.1")
    s = socket.socket(socket.AF_INET6 if family_v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((probe, 9))
        return str(s.getsockname()[0])
    except OSError:
        return fallback
    finally:
        s.close()


def local_addresses() -> tuple[str, ...]:
    """Every address of this host that a wildcard listener receives on (Linux: each
    interface's IPv4 address and /proc/net/if_inet6; elsewhere the host name's), with
    loopback."""
    found = {"127.0.0.1", "::1", route_address(False)}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _index, name in socket.if_nameindex():
                try:
                    req = struct.pack("256s", name.encode()[:15])
                    res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
                    found.add(socket.inet_ntoa(res[20:24]))
                except OSError:
                    continue
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                raw = line.split()[0]
                found.add(str(ipaddress.ip_address(int(raw, 16))))
    except (OSError, ValueError, IndexError):
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]))
    except OSError:
        pass
    # 0.0.0.0/8 is "this network", never an address to be reached at
    return tuple(sorted(a for a in found if not a.startswith("0.")))
