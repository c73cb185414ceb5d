"""No registrar reachable: REGISTER and calls for local users get 503 with Retry-After, not
404 (issue 11).  The registrar's users are not unknown while it is away: a phone retries
after Retry-After instead of being told its account does not exist.

Two ways to lose it: the edge's configured registrar killed with SIGKILL, and a mesh whose
discovery holds no registrar (the edge up, the registrar down).

A mesh that has no registrar at all (`[mesh] services` leaves it out) is another thing
(issue 20): none can come, so the edge is ready without one and a local user with no
route is unknown (404), where it was never ready (`sipmesh restart edge` timed out).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from edge_harness import Edge, free_port, start_edge, wait_until

from shared.sip import answer_challenge, parse_challenge, parse_message
from tests.integration.registrar.harness import SCENARIOS as REG_SCENARIOS
from tests.integration.registrar.harness import add_user, start_registrar
from tests.integration.spine.meshproc import MeshProcess

pytestmark = pytest.mark.peers


def _exchange(port: int, text: str) -> bytes:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        s.sendto(text.format(me=me).encode(), ("127.0.0.1", port))
        s.settimeout(5)
        while True:
            data, _ = s.recvfrom(65535)
            if not data.startswith(b"SIP/2.0 100 "):
                return data


def _register(port: int, n: int) -> str:
    return (f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{{me}};branch=z9hG4bK-down{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:zoe@127.0.0.1>;tag=z{n}\r\n"
            f"To: <sip:zoe@127.0.0.1>\r\nCall-ID: down-{n}\r\nCSeq: {n} REGISTER\r\n"
            f"Contact: <sip:zoe@127.0.0.1:{{me}}>\r\nContent-Length: 0\r\n\r\n")


def _invite(port: int, n: int) -> str:
    return (f"INVITE sip:zoe@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{{me}};branch=z9hG4bK-downi{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:yan@127.0.0.1>;tag=y{n}\r\n"
            f"To: <sip:zoe@127.0.0.1>\r\nCall-ID: downi-{n}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:yan@127.0.0.1:{{me}}>\r\nContent-Length: 0\r\n\r\n")


def _assert_503_retry_after(answer: bytes) -> None:
    assert answer.startswith(b"SIP/2.0 503 "), answer[:80]
    assert b"\r\nRetry-After: " in answer


def test_registrar_killed_under_the_edge_gives_503_with_retry_after(tmp_path: Path) -> None:
    store = tmp_path / "subscribers.sqlite"
    add_user(store, "zoe@127.0.0.1", "zoe-pw")
    reg = start_registrar(store)
    edge: Edge | None = None
    try:
        edge = start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc,
                           "SIPMESH_EDGE_REGISTRAR_TIMEOUT": "0.5"})
        # Up: the registrar answers (a challenge for the REGISTER, 480 for an unbound user).
        challenged = _exchange(edge.port, _register(edge.port, 1))
        assert challenged.startswith(b"SIP/2.0 401 ")
        assert _exchange(edge.port, _invite(edge.port, 1)).startswith(b"SIP/2.0 480 ")
        reg.proc.kill()  # kill -9
        reg.proc.wait(5)
        # A REGISTER with credentials needs the registrar (the first one is challenged
        # statelessly, without it); a call for a local user too.
        challenge = parse_challenge(str(parse_message(challenged).get("WWW-Authenticate")))
        creds = answer_challenge(challenge, username="zoe", password="zoe-pw",
                                 method="REGISTER", uri=f"sip:127.0.0.1:{edge.port}",
                                 cnonce="c0ffee")
        answer = _exchange(edge.port, _register(edge.port, 2).replace(
            "Content-Length", f"Authorization: {creds}\r\nContent-Length"))
        _assert_503_retry_after(answer)
        _assert_503_retry_after(_exchange(edge.port, _invite(edge.port, 2)))
    finally:
        if edge is not None:
            assert edge.stop() == 0
            assert not edge.tracebacks()
        reg.stop()


def test_a_mesh_without_a_registrar_answers_503_not_404(tmp_path: Path) -> None:
    port = free_port()
    # The registrar belongs to this deployment but is not running (a mesh started without
    # it would tell the edge none is expected: the test below).
    mesh = MeshProcess(tmp_path, SIPMESH_MESH_SERVICES="gateway,edge",
                       SIPMESH_EDGE_REGISTRAR_EXPECTED="true",
                       SIPMESH_EDGE_LISTEN=f"udp:127.0.0.1:{port}",
                       XDG_STATE_HOME=str(tmp_path / "state"))
    try:
        mesh.line(r"^endpoint edge sip ")
        wait_until(lambda: _exchange(port, _register(port, 3)).startswith(b"SIP/2.0 503 "),
                   20, "the edge up")
        _assert_503_retry_after(_exchange(port, _register(port, 4)))
        _assert_503_retry_after(_exchange(port, _invite(port, 4)))
        # With sipp as a phone: the REGISTER fails with 503, never 404.
        done = subprocess.run(
            ["sipp", "-sf", str(REG_SCENARIOS / "register_auth.xml"), "-i", "127.0.0.1",
             "-p", str(free_port()), f"127.0.0.1:{port}", "-s", "zoe", "-au", "zoe",
             "-ap", "zoe-pw", "-m", "1", "-nostdin", "-timeout", "5s", "-timeout_error",
             "-trace_err", "-error_file", str(tmp_path / "err.log")],
            cwd=tmp_path, capture_output=True, timeout=30)
        assert done.returncode != 0
        assert "503 Registrar Unavailable" in (tmp_path / "err.log").read_text()
    finally:
        mesh.stop()


def _edge_readiness(mesh: MeshProcess) -> tuple[str, int]:
    """The edge's meta "ready" in discovery and its /ready status."""
    with urllib.request.urlopen(f"{mesh.registry_url}/v1/instances?service=edge",
                                timeout=10) as resp:
        [edge] = json.loads(resp.read())["instances"]
    url = edge["meta"]["health_url"].removesuffix("/health") + "/ready"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return edge["meta"]["ready"], resp.status
    except urllib.error.HTTPError as exc:
        return edge["meta"]["ready"], exc.code


def test_a_mesh_with_no_registrar_in_its_services_has_a_ready_edge(tmp_path: Path) -> None:
    port = free_port()
    mesh = MeshProcess(tmp_path, SIPMESH_MESH_SERVICES="gateway,edge",
                       SIPMESH_EDGE_LISTEN=f"udp:127.0.0.1:{port}",
                       XDG_STATE_HOME=str(tmp_path / "state"))
    try:
        mesh.line(r"^endpoint edge sip ")
        wait_until(lambda: _edge_readiness(mesh) == ("1", 200), 20, "the edge ready")
        assert _exchange(port, _register(port, 5)).startswith(b"SIP/2.0 404 ")
        assert _exchange(port, _invite(port, 5)).startswith(b"SIP/2.0 404 ")
    finally:
        assert mesh.stop() == 0
