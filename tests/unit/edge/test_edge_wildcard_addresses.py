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


def test_interfaces_hash_and_compare_by_every_field() -> None:
    # The written-out __hash__ (compiled; the generated one was interpreted) keeps the
    # dataclass's contract: equal interfaces are one dictionary key, any field tells apart.
    a = Interface("udp", "127.0.0.1", 5060, via_port=5070, advertise="192.0.2.1",
                  aliases=("10.0.0.1",))
    same = Interface("udp", "127.0.0.1", 5060, via_port=5070, advertise="192.0.2.1",
                     aliases=("10.0.0.1",))
    assert a == same and hash(a) == hash(same) and {a: "socket"}[same] == "socket"
    others = [Interface("tcp", "127.0.0.1", 5060, 5070, False, "192.0.2.1", ("10.0.0.1",)),
              Interface("udp", "127.0.0.2", 5060, 5070, False, "192.0.2.1", ("10.0.0.1",)),
              Interface("udp", "127.0.0.1", 5061, 5070, False, "192.0.2.1", ("10.0.0.1",)),
              Interface("udp", "127.0.0.1", 5060, 5071, False, "192.0.2.1", ("10.0.0.1",)),
              Interface("udp", "127.0.0.1", 5060, 5070, True, "192.0.2.1", ("10.0.0.1",)),
              Interface("udp", "127.0.0.1", 5060, 5070, False, "192.0.2.2", ("10.0.0.1",)),
              Interface("udp", "127.0.0.1", 5060, 5070, False, "192.0.2.1", ())]
    table = {a: 0} | {o: i + 1 for i, o in enumerate(others)}
    assert len(table) == 8 and table[same] == 0
