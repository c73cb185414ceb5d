"""`sipmesh status` logic against a real embedded registry, and the rpc output format."""

from __future__ import annotations

from shared.discovery import DiscoveryConfig, Instance
from shared.discovery.embedded import RegistryServer
from shared.service import ServiceRuntime
from sipmesh.cli.mesh_cmd import _params, _status, render


async def test_expected_service_without_instance_is_missing_and_unhealthy() -> None:
    server = RegistryServer()
    url = await server.start()
    disc = DiscoveryConfig(url=url)
    try:
        await server.registry.register(
            Instance("supervisor", "sup-1", "127.0.0.1", 1, meta={"expected": "gateway,edge"}),
            ttl=60)
        rt = ServiceRuntime("gateway", discovery=disc)
        await rt.start()
        try:
            rows, ok = await _status(disc)
            assert not ok
            assert ("edge", "-", "-", "missing") in rows
            assert any(r[0] == "gateway" and r[3] == "passing" for r in rows)
            edge = ServiceRuntime("edge", discovery=disc)
            await edge.start()
            rows, ok = await _status(disc)
            assert ok and {r[0] for r in rows} == {"gateway", "edge"}
            await edge.stop()
        finally:
            await rt.stop()
        rows, ok = await _status(disc)
        assert not ok and {r[3] for r in rows} == {"missing"}
    finally:
        await server.stop()


def test_rpc_params_follow_opensips_cli() -> None:
    assert _params("uptime", []) is None
    assert _params("ul_show_contact", ["location", "bob"]) == ["location", "bob"]
    assert _params("ul_show_contact", ["table_name=location", "aor=bob"]) == {
        "table_name": "location", "aor": "bob"}
    assert _params("get_statistics", ["core:", "load:"]) == [["core:", "load:"]]
    assert _params("get_statistics", ["statistics=core: load:"]) == {
        "statistics": ["core:", "load:"]}


def test_render_is_readable() -> None:
    value = {"Processes": [{"ID": 0, "Type": "gateway"}], "Up time": "3 [sec]", "n": 2}
    assert render(value) == [
        "Processes:", "  - ID: 0", "    Type: gateway", "Up time: 3 [sec]", "n: 2"]
    assert render(["a", 1]) == ["- a", "- 1"]
    assert render("OK") == ["OK"]
