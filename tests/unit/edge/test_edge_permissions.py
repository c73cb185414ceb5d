"""Address permissions (services/edge/permissions.py): OpenSIPS 2.4's check_address rules
over a loaded address table, the MI dump shapes, and the proxy trusting a source the
table lists (in memory, through the sans-IO core)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import jsonschema
import pytest

from services.edge.addresses import Interface, Source
from services.edge.permissions import (
    AddressError,
    AddressPermissions,
    SourceTrust,
    parse_address,
)
from shared.store.edge_tables import Address
from tests.unit.edge.proxyharness import Harness, invite
from tests.unit.edge.test_edge_proxy_core import statuses

MI = Path(__file__).resolve().parents[3] / "contracts" / "mi"
ROWS = [
    Address(1, "192.0.2.7", 32, 5060, "udp", "", "pbx"),
    Address(1, "10.0.0.0", 8, 0, "any", "", "office"),
    Address(2, "10.1.0.0", 16, 0, "tcp", "sip:*@example.com", "partner"),
    Address(3, "2001:db8::", 32, 0, "any"),
    Address(4, "198.51.100.1", 32, 0, "none"),
]


def table() -> AddressPermissions:
    return AddressPermissions(ROWS)


def test_exact_host_matches_on_group_port_and_proto() -> None:
    t = table()
    assert t.check(1, "192.0.2.7", 5060, "udp") == ROWS[0]
    assert t.check(1, "192.0.2.7", 5061, "udp") is None  # the row's port is not 0
    assert t.check(1, "192.0.2.7", 5060, "tcp") is None  # nor its proto any
    # An asked port 0 / proto any matches whatever the row says (pm_hash_match).
    assert t.check(1, "192.0.2.7", 0, "any") == ROWS[0]
    assert t.check(2, "192.0.2.7", 5060, "udp") is None  # another group


def test_group_zero_asks_any_group_and_unknown_groups_match_nothing() -> None:
    t = table()
    assert t.check(0, "192.0.2.7", 5060, "udp") == ROWS[0]
    assert t.check(0, "10.9.9.9", 1234, "tcp") == ROWS[1]
    assert t.check(9, "10.9.9.9", 1234, "tcp") is None
    # A row of group 0 answers every group.
    anyone = AddressPermissions([Address(0, "203.0.113.5", 32)])
    assert anyone.check(7, "203.0.113.5", 5060, "udp") is not None


def test_networks_hosts_first_and_ipv6() -> None:
    t = AddressPermissions([Address(1, "10.0.0.0", 8, context_info="net"),
                            Address(1, "10.0.0.5", 32, context_info="host")])
    assert t.check(1, "10.0.0.5").context_info == "host"  # type: ignore[union-attr]
    assert t.check(1, "10.200.0.1").context_info == "net"  # type: ignore[union-attr]
    assert t.check(1, "11.0.0.1") is None
    assert table().check(3, "2001:db8:1::9", 5060, "tcp") == ROWS[3]
    assert table().check(3, "2001:db9::1") is None
    # An IPv4-mapped IPv6 source is its IPv4 address.
    assert table().check(1, "::ffff:10.1.2.3") == ROWS[1]


def test_pattern_is_a_wildcard_checked_only_when_both_sides_have_one() -> None:
    t = table()
    assert t.check(2, "10.1.2.3", 0, "tcp", "sip:bob@example.com") == ROWS[2]
    assert t.check(2, "10.1.2.3", 0, "tcp", "sip:bob@example.org") is None
    assert t.check(2, "10.1.2.3", 0, "tcp") == ROWS[2]  # no pattern asked: matches


def test_proto_none_never_matches_and_garbage_is_no_match() -> None:
    t = table()
    assert t.check(4, "198.51.100.1", 5060, "udp") is None
    assert t.check(1, "not an address") is None
    assert t.check(1, "") is None


def test_bad_rows_are_skipped_with_a_reason() -> None:
    t = AddressPermissions([Address(1, "gw.example.com", 32), Address(1, "10.0.0.1", 40),
                            Address(1, "10.0.0.2", 32, proto="carrier-pigeon"),
                            Address(1, "10.0.0.3", 32)])
    assert t.size == 1 and len(t.skipped) == 3
    assert "mask 40" in t.skipped[1][1]


def test_dumps_have_opensips_shape_and_match_their_schemas() -> None:
    t = table()
    hosts = t.dump()
    assert [d["ip"] for d in hosts["Partitions"][0]["Destinations"]] == [
        "192.0.2.7", "198.51.100.1"]
    first = hosts["Partitions"][0]["Destinations"][0]
    assert first == {"grp": 1, "ip": "192.0.2.7", "mask": "32", "port": 5060, "proto": "udp",
                     "pattern": "", "context_info": "pbx"}
    nets = t.subnet_dump()["Partitions"][0]["Destinations"]
    assert [(d["ip"], d["mask"]) for d in nets] == [
        ("10.0.0.0", "255.0.0.0"), ("10.1.0.0", "255.255.0.0"), ("2001:db8::", "32")]
    for name, answer in (("address_dump", hosts), ("subnet_dump", t.subnet_dump())):
        schema = json.loads((MI / f"{name}.json").read_text())
        jsonschema.validate(answer, schema["result"])


def test_parse_address_from_an_operators_words() -> None:
    assert parse_address(1, "10.1.2.3/8") == Address(1, "10.0.0.0", 8)
    assert parse_address(2, "192.0.2.7", port=5060, proto="UDP") == \
        Address(2, "192.0.2.7", 32, 5060, "udp")
    assert parse_address(1, "2001:db8::1").mask == 128
    for bad in ({"ip": "nope"}, {"ip": "10.0.0.1", "proto": "smtp"},
                {"ip": "10.0.0.1", "port": 70000}):
        with pytest.raises(AddressError):
            parse_address(1, **bad)


def test_source_trust_uses_networks_then_the_table_and_forgets_on_reload() -> None:
    udp = Interface("udp", "127.0.0.1", 5060)
    trust = SourceTrust([], AddressPermissions([Address(1, "192.0.2.7", 32, 5060, "udp")]),
                        group=1)
    assert trust.trusts(Source(udp, "192.0.2.7", 5060))
    assert not trust.trusts(Source(udp, "192.0.2.7", 5070))
    assert not trust.trusts(Source(Interface("tcp", "127.0.0.1", 5060), "192.0.2.7", 5060))
    trust.load(AddressPermissions())
    assert not trust.trusts(Source(udp, "192.0.2.7", 5060))  # the cache went with the table
    other_group = SourceTrust([], AddressPermissions([Address(2, "192.0.2.7", 32)]), group=1)
    assert not other_group.trusts(Source(udp, "192.0.2.7", 5060))


def test_source_trust_remembers_networks_and_still_asks_the_table_for_others() -> None:
    udp = Interface("udp", "127.0.0.1", 5060)
    trust = SourceTrust([ipaddress.ip_network("10.0.0.0/8")],
                        AddressPermissions([Address(1, "192.0.2.7", 32, 5060, "udp")]))
    for _ in range(2):  # the first answer computed, the second remembered
        assert trust.trusts(Source(udp, "10.1.2.3", 5060))
        assert trust.trusts(Source(udp, "192.0.2.7", 5060))  # not a network: the table
        assert not trust.trusts(Source(udp, "192.0.2.7", 5070))
        assert not trust.trusts(Source(udp, "198.51.100.1", 5060))
    trust.load(AddressPermissions())
    assert trust.trusts(Source(udp, "10.1.2.3", 5060))
    assert not trust.trusts(Source(udp, "192.0.2.7", 5060))


def test_proxy_relays_for_a_source_the_address_table_trusts() -> None:
    h = Harness(trusted=())
    assert statuses(h.feed(invite("sip:bob@elsewhere.example"), peer=("192.0.2.7", 5091))) \
        == [100, 403]
    h.core.trusted = SourceTrust([], AddressPermissions([Address(1, "192.0.2.7", 32)]))
    sends = h.feed(invite("sip:bob@elsewhere.example", branch="z9hG4bK2", call_id="c2"),
                   peer=("192.0.2.7", 5091))
    assert statuses(sends) == [100]
    assert any(s.dest.host == "elsewhere.example" for s in sends)


def test_routing_sees_check_source_address_and_its_context_info() -> None:
    seen: list[object] = []

    class Router:
        def request_route(self, request: object, ctx: object) -> None:
            from services.edge.routing import RouteContext

            assert isinstance(ctx, RouteContext)
            seen.append(ctx.check_source_address(1))
            seen.append(ctx.check_source_address(2))
            seen.append(ctx.check_address(1, "10.0.0.9", 5060, "udp"))
            ctx.reply(403)

    h = Harness(Router(), trusted=())
    h.core.trusted = SourceTrust([], AddressPermissions(
        [Address(1, "127.0.0.0", 8, context_info="lab"), Address(1, "10.0.0.0", 8)]))
    h.feed(invite())
    assert seen == ["lab", None, ""]
