"""Two real softphones (baresip, headless) through a `sipmesh up` mesh whose edge trusts
nobody: alice publishes her presence, bob watches her (a buddy with `presence=p2p`),
both answering the edge's digest challenge (407) with their passwords from the
registrar's subscriber store. Bob's SUBSCRIBE is answered, the NOTIFYs carrying alice's
PIDF reach bob and are answered 200, and bob shows alice online."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.edge.edge_harness import free_port, stop_process
from tests.integration.presence.harness import PresenceMesh, wait_for

pytestmark = pytest.mark.peers


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[PresenceMesh]:
    if shutil.which("baresip") is None:
        pytest.fail("baresip missing: tests/peers/ensure.sh installs it")
    m = PresenceMesh(tmp_path, SIPMESH_EDGE_TRUSTED="", SIPMESH_EDGE_LOCAL_DOMAINS="127.0.0.1")
    yield m
    m.stop()


def _phone(tmp: Path, name: str, account: str, contacts: str = "",
           commands: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], Path]:
    conf = tmp / f"baresip-{name}"
    conf.mkdir()
    (conf / "config").write_text(
        f"sip_listen\t127.0.0.1:{free_port()}\nnet_interface\t127.0.0.1\n"
        "module_path\t/usr/lib/baresip/modules\nmodule\tstdio.so\n"
        "module_app\taccount.so\nmodule_app\tcontact.so\nmodule_app\tpresence.so\n"
        "module_app\tmenu.so\n")
    (conf / "accounts").write_text(account + "\n")
    (conf / "contacts").write_text(contacts + "\n")
    log = tmp / f"baresip-{name}.out"
    execute = [arg for command in commands for arg in ("-e", command)]
    proc = subprocess.Popen(["baresip", "-f", str(conf), "-t", "40", "-s", *execute], cwd=tmp,
                            stdin=subprocess.DEVNULL, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    return proc, log


def test_baresip_watches_another_baresip_with_digest(mesh: PresenceMesh,
                                                     tmp_path: Path) -> None:
    for user in ("alice", "bob"):
        done = mesh.mesh.cli("user", "add", f"{user}@127.0.0.1", f"{user}-pw")
        assert done.returncode == 0, done.stderr
    proxy = f'outbound="sip:{mesh.edge}"'
    alice, alice_log = _phone(tmp_path, "alice", f"<sip:alice@127.0.0.1>;auth_pass=alice-pw;"
                                                 f"regint=600;pubint=60;{proxy}",
                              commands=("/presence_online",))
    bob, bob_log = _phone(tmp_path, "bob", f"<sip:bob@127.0.0.1>;auth_pass=bob-pw;"
                                           f"regint=600;{proxy}",
                          '"alice" <sip:alice@127.0.0.1>;presence=p2p')
    try:
        # baresip may send two initial PUBLISHes (its start and the command): two
        # publications, each with its own entity-tag (RFC 3903 §4).
        pubs = wait_for(lambda: [p for p in mesh.publications("alice@127.0.0.1")
                                 if p["basic"] == "open"], 30,
                        "alice's publication (open) in pres_phtable_list")
        assert all(p["sender"].startswith("sip:alice@") for p in pubs)
        (sub,) = wait_for(lambda: mesh.subscriptions("alice@127.0.0.1"), 30,
                          "bob's subscription to alice")
        assert (sub["from_user"], sub["status"]) == ("bob", "active")

        def notified() -> bool:
            # bob's SIP trace (-s): a NOTIFY from the edge carrying alice's open tuple.
            return any(m.startswith("NOTIFY ") and "<basic>open</basic>" in m
                       and 'entity="sip:alice@127.0.0.1"' in m
                       for m in _received(bob_log, mesh.edge))

        wait_for(notified, 30, "bob to receive a NOTIFY with alice's PIDF")
        wait_for(lambda: mesh.mi("get_statistics", [["presence:"]]).get(
            "presence:notify_sent", 0) >= 1, 10, "the NOTIFY answered 2xx by bob")
        stats = mesh.mi("get_statistics", [["presence:"]])
        assert stats.get("presence:notify_failed", 0) == 0, stats
    finally:
        for proc in (alice, bob):
            stop_process(proc)
    # Both phones were challenged (407) before their PUBLISH / SUBSCRIBE went through.
    for log, method in ((alice_log, "PUBLISH"), (bob_log, "SUBSCRIBE")):
        got = _received(log, mesh.edge)
        assert any(m.startswith("SIP/2.0 407") and f" {method}" in m for m in got), method
        assert any(m.startswith("SIP/2.0 200") and f" {method}" in m for m in got), method


def _received(log: Path, edge: str) -> list[str]:
    """The SIP messages a baresip trace (-s) shows as received from `edge`."""
    out = []
    for block in log.read_text(errors="replace").split("#\n")[1:]:
        head, _, rest = block.partition("\n")
        if head.startswith("UDP ") and head.split(" -> ")[0].endswith(edge):
            out.append(rest)
    return out
