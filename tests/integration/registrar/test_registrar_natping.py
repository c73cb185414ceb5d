"""NAT pinging for real: a sipp "phone" registers through the edge from one port with a
Contact naming another (as behind a NAT), so the registrar keeps `received`; it then
answers the registrar's OPTIONS, which the edge delivers to the received address, and the
binding gets a measured ping latency. When the phone stops answering, the binding is
removed after max_pings_lost misses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.edge.edge_harness import (
    Edge,
    Sipp,
    free_port,
    is_bound,
    start_edge,
    summary,
    wait_until,
)
from tests.integration.registrar.harness import SCENARIOS, Registrar, add_user, start_registrar
from tests.integration.registrar.test_registrar_sipp import mi

pytestmark = pytest.mark.peers


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Registrar, Edge]]:
    store = tmp_path / "subscribers.sqlite"
    add_user(store, "gina@127.0.0.1", "gina-pw")
    reg = start_registrar(store, {"SIPMESH_REGISTRAR_NATPING_INTERVAL": "0.3",
                                  "SIPMESH_REGISTRAR_PING_THRESHOLD": "0.25",
                                  "SIPMESH_REGISTRAR_MAX_PINGS_LOST": "3"})
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc})
    yield reg, edge
    edge.stop()
    reg.stop()


def contact(reg: Registrar) -> dict[str, Any] | None:
    answer = mi(reg.mi, "ul_show_contact", ["location", "gina@127.0.0.1"])
    if "result" not in answer:
        return None
    found: dict[str, Any] = answer["result"]["Contacts"][0]
    return found


def test_natted_binding_is_pinged_measured_and_removed_when_silent(
        mesh: tuple[Registrar, Edge], tmp_path: Path) -> None:
    reg, edge = mesh
    public, private = free_port(), free_port()
    cmd = ["sipp", "-sf", str(SCENARIOS / "register_natted.xml"), "-i", "127.0.0.1", "-p",
           str(public), edge.address, "-s", "gina", "-au", "gina", "-ap", "gina-pw",
           "-key", "contact_port", str(private), "-m", "1", "-nostdin", "-timeout", "15s",
           "-timeout_error"]
    result = subprocess.run(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=45)
    assert result.returncode == 0, summary(result)
    first = contact(reg)
    assert first is not None and first["Received"] == f"sip:127.0.0.1:{public}"
    assert first["Contact"] == f"sip:gina@127.0.0.1:{private}"

    phone = Sipp(tmp_path)
    try:
        answering = phone.uas(str(SCENARIOS / "answer_options.xml"), public,
                              extra=["-m", "1000"])
        wait_until(lambda: (c := contact(reg)) is not None and c.get("Ping-Latency", 0) > 0,
                   10, "a measured ping latency")
        assert answering.poll() is None
    finally:
        phone.stop()  # the phone goes silent
    wait_until(lambda: not is_bound(public, "udp"), 5, "phone socket closed")
    wait_until(lambda: contact(reg) is None, 10, "silent binding removed")
    stats = mi(reg.mi, "get_statistics", [["nathelper:"]])["result"]
    assert stats["nathelper:answered"] >= 1 and stats["nathelper:lost"] >= 3
