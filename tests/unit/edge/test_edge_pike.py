"""Flood protection (services/edge/pike.py): OpenSIPS pike's IP tree on a fake clock, and
the guard the edge runs before its proxy core."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge.addresses import Interface, Source
from services.edge.app import EdgeApp
from services.edge.config import EdgeConfig
from services.edge.permissions import AddressPermissions, SourceTrust
from services.edge.pike import PikeTree
from services.edge.pike_mi import PikeGuard
from shared.store.edge_tables import Address

UDP = Interface("udp", "127.0.0.1", 5060)


def flood(tree: PikeTree, ip: str, count: int, now: float) -> list[tuple[bool, bool]]:
    out = []
    for _ in range(count):
        v = tree.check(ip, now)
        out.append((v.blocked, v.newly))
    return out


def test_a_flooding_address_is_blocked_once_and_its_requests_refused() -> None:
    tree = PikeTree(density=30, unit=2.0, remove_latency=120.0)
    seen = flood(tree, "192.0.2.7", 200, 0.5)
    first = next(i for i, (blocked, _) in enumerate(seen) if blocked)
    # The tree grows one byte per busy prefix (a quarter of the density each), then the
    # address itself needs the density in its current slot.
    assert 30 < first < 30 + 3 * 8 + 2
    assert [n for _, n in seen].count(True) == 1  # E_PIKE_BLOCKED once
    assert all(blocked for blocked, _ in seen[first:])
    assert tree.blocked(0.5) == ["192.0.2.7"]
    assert tree.blocks == 1 and tree.blocked_requests == 200 - first


def test_unblocked_once_two_quiet_units_passed() -> None:
    tree = PikeTree(density=10, unit=2.0)
    flood(tree, "192.0.2.7", 60, 0.1)
    assert tree.blocked(1.9) == ["192.0.2.7"]
    # After one swap the previous slot still holds the flood: still hot.
    assert tree.blocked(2.1) == ["192.0.2.7"]
    assert tree.check("192.0.2.7", 2.2).blocked
    # Two units later both slots are quiet: unblocked, and a calm request passes.
    assert tree.blocked(4.1) == [] or tree.blocked(6.1) == []
    assert not tree.check("192.0.2.7", 6.2).blocked


def test_a_steady_rate_below_the_density_is_never_blocked() -> None:
    tree = PikeTree(density=30, unit=2.0)
    now = 0.0
    for _ in range(2000):  # 14 requests a second, 28 per unit: under 30
        assert not tree.check("198.51.100.9", now).blocked
        now += 1 / 14
    assert tree.blocks == 0


def test_a_scan_from_many_addresses_blocks_nobody_and_is_forgotten() -> None:
    tree = PikeTree(density=30, unit=2.0, remove_latency=10.0)
    for i in range(5000):
        assert not tree.check(f"{i % 223 + 1}.{i // 223}.{i % 7}.9", 0.1).blocked
    assert tree.blocks == 0
    # Grown only under busy prefixes: never the four nodes per address a full tree takes.
    assert tree.nodes < 5000
    for step in range(1, 6):  # a node goes remove_latency after its last kid did
        tree.tick(0.1 + 11.0 * step)
    assert tree.nodes == 0


def test_nodes_expire_after_the_remove_latency() -> None:
    tree = PikeTree(density=4, unit=1.0, remove_latency=10.0)
    flood(tree, "192.0.2.7", 30, 0.0)
    flood(tree, "2001:db8::7", 30, 0.0)
    assert tree.blocked(0.0) == ["192.0.2.7", "2001:db8::7"]
    tree.tick(3.0)
    assert tree.blocked(3.0) == [] and tree.nodes > 0
    # Leaves go remove_latency after their last hit, then each prefix remove_latency
    # after its last kid (OpenSIPS puts the father in the timer list then).
    for step in range(1, 18):
        tree.tick(3.0 + 11.0 * step)
    assert tree.nodes == 0 and tree.roots == {}


def test_pike_rm_unblocks_and_says_why_not() -> None:
    tree = PikeTree(density=4)
    flood(tree, "192.0.2.7", 30, 0.0)
    assert tree.unblock("192.0.2.8") is None
    assert tree.unblock("192.0.2.7") is True
    assert tree.unblock("192.0.2.7") is False
    assert not tree.check("192.0.2.7", 0.1).blocked
    with pytest.raises(ValueError):
        tree.unblock("nope")


def test_garbage_source_passes_and_bad_settings_are_refused() -> None:
    tree = PikeTree()
    assert not tree.check("not-an-ip", 0.0).blocked
    with pytest.raises(ValueError):
        PikeTree(density=0)


def test_guard_exempts_trusted_sources_responses_and_keepalives() -> None:
    blocked: list[str] = []
    trust = SourceTrust([], AddressPermissions([Address(1, "10.0.0.0", 8)]))
    guard = PikeGuard(PikeTree(density=4), trust, lambda: 0.0, blocked.append)
    request = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n"
    for _ in range(50):
        assert guard.admit(request, Source(UDP, "10.1.1.1", 5060))  # trusted (the table)
        assert guard.admit(b"SIP/2.0 200 OK\r\n\r\n", Source(UDP, "192.0.2.7", 5060))
        assert guard.admit(b"\r\n\r\n", Source(UDP, "192.0.2.7", 5060))
    answers = [guard.admit(request, Source(UDP, "192.0.2.7", 5060)) for _ in range(50)]
    assert answers[0] and not answers[-1]
    assert blocked == ["192.0.2.7"]


def test_the_worker_gives_responses_to_the_core_without_asking_the_guard() -> None:
    # The guard passes every response (above); the worker does not even ask it.  A guard
    # refusing everything shows which messages were put to it.
    asked: list[bytes] = []
    received: list[bytes] = []

    class RefuseAll:
        def admit(self, data: bytes, source: Source) -> bool:
            asked.append(data)
            return False

    class Core:
        def receive(self, data: bytes, source: Source, now: float) -> list[Any]:
            received.append(data)
            return []

        def next_deadline(self) -> float | None:
            return None

    class Clock:
        def time(self) -> float:
            return 0.0

    app: Any = EdgeApp(EdgeConfig(listen=("udp:127.0.0.1:0",), rr_secret="k" * 32))
    app.core, app._loop, app.pike = Core(), Clock(), RefuseAll()
    source = Source(UDP, "192.0.2.7", 5060)
    response = b"SIP/2.0 180 Ringing\r\n\r\n"
    request = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n"
    app._on_message(response, source)
    app._on_message(request, source)
    assert received == [response]
    assert asked == [request]
    assert app.counters.drop_requests.value == 1
