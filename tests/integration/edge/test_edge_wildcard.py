"""An edge listening on 0.0.0.0: a real address in Via/Record-Route, every local address
its own (RFC 3261 §16.6 steps 4 and 8, §16.4: a request for the proxy itself)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
from edge_harness import Edge, Sipp, free_port, options_ping, start_edge, summary

pytestmark = pytest.mark.peers


def _wildcard_edge(**extra: str) -> Iterator[Edge]:
    edge = start_edge(extra, host="0.0.0.0")
    try:
        yield edge
    finally:
        assert edge.stop() == 0
        assert not edge.tracebacks(), edge.log_text()[-4000:]


@pytest.fixture
def wildcard_edge() -> Iterator[Edge]:
    yield from _wildcard_edge()


@pytest.fixture
def advertised_edge() -> Iterator[Edge]:
    yield from _wildcard_edge(SIPMESH_EDGE_ADVERTISE="127.0.0.2")


def _first_invite(edge: Edge, sipp: Sipp) -> str:
    """What the edge forwards to a next hop: sipp's INVITE caught on a plain socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uas:
        uas.bind(("127.0.0.1", 0))
        uas.settimeout(20)
        sipp.uac_background("uac", edge, f"127.0.0.1:{uas.getsockname()[1]}", timeout=10)
        data, _ = uas.recvfrom(65535)
    return data.decode(errors="replace")


def _hosts(message: str, header: str) -> list[str]:
    if header == "Via":
        return re.findall(r"(?im)^Via: SIP/2\.0/\w+ ([^:;\s]+)", message)
    return re.findall(r"(?im)^Record-Route: <sip:([^:;>]+)", message)


def test_call_through_an_edge_on_all_addresses(wildcard_edge: Edge, sipp: Sipp) -> None:
    uas = free_port()
    sipp.uas("uas_rr.xml", uas)
    result = sipp.uac("uac_rr.xml", wildcard_edge, f"127.0.0.1:{uas}", calls=3)
    assert result.returncode == 0, summary(result)


def test_loopback_is_the_edge_itself_not_a_loop(wildcard_edge: Edge) -> None:
    # OPTIONS to sip:127.0.0.1:<port>: before, forwarded to itself until 482/483.
    assert options_ping("127.0.0.1", wildcard_edge.port) == 200


def test_no_wildcard_address_is_written(wildcard_edge: Edge, sipp: Sipp) -> None:
    invite = _first_invite(wildcard_edge, sipp)
    via, rr = _hosts(invite, "Via")[0], _hosts(invite, "Record-Route")
    assert via != "0.0.0.0" and rr and "0.0.0.0" not in rr, invite
    socket.inet_aton(via)  # a real IPv4 address of this host (the default route's)
    assert rr == [via]


def test_advertise_names_the_address(advertised_edge: Edge, sipp: Sipp) -> None:
    invite = _first_invite(advertised_edge, sipp)
    assert _hosts(invite, "Via")[0] == "127.0.0.2", invite
    assert _hosts(invite, "Record-Route") == ["127.0.0.2"], invite
