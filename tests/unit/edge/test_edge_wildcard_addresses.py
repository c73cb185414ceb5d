"""A wildcard interface's advertised address and aliases (services/edge/addresses.py)."""

from __future__ import annotations

from services.edge.addresses import Interface
from services.edge.local_addresses import local_addresses, route_address


def test_a_wildcard_interface_writes_its_advertised_address() -> None:
    itf = Interface("udp", "0.0.0.0", 5060, advertise="192.0.2.7", aliases=("127.0.0.1",))
    assert itf.wildcard
    assert itf.advertised_in_uri == "192.0.2.7"
    assert itf.record_route("x") == "<sip:192.0.2.7:5060;lr;sg=x>"
    assert Interface("udp", "::", 5060, advertise="2001:db8::1").advertised_in_uri == \
        "[2001:db8::1]"
    plain = Interface("tcp", "127.0.0.1", 5070)
    assert not plain.wildcard and plain.advertised_in_uri == "127.0.0.1"


def test_local_addresses_include_loopback_and_the_route_address() -> None:
    found = local_addresses()
    assert "127.0.0.1" in found and route_address() in found
    assert not any(a.startswith("0.") for a in found)
