"""`sipmesh up` with the gateway, the edge and the registrar on free ports: the edge finds
the registrar in discovery, a user added with `sipmesh user add` registers with sipp
through the edge, and `ul_dump` answers through the real gateway (JSON-RPC and
opensips-cli unchanged)."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.edge.edge_harness import free_port, options_ping, wait_until
from tests.integration.registrar.harness import SCENARIOS
from tests.integration.spine.meshproc import MeshProcess
from tests.support import opensips_cli

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshProcess, int]]:
    tmp = tmp_path_factory.mktemp("mesh")
    port = free_port()
    m = MeshProcess(tmp, SIPMESH_MESH_SERVICES="gateway,edge,registrar",
                    SIPMESH_EDGE_LISTEN=f"udp:127.0.0.1:{port},tcp:127.0.0.1:{port}",
                    SIPMESH_EDGE_UVLOOP="false",
                    SIPMESH_REGISTRAR_STORE=str(tmp / "subscribers.sqlite"))
    yield m, port
    m.stop()


def gateway(url: str, method: str, params: object = None) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def test_register_through_the_mesh_and_ul_dump_at_the_gateway(
        mesh: tuple[MeshProcess, int], tmp_path: Path) -> None:
    m, port = mesh
    m.line(r"^endpoint registrar grpc \S+")  # `sipmesh up` prints the registrar
    m.line(r"^endpoint edge sip ")
    wait_until(lambda: options_ping("127.0.0.1", port) == 200, 20, "edge up")
    added = m.cli("user", "add", "dave@127.0.0.1", "dave-pw")
    assert added.returncode == 0, added.stderr
    # An operator listens for new contacts through the gateway (OpenSIPS event_datagram).
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(15)
    sub = gateway(m.gateway_url, "event_subscribe",
                  ["E_UL_CONTACT_INSERT", f"udp:127.0.0.1:{listener.getsockname()[1]}", 600])
    assert sub.get("result") == "OK", sub
    # The edge learns the registrar from discovery; until then REGISTER is not ours (404).
    contact_port = free_port()

    def registered() -> bool:
        cmd = ["sipp", "-sf", str(SCENARIOS / "register_auth.xml"), "-i", "127.0.0.1", "-p",
               str(contact_port), f"127.0.0.1:{port}", "-s", "dave", "-au", "dave", "-ap",
               "dave-pw", "-m", "1", "-nostdin", "-timeout", "10s", "-timeout_error"]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=30
                              ).returncode == 0

    wait_until(registered, 30, "dave registered through the mesh", interval=0.5)
    dump = gateway(m.gateway_url, "ul_dump")["result"]
    [aor] = [a for a in dump["Domains"][0]["AORs"] if a["AOR"] == "dave@127.0.0.1"]
    assert aor["Contacts"][0]["Contact"] == f"sip:dave@127.0.0.1:{contact_port}"
    cli = opensips_cli.mi(m.gateway_url, "ul_show_contact", "location", "dave@127.0.0.1")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["AOR"] == "dave@127.0.0.1"
    stats = gateway(m.gateway_url, "get_statistics", [["usrloc:"]])["result"]
    assert stats["usrloc:registered_users"] >= 1
    with listener:
        event = json.loads(listener.recv(65535))
    assert event["method"] == "E_UL_CONTACT_INSERT"
    params = event["params"]
    assert params["aor"] == "dave@127.0.0.1" and params["uri"].endswith(f":{contact_port}")
    assert params["expires"] > 0 and params["received"] == "" and params["latency"] == 0
