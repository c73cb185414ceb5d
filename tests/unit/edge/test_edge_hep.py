"""HEP v3 (services/edge/hep.py) against the fake collector's decoder written separately
from the specification (tests/support/hep_collector.py)."""

from __future__ import annotations

import ipaddress

import pytest

from services.edge.hep import Capture, call_id_of, encode
from tests.support.hep_collector import HepError, decode

SIP = (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"
       b"\r\ni: abc@192.0.2.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


def test_an_ipv4_udp_capture_decodes_per_the_spec() -> None:
    packet = encode(Capture(SIP, ("192.0.2.1", 5060), ("198.51.100.2", 5080), "udp",
                            1700000000.25, "abc@192.0.2.1"), capture_id=2001,
                    auth_key="s3cret")
    got = decode(packet)
    f = got.fields
    assert packet[:4] == b"HEP3" and int.from_bytes(packet[4:6], "big") == len(packet)
    assert f["ip_family"] == 2 and f["ip_proto"] == 17 and f["proto_type"] == 1
    assert got.src == ("192.0.2.1", 5060) and got.dst == ("198.51.100.2", 5080)
    assert f["time_sec"] == 1700000000 and f["time_usec"] == 250000
    assert f["capture_id"] == 2001 and f["auth_key"] == "s3cret"
    assert f["correlation_id"] == "abc@192.0.2.1" and got.payload == SIP


def test_ipv6_tcp_and_a_name_for_a_next_hop() -> None:
    got = decode(encode(Capture(SIP, ("2001:db8::1", 5060), ("2001:db8::2", 5061), "tcp",
                                5.0)))
    assert got.fields["ip_family"] == 10 and got.fields["ip_proto"] == 6
    assert got.fields["src_ip6"] == ipaddress.ip_address("2001:db8::1")
    assert "auth_key" not in got.fields and "correlation_id" not in got.fields
    named = decode(encode(Capture(SIP, ("192.0.2.1", 5060), ("gw.example.com", 5060),
                                  "udp", 5.0)))
    assert named.dst == ("0.0.0.0", 5060) and named.fields["ip_family"] == 2


def test_microseconds_never_reach_a_second_and_big_payloads_are_refused() -> None:
    got = decode(encode(Capture(SIP, ("192.0.2.1", 1), ("192.0.2.2", 2), "udp",
                                9.9999999)))
    assert (got.fields["time_sec"], got.fields["time_usec"]) == (10, 0)
    with pytest.raises(ValueError):
        encode(Capture(b"x" * 70000, ("192.0.2.1", 1), ("192.0.2.2", 2), "udp", 1.0))


def test_the_collector_refuses_what_the_spec_does_not_allow() -> None:
    good = encode(Capture(SIP, ("192.0.2.1", 1), ("192.0.2.2", 2), "udp", 1.0))
    for bad in (b"HEP2" + good[4:], good[:-1], good + b"\0"):
        with pytest.raises(HepError):
            decode(bad)


def test_call_id_of_a_message() -> None:
    assert call_id_of(SIP) == "abc@192.0.2.1"
    assert call_id_of(b"SIP/2.0 200 OK\r\nCall-ID: x1\r\n\r\n") == "x1"
    assert call_id_of(b"garbage") == ""
