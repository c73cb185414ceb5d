"""OpenSIPS 2.4 rows converted to SipMesh's records (sipmesh/importer/rows.py)."""

from __future__ import annotations

import datetime
import hashlib

from services.registrar.location import ALL_METHODS, Q_UNSPECIFIED
from sipmesh.importer.rows import (
    Converted,
    Skip,
    address_from_row,
    binding_from_row,
    destination_from_row,
    split_path,
    subscriber_from_row,
)

NOW = 1_700_000_000.0


def test_a_plaintext_password_gives_both_hashes_with_realm_domain() -> None:
    got = subscriber_from_row({"username": "alice", "domain": "example.com",
                               "password": "pw", "ha1": "ignored", "ha1b": "x"})
    assert isinstance(got, Converted)
    assert got.record.ha1 == hashlib.md5(b"alice:example.com:pw").hexdigest()
    assert got.record.ha1_sha256 == hashlib.sha256(b"alice:example.com:pw").hexdigest()


def test_an_md5_ha1_alone_is_kept_and_sha256_left_empty() -> None:
    ha1 = hashlib.md5(b"bob:example.com:pw").hexdigest().upper()
    got = subscriber_from_row({"username": "bob", "domain": "example.com", "password": "",
                               "ha1": ha1})
    assert isinstance(got, Converted)
    assert (got.record.ha1, got.record.ha1_sha256) == (ha1.lower(), "")
    assert subscriber_from_row({"username": "c", "domain": "d", "ha1": "nothex"}) == Skip(
        "neither a password nor an MD5 ha1")


def test_path_values_split_on_commas_outside_brackets_and_quotes() -> None:
    assert split_path('<sip:a;lr>,<sip:b;lr;x="1,2">, "x,y" <sip:c>') == (
        "<sip:a;lr>", '<sip:b;lr;x="1,2">', '"x,y" <sip:c>')
    assert split_path("") == ()


def test_a_location_row_becomes_a_binding() -> None:
    got = binding_from_row({
        "username": "Alice", "domain": "Example.com", "contact": "sip:alice@192.0.2.1",
        "expires": int(NOW) + 60, "q": 0.25, "callid": "c1", "cseq": 9, "path": None,
        "received": "sip:198.51.100.1:4000", "methods": None, "flags": 2, "cflags": "NAT",
        "sip_instance": "<urn:uuid:1>", "user_agent": "ua", "socket": "udp:10.0.0.1:5060",
        "last_modified": datetime.datetime(2026, 1, 1)}, now=NOW)
    assert isinstance(got, Converted) and got.note == "cflags names dropped"
    b = got.record
    assert (b.aor, b.expires, b.q, b.methods, b.cflags) == (
        "Alice@example.com", int(NOW) + 60, 250, ALL_METHODS, 0)  # user part kept
    assert (b.received, b.instance, b.socket, b.flags) == (
        "sip:198.51.100.1:4000", "<urn:uuid:1>", "udp:10.0.0.1:5060", 2)


def test_expiry_as_datetime_zero_expired_and_missing_domain() -> None:
    later = datetime.datetime.fromtimestamp(NOW + 120)  # a 2.3-style DATETIME column
    got = binding_from_row({"username": "a", "domain": "d", "contact": "sip:a@h",
                            "expires": later, "q": None}, now=NOW)
    assert isinstance(got, Converted)
    assert got.record.expires == int(NOW) + 120 and got.record.q == Q_UNSPECIFIED
    permanent = binding_from_row({"username": "a", "domain": "d", "contact": "sip:a@h",
                                  "expires": 0}, now=NOW)
    assert isinstance(permanent, Converted) and permanent.record.expires == 0
    assert binding_from_row({"username": "a", "domain": "d", "contact": "sip:a@h",
                             "expires": NOW - 1}, now=NOW) == Skip("expired")
    row = {"username": "a", "domain": None, "contact": "sip:a@h", "expires": 0}
    assert isinstance(binding_from_row(row, now=NOW), Skip)
    given = binding_from_row(row, now=NOW, default_domain="d.example")
    assert isinstance(given, Converted) and given.record.aor == "a@d.example"


def test_addresses_and_destinations() -> None:
    got = address_from_row({"grp": 1, "ip": "10.0.0.0", "mask": 8, "port": 0,
                            "proto": "UDP", "pattern": None, "context_info": None})
    assert isinstance(got, Converted) and got.record.proto == "udp"
    assert address_from_row({"ip": "1.2.3.4", "proto": "quic"}) == Skip(
        "unknown proto 'quic'")
    dest = destination_from_row({"setid": 3, "destination": "sip:gw", "weight": "fs://:pw@h",
                                 "state": 1, "socket": None})
    assert isinstance(dest, Converted) and dest.record.weight == 1 and "pw" not in dest.note
