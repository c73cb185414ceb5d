"""The edge's security suite (issue 12): relay attempts from an untrusted address, replayed
and downgraded digest answers, forged Record-Route signatures.

The mesh runs on `make run`'s defaults in a network namespace whose loopback also carries
198.51.100.7: a caller outside `[edge] trusted` (127.0.0.0/8) reaching the edge at
127.0.0.1:5060, as an attacker on the network would.  Carol is a registered local user
(a sipp phone); alice's REGISTER is captured off the wire from sipp's message trace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from default_mesh import Mesh, default_mesh
from edge_harness import SCENARIOS, free_port, start_edge

from shared.sip import compute_response, parse_challenge, parse_message
from tests.integration.registrar.harness import add_user, start_registrar

pytestmark = pytest.mark.peers

ATTACKER = "198.51.100.7"
HERE = Path(__file__).resolve().parent
USERS = {"alice@127.0.0.1": "alice-pw", "carol@127.0.0.1": "carol-pw"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("security")
    with default_mesh("security", tmp, USERS, addresses=(f"{ATTACKER}/32",)) as m:
        yield m


def _sipp(mesh: Mesh, scenario: str, port: int, *args: str,
          ip: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    cmd = ["sipp", "-sf", str(SCENARIOS / scenario), "-i", ip, "-p", str(port),
           "127.0.0.1:5060", "-key", "domain", "127.0.0.1", "-m", "1", "-nostdin",
           "-timeout", "10s", "-timeout_error", *args]
    done: subprocess.CompletedProcess[str] = mesh.ns.run(cmd, cwd=mesh.tmp, text=True)
    return done


def test_relay_attempts_from_an_untrusted_address_are_refused(mesh: Mesh) -> None:
    # carol's phone: registered from 5080, a sipp UAS answering there.
    reg = _sipp(mesh, "phone_register.xml", 5080, "-s", "carol", "-au", "carol",
                "-ap", "carol-pw")
    assert reg.returncode == 0, reg.stdout[-1500:]
    # (a UAS that copies the Record-Route into its answers, as phones do: RFC 3261 §12.1.1)
    carol = mesh.ns.popen(["sipp", "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1",
                           "-p", "5080", "-m", "1", "-nostdin"], cwd=mesh.tmp,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = mesh.ns.run([sys.executable, str(HERE / "attacker.py"), "5060", ATTACKER,
                        "carol@127.0.0.1"], text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # An initial request with a preloaded Route: a relay, challenged (a registrar is there
    # to authenticate against), never forwarded to the loopback service.
    assert seen["preloaded_route"] == 407
    # "In-dialog" requests of no dialog of ours (a made-up To tag, a made-up signature):
    # relays as well, challenged like any.
    assert seen["forged_to_tag"] == 407 and seen["forged_signature"] == 407
    # A real dialog: the call itself is allowed (a local user), but its signed Route does
    # not carry a request anywhere else; the dialog's own BYE goes through.
    assert seen["call"] == 200
    assert seen["signed_route_elsewhere"] == 407
    assert seen["dialog_bye"] == 200
    assert seen["reached_loopback_service"] == 0
    assert carol.wait(10) == 0, "carol's phone did not see its call end"


def _capture_register(mesh: Mesh, port: int) -> tuple[str, str]:
    """alice registers with sipp (-trace_msg): (the Authorization header value it sent,
    the WWW-Authenticate challenge it answered)."""
    reg = _sipp(mesh, "phone_register.xml", port, "-s", "alice", "-au", "alice",
                "-ap", "alice-pw", "-trace_msg", "-message_file", str(mesh.tmp / "alice.msg"))
    assert reg.returncode == 0, reg.stdout[-1500:]
    trace = (mesh.tmp / "alice.msg").read_text()
    auth = re.search(r"^Authorization: (.*)$", trace, re.M)
    challenge = re.search(r"^WWW-Authenticate: (.*)$", trace, re.M)
    assert auth and challenge, trace[-2000:]
    return auth.group(1).strip(), challenge.group(1).strip()


def test_a_captured_register_replayed_with_other_contacts_is_challenged(mesh: Mesh) -> None:
    auth, _challenge = _capture_register(mesh, 5084)
    assert "qop=auth" in auth and "nc=00000001" in auth
    # From the attacker's address, the same credentials with the attacker's Contact.
    replay = _sipp(mesh, "replay_register.xml", 5085, "-s", "alice", "-key", "auth", auth,
                   ip=ATTACKER)
    assert replay.returncode == 0, replay.stdout[-1500:]  # 401: the count was used already
    assert "attacker" not in mesh.contacts("alice@127.0.0.1")


def test_an_answer_without_qop_is_refused_when_qop_was_offered(mesh: Mesh) -> None:
    # An on-path attacker strips qop from the 401; the phone answers RFC 2069 style (no
    # qop, no nc): such an answer could be replayed until the nonce expires.  Refused.
    _auth, challenge = _capture_register(mesh, 5086)
    downgraded = _rfc2069_answer(challenge, "alice", "alice-pw")
    replay = _sipp(mesh, "replay_register.xml", 5087, "-s", "alice", "-key", "auth",
                   downgraded, ip=ATTACKER)
    assert replay.returncode == 0, replay.stdout[-1500:]
    assert "attacker" not in mesh.contacts("alice@127.0.0.1")


def _rfc2069_answer(challenge: str, user: str, password: str,
                    uri: str = "sip:127.0.0.1") -> str:
    c = parse_challenge(challenge)
    response = compute_response(username=user, password=password, realm=c.realm,
                                method="REGISTER", uri=uri, nonce=c.nonce,
                                algorithm=c.algorithm)
    return (f'Digest username="{user}", realm="{c.realm}", nonce="{c.nonce}", '
            f'uri="{uri}", response="{response}", algorithm={c.algorithm}')


def test_old_phones_allowed_explicitly_get_one_time_nonces(tmp_path: Path) -> None:
    # `[edge] auth_allow_rfc2069 = true`: an answer without qop is accepted once per nonce.
    store = tmp_path / "subscribers.sqlite"
    add_user(store, "olga@127.0.0.1", "olga-pw")
    reg = start_registrar(store)
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc,
                       "SIPMESH_EDGE_AUTH_ALLOW_RFC2069": "true"})
    try:
        first = _challenge_over_udp(edge.port, free_port())
        answer = _rfc2069_answer(first, "olga", "olga-pw", f"sip:127.0.0.1:{edge.port}")
        base = ["sipp", "-i", "127.0.0.1", f"127.0.0.1:{edge.port}", "-s", "olga",
                "-key", "domain", f"127.0.0.1:{edge.port}", "-key", "auth", answer,
                "-m", "1", "-nostdin", "-timeout", "10s", "-timeout_error"]
        ok = subprocess.run(["sipp", "-sf", str(SCENARIOS / "register_given_credentials.xml"),
                             "-p", str(free_port()), *base[1:]], cwd=tmp_path,
                            capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stdout[-1500:]
        again = subprocess.run(["sipp", "-sf", str(SCENARIOS / "replay_register.xml"),
                                "-p", str(free_port()), *base[1:]], cwd=tmp_path,
                               capture_output=True, timeout=30)
        assert again.returncode == 0, again.stdout[-1500:]  # the nonce served once
    finally:
        edge.stop()
        reg.stop()
    assert not edge.tracebacks()


def _challenge_over_udp(edge_port: int, port: int) -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
        s.sendto((f"REGISTER sip:127.0.0.1:{edge_port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-olga;rport\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:olga@127.0.0.1>;tag=o\r\n"
                  f"To: <sip:olga@127.0.0.1>\r\nCall-ID: olga-1\r\nCSeq: 1 REGISTER\r\n"
                  f"Contact: <sip:olga@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n").encode(),
                 ("127.0.0.1", edge_port))
        s.settimeout(5)
        data, _ = s.recvfrom(65535)
    answer = parse_message(data)
    return str(answer.get("WWW-Authenticate"))


def test_a_dialog_set_up_before_the_edge_is_killed_goes_on_after_its_restart(
        mesh: Mesh) -> None:
    # The Record-Route key of `make run`'s default lives in the state directory
    # ($XDG_STATE_HOME/sipmesh/edge-rr.key): kill -9 of the edge loses no dialog; the
    # untrusted caller's BYE still verifies on the restarted edge.
    reg = _sipp(mesh, "phone_register.xml", 5088, "-s", "carol", "-au", "carol",
                "-ap", "carol-pw")
    assert reg.returncode == 0, reg.stdout[-1500:]
    carol = mesh.ns.popen(["sipp", "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1",
                           "-p", "5088", "-m", "1", "-nostdin"], cwd=mesh.tmp,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = mesh.tmp / "dialog.json"
    attacker = [sys.executable, str(HERE / "attacker.py"), "5060", ATTACKER, "carol@127.0.0.1"]
    started = mesh.ns.run([*attacker, "start", str(state)], text=True)
    assert started.returncode == 0, started.stderr
    assert (mesh.tmp / "state" / "sipmesh" / "edge-rr.key").exists()
    pid = int([ln for ln in mesh.lines or [] if ln.startswith("started edge pid ")][-1].split()[-1])
    os.kill(pid, signal.SIGKILL)
    mesh.expect("started edge pid ")  # the supervisor restarts it
    mesh.expect("endpoint edge sip ")
    bye = mesh.ns.run([*attacker, "bye", str(state)], text=True)
    assert bye.returncode == 0, bye.stderr
    assert json.loads(bye.stdout) == {"bye": 200}
    assert carol.wait(10) == 0
