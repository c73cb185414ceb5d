"""`sipmesh up` for real: the supervisor, the gateway child, opensips-cli, the opensips
package, `sipmesh status` / `sipmesh rpc`, a killed child restarting, clean SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opensips.mi import OpenSIPSMI, OpenSIPSMIException

from tests.integration.spine.meshproc import MeshProcess
from tests.support import opensips_cli
from tests.support.processes import running
from tests.support.waiting import eventually_sync


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    m = MeshProcess(tmp_path_factory.mktemp("mesh"))
    yield m
    m.stop()


def _post(url: str, body: object) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def _opensips_cli(url: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return opensips_cli.mi(url, *cmd)


def test_gateway_answers_json_rpc_over_http(mesh: MeshProcess) -> None:
    answer = _post(mesh.gateway_url, {"jsonrpc": "2.0", "id": 1, "method": "ps"})
    types = [p["Type"].split()[0] for p in answer["result"]["Processes"]]
    assert "gateway" in types and "supervisor" in types
    bad = _post(mesh.gateway_url, {"jsonrpc": "2.0", "id": 2, "method": "no_such_cmd"})
    assert bad["error"]["code"] == -32601


def test_opensips_cli_works_unchanged(mesh: MeshProcess) -> None:
    up = _opensips_cli(mesh.gateway_url, "uptime")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["Up time"].endswith("[sec]")
    stats = _opensips_cli(mesh.gateway_url, "get_statistics", "core:", "load:")
    got = json.loads(stats.stdout)
    assert got["core:rcv_requests"] == 0 and "load:load" in got
    named = _opensips_cli(mesh.gateway_url, "get_statistics", "statistics=core:rcv_replies")
    assert json.loads(named.stdout) == {"core:rcv_replies": 0}
    which = json.loads(_opensips_cli(mesh.gateway_url, "which").stdout)
    assert {"uptime", "version", "get_statistics"} <= set(which)
    assert "SipMesh" in json.loads(_opensips_cli(mesh.gateway_url, "version").stdout)["Server"]


def test_opensips_python_package_http_connector(mesh: MeshProcess) -> None:
    mi = OpenSIPSMI("http", url=mesh.gateway_url)
    assert mi.valid()[0]
    assert "Up since" in mi.execute("uptime")
    assert mi.execute("get_statistics", {"statistics": ["core:rcv_requests"]}) == {
        "core:rcv_requests": 0}
    assert mi.execute("get_statistics", [["pkmem:"]])["pkmem:0-real_used_size"] > 0
    assert mi.execute("reset_statistics", {"statistics": ["all"]}) == "OK"
    with pytest.raises(OpenSIPSMIException, match="-32601"):
        mi.execute("no_such_cmd")


def test_sipmesh_status_and_rpc(mesh: MeshProcess) -> None:
    status = mesh.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "gateway" in status.stdout and "passing" in status.stdout
    rows = json.loads(mesh.cli("status", "--json").stdout)
    assert [r["service"] for r in rows] == ["gateway"]
    text = mesh.cli("rpc", "--url", mesh.gateway_url, "get_statistics", "core:rcv_requests")
    assert text.returncode == 0 and text.stdout.strip() == "core:rcv_requests: 0"
    as_json = mesh.cli("rpc", "--url", mesh.gateway_url, "--json", "which", "command=uptime")
    assert json.loads(as_json.stdout) == [[]]
    err = mesh.cli("rpc", "--url", mesh.gateway_url, "nope")
    assert err.returncode == 1 and "error -32601" in err.stderr
    assert "Traceback" not in err.stderr


def test_killed_child_restarts_and_status_tracks_health(tmp_path: Path) -> None:
    m = MeshProcess(tmp_path)
    try:
        pid = int(next(line.split()[-1] for line in m.seen if line.startswith("started gateway")))
        # A stopped (not dead) child stops heart-beating and answering: once its /health
        # times out or its TTL runs out, status reports it and exits 1. Each status run is
        # a new process (about half a second), which paces the polling.
        status = m.cli("status")
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 20
        while status.returncode != 1 and time.monotonic() < deadline:
            status = m.cli("status")
        assert status.returncode == 1, status.stdout
        # Unreachable (its /health does not answer) or critical (TTL ran out).
        assert "passing" not in status.stdout
        os.kill(pid, signal.SIGCONT)
        # Killed outright: the supervisor restarts it with a new pid and a new endpoint.
        os.kill(pid, signal.SIGKILL)
        m.expect(rf"^exited gateway pid {pid} rc -9; restart in")
        new_pid = int(m.expect(r"^started gateway pid (\d+)").group(1))
        assert new_pid != pid
        new_url = m.expect(r"^endpoint gateway mi (\S+)").group(1)
        assert _post(new_url, {"jsonrpc": "2.0", "id": 1, "method": "version"})["result"]
        assert m.cli("status").returncode == 0
    finally:
        rc = m.stop()
    assert rc == 0
    assert any(line == "stopped" for line in m.seen + _drain(m))


def _drain(m: MeshProcess) -> list[str]:
    out = []
    while not m.lines.empty():
        out.append(m.lines.get())
    return out


def test_sigterm_stops_every_child(tmp_path: Path) -> None:
    m = MeshProcess(tmp_path)
    pid = int(next(line.split()[-1] for line in m.seen if line.startswith("started gateway")))
    assert m.stop() == 0
    lines = m.seen + _drain(m)
    assert "stopping" in lines and lines[-1] == "stopped"
    assert any(line.startswith(f"exited gateway pid {pid} rc 0") for line in lines)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_sigkill_of_the_supervisor_ends_every_child(tmp_path: Path) -> None:
    # The supervisor cannot forward a SIGKILL: each child armed PR_SET_PDEATHSIG itself
    # (SIPMESH_PARENT_PID) and the kernel stops it, so none runs on holding its ports.
    m = MeshProcess(tmp_path, SIPMESH_MESH_SERVICES="gateway,edge,registrar,presence",
                    SIPMESH_EDGE_LISTEN="udp:127.0.0.1:0")
    pids: dict[str, int] = {}
    try:
        m.line(r"^endpoint edge sip ", 30)
        m.line(r"^presence ready ", 30)
        m.line(r"^registrar ready ", 30)
        for line in m.seen:
            if found := re.match(r"^started (\S+) pid (\d+)$", line):
                pids[found.group(1)] = int(found.group(2))
        assert sorted(pids) == ["edge", "gateway", "presence", "registrar"]
        assert all(running(pid) for pid in pids.values())
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(10)
        eventually_sync(lambda: not any(running(pid) for pid in pids.values()), 20,
                        "every child gone with the supervisor", interval=0.1)
    finally:
        m.stop()
        for pid in pids.values():  # never leave one behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_edge_joins_the_mesh_and_its_commands_route_through_the_gateway(
    tmp_path: Path,
) -> None:
    from sipmesh.cli.mesh_cmd import _runnable

    if not _runnable("services.edge"):
        pytest.skip("services.edge is not present in this checkout")
    m = MeshProcess(tmp_path, SIPMESH_MESH_SERVICES="gateway,edge",
                    SIPMESH_EDGE_LISTEN="udp:127.0.0.1:0")
    try:
        sip = m.line(r"^endpoint edge sip (sip:127\.0\.0\.1:(\d+);transport=udp)")
        assert int(sip.group(2)) > 0
        mi = OpenSIPSMI("http", url=m.gateway_url)
        assert "edge_listeners" in mi.execute("which")
        listeners = mi.execute("edge_listeners")
        assert any(sip.group(2) in str(line) for line in listeners["Listeners"])
        types = [p["Type"].split()[0] for p in mi.execute("ps")["Processes"]]
        assert sorted(types) == ["edge", "gateway", "supervisor"]
        assert mi.execute("get_statistics", [["core:rcv_requests"]]) == {
            "core:rcv_requests": 0}
        assert m.cli("status").returncode == 0
    finally:
        assert m.stop() == 0


def test_gateway_refuses_a_public_bind_without_token(tmp_path: Path) -> None:
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "gateway"], capture_output=True, text=True, timeout=30,
        env=dict(os.environ, SIPMESH_GATEWAY_HOST="0.0.0.0", SIPMESH_GATEWAY_PORT="0",
                 SIPMESH_DISCOVERY_URL="http://127.0.0.1:9"))
    assert run.returncode == 78  # EX_CONFIG: the supervisor does not restart it
    assert "without a bearer token" in run.stderr
    assert "Traceback" not in run.stderr
