"""Mixed versions (issue 20): one service from the released 0.1.0 tree, the rest from HEAD,
and the other way round.

Release 0.1.0 is the commit whose contracts `contracts/released/0.1.0/` records
(:data:`RELEASE`); the test extracts that tree with `git archive` into a temporary
directory and runs a service from it (`python -m services.<x>` with the old tree first on
`sys.path`, the same virtualenv). Registrations through the edge, MI through the
gateway, a call through the edge to a registered phone (the edge's Lookup at the
registrar) and an event of the registrar reaching a subscriber of the gateway must work
across the versions:

* an old registrar behind today's gateway and edge (today's gateway handles the old
  registrar's MI answers; the edge, finding no readiness flag in its registration, takes it
  as ready);
* an old edge and an old gateway in front of today's registrar (today's registrar answers
  the old clients' gRPC and MI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

import gateway
from services import registrar
from tests.integration.edge.edge_harness import free_port, options_ping, wait_until
from tests.integration.registrar.test_registrar_kill9 import add_subscribers, register_once
from tests.integration.spine.meshproc import ROOT, MeshProcess

pytestmark = [pytest.mark.peers, pytest.mark.timeout(180)]
RELEASE = "7028c4e"  # main when contracts 0.1.0 were snapshotted (contracts/released/0.1.0)


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 0.1.0 source tree (no git history in this clone: the test cannot run)."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to extract release 0.1.0")
    found = subprocess.run(["git", "cat-file", "-t", RELEASE], cwd=ROOT,
                           capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"release commit {RELEASE} is not in this clone (shallow?)")
    archive = subprocess.run(["git", "archive", "--format=tar", RELEASE], cwd=ROOT,
                             capture_output=True, check=True, timeout=120).stdout
    target = tmp_path_factory.mktemp("release-0.1.0")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    # It really is the released tree: its contracts are the snapshot's.
    for kind in ("mi", "events"):
        for path in (ROOT / "contracts/released/0.1.0" / kind).glob("*.json"):
            assert (target / "contracts" / kind / path.name).read_text() == path.read_text()
    return target


class OldService:
    """One service run from the 0.1.0 tree, registered in the mesh's discovery."""

    def __init__(self, tree: Path, module: str, env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")
        env = dict(env, PYTHONPATH=str(tree))
        self.proc = subprocess.Popen([sys.executable, "-m", module], cwd=tree, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def instances(m: MeshProcess, service: str) -> list[dict[str, Any]]:
    url = f"{m.registry_url}/v1/instances?service={service}&passing=1"
    with urllib.request.urlopen(url, timeout=10) as resp:
        found: list[dict[str, Any]] = json.loads(resp.read())["instances"]
    return found


def mi(url: str, method: str, params: Any = None) -> Any:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    assert "result" in answer, answer
    return answer["result"]


@pytest.fixture
def mixed(request: pytest.FixtureRequest, old_tree: Path, tmp_path: Path
          ) -> Iterator[tuple[MeshProcess, int, list[str]]]:
    """`sipmesh up` (HEAD) with the services of `request.param` left out and run from the
    0.1.0 tree instead."""
    old: list[str] = request.param
    port = free_port()
    current = [s for s in ("gateway", "edge", "registrar") if s not in old]
    env = {"SIPMESH_EDGE_LISTEN": f"udp:127.0.0.1:{port}", "XDG_STATE_HOME": str(tmp_path)}
    if "gateway" in old:  # the old gateway is started by the test, on a port of its own
        env["SIPMESH_GATEWAY_PORT"] = str(free_port())
    started: list[OldService] = []
    if "gateway" in old:  # MeshProcess returns once a gateway registered: the old one
        m = _mesh_without_gateway(tmp_path, current, env, old_tree, started)
    else:
        m = MeshProcess(tmp_path, SIPMESH_MESH_SERVICES=",".join(current), **env)
    try:
        for name in old:
            if name == "gateway":
                continue  # already running
            child_env = dict(m.env, SIPMESH_DISCOVERY_BACKEND="embedded",
                             SIPMESH_DISCOVERY_URL=m.registry_url)
            module = "gateway" if name == "gateway" else f"services.{name}"
            started.append(OldService(old_tree, module, child_env, tmp_path / f"old-{name}.log"))
        wait_until(lambda: options_ping("127.0.0.1", port) == 200, 60, "edge up")
        wait_until(lambda: len(instances(m, "registrar")) == 1, 60, "registrar registered")
        yield m, port, old
    finally:
        for svc in started:
            svc.stop()
        m.stop()


def _mesh_without_gateway(tmp: Path, current: list[str], env: dict[str, str], tree: Path,
                          started: list[OldService]) -> MeshProcess:
    """`sipmesh up` of `current` (no gateway among them) plus the old gateway, which
    MeshProcess needs to see registered before it returns."""
    import threading

    box: dict[str, MeshProcess] = {}

    def run() -> None:
        box["m"] = MeshProcess(tmp, SIPMESH_MESH_SERVICES=",".join(current), **env)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    registry_url = ""

    def registry_known() -> bool:
        nonlocal registry_url
        text = (tmp / "mesh.stderr").read_text() if (tmp / "mesh.stderr").exists() else ""
        for line in text.splitlines():
            if "discovery=embedded(" in line:
                registry_url = line.split("discovery=embedded(")[1].split(")")[0]
                return True
        return False

    wait_until(registry_known, 60, "the mesh's registry")
    child_env = dict(os.environ)
    child_env.update(env, SIPMESH_DISCOVERY_BACKEND="embedded",
                     SIPMESH_DISCOVERY_URL=registry_url,
                     SIPMESH_EVENTS_STORE=str(tmp / "event_subscribers.sqlite"))
    started.append(OldService(tree, "gateway", child_env, tmp / "old-gateway.log"))
    runner.join(90)
    assert "m" in box, "sipmesh up did not see the old gateway register"
    return box["m"]


@pytest.mark.parametrize("mixed", [["registrar"], ["gateway", "edge"]], indirect=True,
                         ids=["old-registrar", "old-gateway-and-edge"])
def test_registrations_and_mi_across_versions(
        mixed: tuple[MeshProcess, int, list[str]], tmp_path: Path) -> None:
    m, port, old = mixed
    versions = {i["service"]: i["meta"].get("service_version") for i in
                [*instances(m, "gateway"), *instances(m, "edge"), *instances(m, "registrar")]}
    for name, version in versions.items():
        # 0.1.0 did not publish service_version: that is how the old ones are told apart.
        assert (version is None) == (name in old), versions
    users = [f"mix{i}" for i in range(5)]
    add_subscribers(tmp_path / "sipmesh" / "subscribers.sqlite", users)
    wait_until(lambda: register_once(tmp_path, port, users[0], free_port()), 30,
               "a REGISTER through the edge answered 200", interval=0.5)
    for user in users[1:]:
        assert register_once(tmp_path, port, user, free_port()), user
    dump = mi(m.gateway_url, "ul_dump", ["brief"])
    aors = {a["AOR"] for d in dump["Domains"] for a in d["AORs"]}
    assert {f"{u}@127.0.0.1" for u in users} <= aors
    contact = mi(m.gateway_url, "ul_show_contact", ["location", f"{users[0]}@127.0.0.1"])
    assert contact["AOR"] == f"{users[0]}@127.0.0.1" and contact["Contacts"]
    procs = mi(m.gateway_url, "ps")["Processes"]
    kinds = {p["Type"].split()[0] for p in procs}
    assert {"gateway", "edge", "registrar"} <= kinds
    if "gateway" not in old:  # today's gateway: every process's own version, "" if none
        by_kind = {p["Type"].split()[0]: p["Version"] for p in procs}
        assert by_kind["registrar"] == ("" if "registrar" in old else registrar.__version__)
        assert by_kind["gateway"] == gateway.__version__


@pytest.mark.parametrize("mixed", [["registrar"], ["gateway", "edge"]], indirect=True,
                         ids=["old-registrar", "old-gateway-and-edge"])
def test_a_call_and_an_event_across_versions(
        mixed: tuple[MeshProcess, int, list[str]], tmp_path: Path) -> None:
    """A call through the edge to a user the registrar holds (the edge's Lookup over gRPC
    across the versions), and the registrar's E_UL_CONTACT_INSERT reaching a datagram
    subscriber of the gateway (events across the versions)."""
    import socket

    m, port, _ = mixed
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(1.0)
    try:
        mi(m.gateway_url, "event_subscribe",
           ["E_UL_CONTACT_INSERT", f"udp:127.0.0.1:{sink.getsockname()[1]}"])
        callee, phone = "callee", free_port()
        add_subscribers(tmp_path / "sipmesh" / "subscribers.sqlite", [callee])
        wait_until(lambda: register_once(tmp_path, port, callee, phone), 30,
                   "the callee registered through the edge", interval=0.5)

        def event() -> dict[str, Any] | None:
            try:
                data = sink.recv(65535)
            except TimeoutError:
                return None
            body: dict[str, Any] = json.loads(data)
            return body if f"{callee}@" in json.dumps(body.get("params")) else None

        got = wait_until(event, 30, "E_UL_CONTACT_INSERT at the subscriber", interval=0)
        assert got["method"] == "E_UL_CONTACT_INSERT", got
    finally:
        sink.close()
    # The callee's phone answers at the registered contact; the caller dials its AOR.
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(phone),
                            "-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uac = subprocess.run(["sipp", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()),
                              f"127.0.0.1:{port}", "-s", callee, "-m", "1", "-nostdin",
                              "-timeout", "30s", "-timeout_error"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert uac.returncode == 0, uac.stdout[-2000:]
        assert uas.wait(30) == 0  # the call reached the registered phone and was hung up
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(10)
