"""A real registrar behind a real edge, driven by sipp as phones are (RFC 3261 §10, §22).

sipp registers with digest authentication (401, then credentials from -au/-ap), a UAS that
registered is called by its AOR through the edge, unknown/unregistered users get 404/480,
and a caller outside the trusted networks must answer a 407 with a subscriber's password.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.edge.edge_harness import (
    SCENARIOS as EDGE_SCENARIOS,
)
from tests.integration.edge.edge_harness import (
    Edge,
    Sipp,
    free_port,
    start_edge,
    summary,
)
from tests.integration.registrar.harness import (
    SCENARIOS,
    Registrar,
    add_user,
    add_users,
    start_registrar,
)

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registrar") / "subscribers.sqlite"
    add_users(path, {f"{user}@127.0.0.1": f"{user}-pw"
                     for user in ("alice", "bob", "carol", "hank")})
    return path


@pytest.fixture(scope="module")
def registrar(store: Path) -> Iterator[Registrar]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: run tests/peers/ensure.sh (make test does)")
    reg = start_registrar(store)
    yield reg
    assert reg.stop() == 0, "the registrar must stop cleanly on SIGTERM"


@pytest.fixture(scope="module")
def edge(registrar: Registrar) -> Iterator[Edge]:
    proc = start_edge({"SIPMESH_EDGE_REGISTRAR": registrar.grpc})
    yield proc
    proc.stop()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    runner = Sipp(tmp_path)
    yield runner
    runner.stop()


def mi(url: str, method: str, params: object = None) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def register(workdir: Path, edge: Edge, user: str, password: str, port: int,
             scenario: str = "register_auth.xml", transport: str = "u1"
             ) -> subprocess.CompletedProcess[bytes]:
    cmd = ["sipp", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
           "-t", transport, edge.address, "-s", user, "-au", user, "-ap", password, "-m", "1",
           "-nostdin", "-timeout", "15s", "-timeout_error"]
    return subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=45)


def test_phone_registers_with_digest_and_the_binding_is_listed(
        edge: Edge, registrar: Registrar, tmp_path: Path) -> None:
    port = free_port()
    result = register(tmp_path, edge, "alice", "alice-pw", port)
    assert result.returncode == 0, summary(result)
    shown = mi(registrar.mi, "ul_show_contact", ["location", "alice@127.0.0.1"])["result"]
    [contact] = shown["Contacts"]
    assert contact["Contact"] == f"sip:alice@127.0.0.1:{port}"
    assert 290 <= contact["Expires"] <= 300 and "Received" not in contact  # not natted
    dump = mi(registrar.mi, "ul_dump")["result"]
    assert "alice@127.0.0.1" in [a["AOR"] for a in dump["Domains"][0]["AORs"]]


def test_registrations_complete_under_packet_loss(registrar: Registrar,
                                                  tmp_path: Path) -> None:
    # sipp drops 10% of what it sends and receives: lost REGISTERs are retransmitted, a
    # retransmitted first REGISTER gets its challenge again (answered statelessly by the
    # edge, the same bytes within T2), a retransmitted authenticated one gets the 200 its
    # transaction keeps.  Every one of 40 registrations must still end in 200.  The edge
    # runs with the RFC's T1 (500 ms, as sipp's retransmissions): its transactions must
    # outlive the phone's retransmissions (Timer J = 64*T1), which the shared test edge's
    # short T1 does not promise.
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": registrar.grpc, "SIPMESH_EDGE_T1": "0.5"})
    try:
        cmd = ["sipp", "-sf", str(SCENARIOS / "register_auth.xml"), "-i", "127.0.0.1",
               "-p", str(free_port()), "-t", "u1", edge.address, "-s", "hank", "-au",
               "hank", "-ap", "hank-pw", "-m", "40", "-r", "20", "-lost", "10",
               "-max_non_invite_retrans", "10", "-nostdin", "-timeout", "60s",
               "-timeout_error"]
        result = subprocess.run(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=90)
        assert result.returncode == 0, summary(result)
    finally:
        edge.stop()


def test_wrong_password_is_challenged_again(edge: Edge, tmp_path: Path) -> None:
    result = register(tmp_path, edge, "carol", "not-her-password", free_port(),
                      scenario="register_wrong_password.xml")
    assert result.returncode == 0, summary(result)  # the scenario expects the second 401


def test_registered_uas_is_called_by_its_aor_through_the_edge(
        edge: Edge, sipp: Sipp, tmp_path: Path) -> None:
    port = free_port()
    assert register(tmp_path, edge, "bob", "bob-pw", port).returncode == 0
    uas = sipp.uas("uas", port)  # the phone, listening where it registered
    # sip:bob@<edge> is a local AOR: the edge looks it up and forwards to the binding.
    result = sipp.uac("uac", edge, edge.address, calls=3, service="bob")
    assert result.returncode == 0, summary(result)
    assert uas.poll() is None


def test_uas_registered_over_tcp_is_called_over_tcp(
        edge: Edge, sipp: Sipp, tmp_path: Path) -> None:
    # Over TCP the REGISTER leaves from an ephemeral port: that is no NAT, so the call goes
    # to the Contact (the UAS listening port), over TCP as it came in.
    port = free_port()
    assert register(tmp_path, edge, "hank", "hank-pw", port, transport="t1").returncode == 0
    sipp.uas("uas", port, transport="t1")
    result = sipp.uac("uac", edge, edge.address, calls=2, service="hank", transport="t1")
    assert result.returncode == 0, summary(result)


def _expect(tmp_path: Path, status: int) -> str:
    text = (SCENARIOS / "call_expect.xml").read_text().replace("[expect]", str(status))
    path = tmp_path / f"call_expect_{status}.xml"
    path.write_text(text)
    return str(path)


def test_unknown_user_gets_404_and_unregistered_user_480(
        edge: Edge, sipp: Sipp, tmp_path: Path) -> None:
    nobody = sipp.uac(_expect(tmp_path, 404), edge, edge.address, service="nobody")
    assert nobody.returncode == 0, summary(nobody)
    carol = sipp.uac(_expect(tmp_path, 480), edge, edge.address, service="carol")
    assert carol.returncode == 0, summary(carol)


def test_untrusted_caller_answers_407_with_a_subscriber_password(
        registrar: Registrar, store: Path, sipp: Sipp) -> None:
    # The edge trusts nobody: sipp (From sipp@127.0.0.1) relays only after a 407 answered
    # with the password of subscriber sipp@127.0.0.1 from the registrar's store.
    add_user(store, "sipp@127.0.0.1", "secret")
    edge = start_edge({"SIPMESH_EDGE_TRUSTED": "", "SIPMESH_EDGE_REGISTRAR": registrar.grpc})
    try:
        uas = free_port()
        sipp.uas(str(EDGE_SCENARIOS / "uas_rr.xml"), uas)
        result = sipp.uac(str(EDGE_SCENARIOS / "uac_proxy_auth.xml"), edge,
                          f"127.0.0.1:{uas}", calls=2, timeout=15)
        assert result.returncode == 0, summary(result)
        refused = sipp.uac("uac", edge, f"127.0.0.1:{uas}", calls=1, timeout=5)
        assert refused.returncode != 0  # no credentials: never relayed
    finally:
        edge.stop()


def test_load_from_sql_brings_bindings_back_after_kill_9(tmp_path: Path) -> None:
    # The default configuration (restart_persistency load-from-sql, write-through): the
    # binding is in the SQL table before the 200 leaves; SIGKILL, restart: it is back.
    import os
    import signal
    import sqlite3

    db = tmp_path / "subscribers.sqlite"
    add_user(db, "frank@127.0.0.1", "frank-pw")
    reg = start_registrar(db)
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc})
    try:
        port = free_port()
        assert register(tmp_path, edge, "frank", "frank-pw", port).returncode == 0
        with sqlite3.connect(db) as conn:  # no waiting: stored before it was acknowledged
            assert conn.execute("SELECT aor FROM location").fetchall() == [
                ("frank@127.0.0.1",)]
        os.kill(reg.proc.pid, signal.SIGKILL)
        reg.proc.wait(10)
        reg = start_registrar(db)
        [contact] = mi(reg.mi, "ul_show_contact", ["location", "frank@127.0.0.1"]
                       )["result"]["Contacts"]
        assert contact["Contact"] == f"sip:frank@127.0.0.1:{port}"
        assert mi(reg.mi, "ul_sync", ["location"])["result"] == "OK"
    finally:
        edge.stop()
        reg.stop()
