"""Mixed versions (issue 20): one service from the previous release, the rest from HEAD,
and the other way round.

The release tested is **0.2.0** (:data:`RELEASES`), the last one: what an upgrade meets
today. HEAD changed contracts since then, additively, and each change needs a peer that
does not know it: the edge's `SaveWithDigest` falls back to GetCredentials + Save with a
0.2.0 registrar; a 0.2.0 edge still registers through today's registrar the old way; the
gateways forward and deliver events of dialogs and registrations across the versions.
Release 0.1.0 keeps one lighter case (no dialog service), a 0.1.0 registrar behind
today's gateway and edge, where the skew is widest (no readiness flag, no service version,
no SaveWithDigest): the contracts gate promises 0.1.0 peers too. Its other direction (a
0.1.0 edge and gateway before today's registrar) gave way to 0.2.0's: CI is near its time
budget, and each case starts a mesh; a case checks everything in that one mesh.

A release is its commit (not a tag: a clone may lack tags); the test extracts that tree
with `git archive` into a temporary directory (checked against the release's contracts
snapshot, `contracts/released/<version>/`) and runs a service from it (`python -m
services.<x>` with the old tree first on `sys.path`, the same virtualenv). A clone
without that history (shallow) fails the test and says so. Across the versions:
registrations with digest through the edge, MI through the gateway (`ul_dump`,
`ul_show_contact`, `ps`), a call through the edge to a registered phone (the edge's
Lookup at the registrar; with a dialog service, its CDR's E_ACC_CDR) and the registrar's
E_UL_CONTACT_INSERT reaching a datagram subscriber of the gateway:

* an old registrar (for 0.2.0, and an old dialog service) behind today's gateway and
  edge: today's edge finds out the registrar lacks SaveWithDigest and checks the digest
  itself; today's gateway handles the old services' MI answers and events;
* (0.2.0) an old edge and an old gateway in front of today's registrar and dialog
  service: today's registrar answers the old edge's GetCredentials and Save,
  today's dialog service its dialog stream, and the old gateway takes today's events.

Those run in the embedded events mode. In the RabbitMQ mode a 0.2.0 gateway and today's
consume one named queue side by side (gateway replicas mid-upgrade): every event reaches
the subscriber. That works only with the queue's bounds off: today's gateway declares a
named queue with `x-expires`/`x-max-length` arguments, and RabbitMQ refuses a 0.2.0
gateway's declaration without them (PRECONDITION_FAILED; it then consumes nothing), which
no change at HEAD can undo; README "Independent deploys" says so.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

import gateway
from services import registrar
from tests.integration.dialog.rabbit import AMQP, delete, names
from tests.integration.edge.edge_harness import free_port, options_ping, wait_until
from tests.integration.registrar.test_registrar_kill9 import add_subscribers, register_once
from tests.integration.spine.meshproc import ROOT, MeshProcess

pytestmark = [pytest.mark.peers, pytest.mark.timeout(180)]
# Each release's commit: "Release 0.2.0" (c014436; tag v0.2.0), and main when contracts
# 0.1.0 were snapshotted (7028c4e; tag v0.1.0).
RELEASES = {"0.2.0": "c014436", "0.1.0": "7028c4e"}


@dataclass(frozen=True)
class Case:
    release: str
    old: tuple[str, ...]  # the services run from the release's tree
    current: tuple[str, ...]  # the services `sipmesh up` runs from HEAD

    @property
    def services(self) -> tuple[str, ...]:
        return (*self.old, *self.current)


CASES = [
    Case("0.2.0", ("registrar", "dialog"), ("gateway", "edge")),
    Case("0.2.0", ("gateway", "edge"), ("registrar", "dialog")),
    Case("0.1.0", ("registrar",), ("gateway", "edge")),
]


@pytest.fixture(scope="module")
def trees() -> dict[str, Path]:
    """Each release's source tree, extracted once (on first use) for the module."""
    return {}


def release_tree(trees: dict[str, Path], release: str, base: Path) -> Path:
    """Release `release`'s source tree; fails when this clone lacks its commit."""
    if release in trees:
        return trees[release]
    commit = RELEASES[release]
    if shutil.which("git") is None:
        pytest.fail(f"git is needed to extract release {release}")
    found = subprocess.run(["git", "cat-file", "-t", commit], cwd=ROOT,
                           capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail(f"release {release} (commit {commit}) is not in this clone: the "
                    "mixed-versions test needs the history (`git fetch --unshallow`)")
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT,
                             capture_output=True, check=True, timeout=120).stdout
    target = base / f"release-{release}"
    target.mkdir()
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    # It really is the released tree: its contracts are the snapshot's.
    for kind in ("mi", "events"):
        snapshot = sorted((ROOT / "contracts/released" / release / kind).glob("*.json"))
        assert snapshot, f"no contracts snapshot of {release}"
        for path in snapshot:
            assert (target / "contracts" / kind / path.name).read_text() == path.read_text()
    trees[release] = target
    return target


class OldService:
    """One service run from a release's tree, registered in the mesh's discovery."""

    def __init__(self, tree: Path, module: str, env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")
        env = dict(env, PYTHONPATH=str(tree))
        self.proc = subprocess.Popen([sys.executable, "-m", module], cwd=tree, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> None:
        """SIGTERM, then up to 20 s for the drain (see `terminate` to stop several)."""
        self.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()


def instances(m: MeshProcess, service: str) -> list[dict[str, Any]]:
    url = f"{m.registry_url}/v1/instances?service={service}&passing=1"
    with urllib.request.urlopen(url, timeout=10) as resp:
        found: list[dict[str, Any]] = json.loads(resp.read())["instances"]
    return found


def registered_once(m: MeshProcess, service: str) -> bool:
    return len(instances(m, service)) == 1


def _answer(url: str, method: str, params: Any = None) -> dict[str, Any]:
    """The whole JSON-RPC answer of an MI call: its result or its error."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def _statistic(url: str, name: str) -> Any:
    """The statistic's value through the gateway's MI, None while no process has it."""
    return _answer(url, "get_statistics", [[name]]).get("result", {}).get(name)


def mi(url: str, method: str, params: Any = None) -> Any:
    answer = _answer(url, method, params)
    assert "result" in answer, answer
    return answer["result"]


@dataclass
class Mixed:
    case: Case
    mesh: MeshProcess
    port: int  # the edge's SIP port
    old: dict[str, OldService]


@pytest.fixture
def mixed(request: pytest.FixtureRequest, trees: dict[str, Path],
          tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[Mixed]:
    """`sipmesh up` (HEAD) of the case's current services, its old ones run from the
    release's tree beside it."""
    case: Case = request.param
    tree = release_tree(trees, case.release, tmp_path_factory.getbasetemp())
    port = free_port()
    env = {"SIPMESH_EDGE_LISTEN": f"udp:127.0.0.1:{port}", "XDG_STATE_HOME": str(tmp_path)}
    if "gateway" in case.old:  # the old gateway is started by the test, on a port of its own
        env["SIPMESH_GATEWAY_PORT"] = str(free_port())
    started: dict[str, OldService] = {}
    if "gateway" in case.old:  # MeshProcess returns once a gateway registered: the old one
        m = _mesh_without_gateway(tmp_path, case.current, env, tree, started)
    else:
        m = MeshProcess(tmp_path, SIPMESH_MESH_SERVICES=",".join(case.current), **env)
    try:
        for name in case.old:
            if name == "gateway":
                continue  # already running
            child_env = dict(m.env, SIPMESH_DISCOVERY_BACKEND="embedded",
                             SIPMESH_DISCOVERY_URL=m.registry_url)
            started[name] = OldService(tree, f"services.{name}", child_env,
                                       tmp_path / f"old-{name}.log")
        wait_until(lambda: options_ping("127.0.0.1", port) == 200, 60, "edge up")
        for name in case.services:
            if name != "edge":
                wait_until(functools.partial(registered_once, m, name), 60,
                           f"{name} registered")
        if "dialog" in case.services:
            # The edge tracks dialogs once it found the dialog service in discovery.
            # Until then the gateway answers the statistic with an error (404 "Statistics
            # Not Found"): not yet, rather than a failure.
            wait_until(lambda: _statistic(m.gateway_url, "dialog:events_emitted") is not None,
                       30, "the edge's dialog statistics")
        yield Mixed(case, m, port, started)
    finally:
        for svc in started.values():  # all drain at once, then each is waited for
            svc.terminate()
        m.stop()
        for svc in started.values():
            svc.stop()


def _mesh_without_gateway(tmp: Path, current: tuple[str, ...], env: dict[str, str],
                          tree: Path, started: dict[str, OldService]) -> MeshProcess:
    """`sipmesh up` of `current` (no gateway among them) plus the old gateway, which
    MeshProcess needs to see registered before it returns."""
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
    started["gateway"] = OldService(tree, "gateway", child_env, tmp / "old-gateway.log")
    runner.join(90)
    assert "m" in box, "sipmesh up did not see the old gateway register"
    return box["m"]


class Sink:
    """A datagram subscriber of the gateway (OpenSIPS event_datagram)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.got: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        return f"udp:127.0.0.1:{self.sock.getsockname()[1]}"

    def event(self, method: str, needle: str) -> dict[str, Any] | None:
        """The first `method` notification mentioning `needle` (reads what came)."""
        while True:
            for body in self.got:
                if body.get("method") == method and needle in json.dumps(body.get("params")):
                    return body
            try:
                self.got.append(json.loads(self.sock.recv(65535)))
            except TimeoutError:
                return None


@pytest.mark.parametrize("mixed", CASES, indirect=True,
                         ids=[f"{c.release}-old-{'-'.join(c.old)}" for c in CASES])
def test_registrations_calls_and_events_across_versions(mixed: Mixed, tmp_path: Path
                                                        ) -> None:
    m, port, case = mixed.mesh, mixed.port, mixed.case
    # Which process runs which tree: the old ones are the test's own processes.
    old_pids = {svc.proc.pid for svc in mixed.old.values()}
    for name in case.services:
        pids = {int(i["meta"]["pid"]) for i in instances(m, name)}
        assert pids, name
        assert pids == ({mixed.old[name].proc.pid} if name in case.old
                        else pids - old_pids), (name, pids, old_pids)
    sink = Sink()
    try:
        for event in ("E_UL_CONTACT_INSERT", *(("E_ACC_CDR",) if "dialog" in case.services
                                               else ())):
            mi(m.gateway_url, "event_subscribe", [event, sink.address])
        # Registrations with digest through the edge; MI through the gateway.
        users = [f"mix{i}" for i in range(4)]
        callee, phone = "callee", free_port()
        add_subscribers(tmp_path / "sipmesh" / "subscribers.sqlite", [*users, callee])
        wait_until(lambda: register_once(tmp_path, port, callee, phone), 30,
                   "a REGISTER through the edge answered 200", interval=0.5)
        for user in users:
            assert register_once(tmp_path, port, user, free_port()), user
        dump = mi(m.gateway_url, "ul_dump", ["brief"])
        aors = {a["AOR"] for d in dump["Domains"] for a in d["AORs"]}
        assert {f"{u}@127.0.0.1" for u in [*users, callee]} <= aors
        contact = mi(m.gateway_url, "ul_show_contact", ["location", f"{users[0]}@127.0.0.1"])
        assert contact["AOR"] == f"{users[0]}@127.0.0.1" and contact["Contacts"]
        procs = mi(m.gateway_url, "ps")["Processes"]
        kinds = {p["Type"].split()[0] for p in procs}
        assert set(case.services) <= kinds, kinds
        # Every process's own version, as the gateway (whichever) tells it; 0.1.0 did not
        # report one (""; its gateway has no such column).
        by_kind = {p["Type"].split()[0]: p.get("Version", "") for p in procs}
        released = "" if case.release == "0.1.0" else case.release
        assert by_kind["registrar"] == (released if "registrar" in case.old
                                        else registrar.__version__), by_kind
        assert by_kind["gateway"] == (released if "gateway" in case.old
                                      else gateway.__version__), by_kind
        if "edge" not in case.old and "registrar" in case.old:
            # Today's edge asked the old registrar for SaveWithDigest, was told it does
            # not know the call, and checked the digest itself (GetCredentials + Save).
            assert "registrar_without_digest_on_save" in (tmp_path / "mesh.stderr").read_text()
        # The registrar's event reaches the gateway's subscriber.
        got = wait_until(lambda: sink.event("E_UL_CONTACT_INSERT", f"{callee}@"), 30,
                         "E_UL_CONTACT_INSERT at the subscriber", interval=0)
        assert got["params"]["aor"].startswith(f"{callee}@"), got
        # A call through the edge to the registered phone, which answers; the caller
        # hangs up. (Only that phone answers 200: the caller's success is the proof. Its
        # exit is not waited for, sipp's UAS lingers 4 s after the BYE.)
        uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(phone),
                                "-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            uac = subprocess.run(["sipp", "-sn", "uac", "-i", "127.0.0.1", "-p",
                                  str(free_port()), f"127.0.0.1:{port}", "-s", callee, "-m",
                                  "1", "-nostdin", "-timeout", "30s", "-timeout_error"],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert uac.returncode == 0, uac.stdout[-2000:]
            assert uas.poll() in (None, 0)  # answered; not failed
        finally:
            if uas.poll() is None:
                uas.kill()
                uas.wait(10)
        if "dialog" in case.services:  # the call's CDR, raised by the dialog service
            cdr = wait_until(lambda: sink.event("E_ACC_CDR", "INVITE"), 30,
                             "E_ACC_CDR at the subscriber", interval=0)
            assert cdr["params"]["sip_code"] == "200", cdr
    finally:
        sink.sock.close()


def consumers(queue: str) -> int:
    """How many consumers RabbitMQ counts on `queue` (0 when it does not exist)."""
    import asyncio

    import aio_pika

    async def count() -> int:
        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            try:
                q = await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return 0
            return int(q.declaration_result.consumer_count or 0)

    return asyncio.run(count())


def test_a_released_gateway_beside_todays_on_one_queue(tmp_path: Path,
                                                       trees: dict[str, Path],
                                                       tmp_path_factory: pytest.TempPathFactory
                                                       ) -> None:
    """RabbitMQ mode: a 0.2.0 gateway and today's consume one named queue as competing
    consumers (a rolling upgrade of gateway replicas, or a rollback of one), each event
    delivered by whichever got it. Today's gateway bounds a named queue with RabbitMQ
    arguments, which a 0.2.0 gateway, declaring it without any, is refused
    (PRECONDITION_FAILED): the bounds are off here (`consumer_queue_expires = 0`,
    `consumer_queue_max_length = 0`), as README says to set them while 0.2.0 gateways
    share the queue."""
    tree = release_tree(trees, "0.2.0", tmp_path_factory.getbasetemp())
    exchange, queue = names()
    port = free_port()
    events = {"SIPMESH_EVENTS_RABBITMQ_URL": AMQP, "SIPMESH_EVENTS_EXCHANGE": exchange,
              "SIPMESH_EVENTS_CONSUMER_QUEUE": queue,
              "SIPMESH_EVENTS_CONSUMER_QUEUE_EXPIRES": "0",
              "SIPMESH_EVENTS_CONSUMER_QUEUE_MAX_LENGTH": "0"}
    m = MeshProcess(tmp_path, SIPMESH_MESH_SERVICES="gateway,edge,registrar",
                    SIPMESH_EDGE_LISTEN=f"udp:127.0.0.1:{port}", XDG_STATE_HOME=str(tmp_path),
                    **events)
    old: OldService | None = None
    sink = Sink()
    try:
        wait_until(lambda: options_ping("127.0.0.1", port) == 200, 60, "edge up")
        wait_until(lambda: consumers(queue) == 1, 30, "today's gateway consuming")
        # Subscribed through today's gateway; the old one reads the same store at start.
        mi(m.gateway_url, "event_subscribe", ["E_UL_CONTACT_INSERT", sink.address])
        old = OldService(tree, "gateway", dict(
            m.env, SIPMESH_DISCOVERY_BACKEND="embedded", SIPMESH_DISCOVERY_URL=m.registry_url,
            SIPMESH_GATEWAY_PORT=str(free_port())), tmp_path / "old-gateway.log")
        wait_until(lambda: {int(i["meta"]["pid"]) for i in instances(m, "gateway")} >= {
            old.proc.pid} and consumers(queue) == 2, 60, "the 0.2.0 gateway consuming too")
        users = [f"rq{i}" for i in range(8)]
        add_subscribers(tmp_path / "sipmesh" / "subscribers.sqlite", users)
        wait_until(lambda: register_once(tmp_path, port, users[0], free_port()), 30,
                   "a REGISTER through the edge answered 200", interval=0.5)
        for user in users[1:]:
            assert register_once(tmp_path, port, user, free_port()), user
        # Every event reaches the subscriber, whichever gateway took it off the queue
        # (RabbitMQ hands the two consumers turns: a gateway that dropped what it took
        # would lose about half).
        for user in users:
            wait_until(functools.partial(sink.event, "E_UL_CONTACT_INSERT", f"{user}@"), 30,
                       f"{user}'s E_UL_CONTACT_INSERT at the subscriber", interval=0)
    finally:
        sink.sock.close()
        if old is not None:
            old.terminate()
        m.stop()
        if old is not None:
            old.stop()
        delete(exchange, queue)
