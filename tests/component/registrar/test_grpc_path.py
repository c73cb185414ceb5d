"""The registrar's Lookup over gRPC returns a binding's whole Path vector (RFC 3327), in
order, for the edge to use as the branch's Route set: the edge's RegistrarClient against
the real servicer on a loopback port.  A Path value that does not parse does not break
the lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.edge.registrar_client import RegistrarClient
from tests.component.registrar.loopback import registrar_client

P1 = "<sip:p1@198.51.100.4:7000;lr>"
P2 = "<sip:p2@192.0.2.20;lr;transport=tcp>"


def register(user: str, path: str, callid: str = "c1") -> bytes:
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 198.51.100.4:7000;branch=z9hG4bKp1\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1\r\n"
        f"From: <sip:{user}@example.com>;tag=1\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: {callid}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 69\r\n"
        f"Contact: <sip:{user}@10.0.0.5:5062>\r\n{path}Supported: path\r\n"
        "Expires: 120\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[RegistrarClient]:
    async with registrar_client(tmp_path, timeout=2.0) as registrar:
        yield registrar


async def test_lookup_returns_the_whole_path_in_order(client: RegistrarClient) -> None:
    # The REGISTER came through the outbound proxy p1 (source 198.51.100.4:7000, not the
    # Contact's address): the binding is natted, but the Path hop is the next hop.
    status, _, headers = await client.save(register("alice", f"Path: {P1}\r\nPath: {P2}\r\n"),
                                           "198.51.100.4", 7000, "udp", "udp:127.0.0.1:5060")
    assert status == 200 and [v for n, v in headers if n == "Path"] == [P1, P2]
    status, [branch] = await client.lookup("alice@example.com", "INVITE")
    assert status == 200
    assert branch.uri == "sip:alice@10.0.0.5:5062"
    assert branch.path == (P1, P2)
    assert branch.next_hop == "sip:p1@198.51.100.4:7000;lr"


async def test_lookup_without_path_has_no_route_set(client: RegistrarClient) -> None:
    await client.save(register("bob", ""), "198.51.100.4", 7000, "udp", "udp:127.0.0.1:5060")
    status, [branch] = await client.lookup("bob@example.com", "INVITE")
    assert status == 200 and branch.path == ()
    assert branch.next_hop == "sip:198.51.100.4:7000"  # NAT `received`


async def test_path_that_does_not_parse_is_refused_at_save(client: RegistrarClient) -> None:
    status, _, _ = await client.save(register("carol", f"Path: garbage, {P2}\r\n"),
                                     "198.51.100.4", 7000, "udp", "udp:127.0.0.1:5060")
    assert status == 400  # RFC 3327: a Path value is a name-addr; nothing stored
    status, branches = await client.lookup("carol@example.com", "INVITE")
    assert status in (404, 480) and branches == []
