"""`sipmesh status` logic against a real embedded registry, and the rpc output format."""

from __future__ import annotations

import io

from shared.discovery import DiscoveryConfig, Instance
from shared.discovery.embedded import RegistryServer
from shared.service import ServiceRuntime
from sipmesh.cli.mesh_cmd import _params, _status, console, render, status_table


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


def shown(renderable: object) -> list[str]:
    out = io.StringIO()
    console(out).print(renderable)  # captured, as when piped: no width limit
    return [line.rstrip() for line in out.getvalue().splitlines()]


def test_render_is_readable() -> None:
    value = {"Processes": [{"ID": 0, "Type": "gateway [x]"}], "Up time": "3 [sec]", "n": 2}
    assert shown(render(value)) == [
        "Processes", "└── 0", "    ├── ID: 0", "    └── Type: gateway [x]",
        "Up time: 3 [sec]", "n: 2"]
    assert shown(render(["a", 1])) == ["a", "1"]
    assert shown(render("OK")) == ["OK"]
    long = "x" * 200  # piped output never wraps a value
    assert shown(render({"k": long})) == [f"k: {long}"]


def test_status_table_lines_up_columns() -> None:
    lines = shown(status_table([("gateway", "gw-1", "127.0.0.1:8888", "passing"),
                                ("edge", "-", "-", "missing")]))
    assert lines[0].split() == ["SERVICE", "ID", "ADDRESS", "HEALTH"]
    assert lines[1].split() == ["gateway", "gw-1", "127.0.0.1:8888", "passing"]
    assert lines[2].split() == ["edge", "-", "-", "missing"]
    assert lines[0].index("HEALTH") == lines[1].index("passing") == lines[2].index("missing")
