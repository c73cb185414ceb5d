"""Real phones configured as the README says call each other by AOR (issue 11).

`sipmesh up` runs on `make run`'s defaults (gateway, edge on 127.0.0.1:5060, registrar;
nothing configured) inside a network namespace of the test's own, so 5060 is really
5060 and nothing else on the machine is touched.  Three phones register with their
passwords, each with the edge as its outbound proxy (a preloaded `Route: <sip:127.0.0.1:
5060;lr>`, so `INVITE sip:bob@127.0.0.1` names the edge's host): baresip (alice),
linphonec (bob) and sipp (carol: one sipp registers, a sipp UAS then answers on that
port).  Calls: alice -> bob, bob -> carol, sipp-as-a-phone -> alice.  Before the fix the
edge took such a Request-URI for a strict-routed one, replaced it by its own Route and
answered 404.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from default_mesh import Mesh, default_mesh
from edge_harness import SCENARIOS, wait_until

pytestmark = pytest.mark.peers

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    for tool in ("baresip", "linphonec", "sipp"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: tests/peers/ensure.sh installs it")
    tmp = tmp_path_factory.mktemp("phones")
    with default_mesh("phones", tmp, {f"{u}@127.0.0.1": p for u, p in USERS.items()}) as m:
        yield m


def _tone(path: Path, seconds: int = 3) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i
                                                                         / 8000)))
                               for i in range(8000 * seconds)))


def _linphonec(mesh: Mesh) -> tuple[subprocess.Popen[bytes], Path]:
    home = mesh.tmp / "lphome"
    (home / ".local/share/linphone").mkdir(parents=True, exist_ok=True)
    rc = mesh.tmp / "linphonerc"
    # The README's settings: SIP server 127.0.0.1 (the edge), user bob, his password.
    rc.write_text("[sip]\nsip_port=5072\nsip_tcp_port=0\nbind_address=127.0.0.1\n"
                  "default_proxy=0\n[rtp]\naudio_rtp_port=7078\n"
                  "[proxy_0]\nreg_proxy=<sip:127.0.0.1:5060>\nreg_route=<sip:127.0.0.1:5060;lr>\n"
                  "reg_identity=sip:bob@127.0.0.1\nreg_expires=600\nreg_sendregister=1\n"
                  "publish=0\n[auth_info_0]\nusername=bob\nuserid=bob\npasswd=bob-pw\n"
                  "realm=127.0.0.1\ndomain=127.0.0.1\n")
    log = mesh.tmp / "linphonec.out"
    proc = mesh.ns.popen(["linphonec", "-c", str(rc), "-a"], stdin=subprocess.PIPE,
                         stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=mesh.tmp,
                         env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    return proc, log


def _baresip(mesh: Mesh, dial: str) -> tuple[subprocess.Popen[bytes], Path]:
    conf = mesh.tmp / "baresip"
    conf.mkdir(exist_ok=True)
    _tone(mesh.tmp / "tone.wav")
    (conf / "config").write_text(
        "sip_listen\t127.0.0.1:5074\nnet_interface\t127.0.0.1\n"
        f"audio_player\taufile,{mesh.tmp / 'heard.wav'}\n"
        f"audio_source\taufile,{mesh.tmp / 'tone.wav'}\n"
        f"audio_alert\taufile,{mesh.tmp / 'alert.wav'}\n"
        "module_path\t/usr/lib/baresip/modules\nmodule\tstdio.so\nmodule\tg711.so\n"
        "module\taufile.so\nmodule_app\taccount.so\nmodule_app\tmenu.so\n")
    (conf / "accounts").write_text(
        '<sip:alice@127.0.0.1>;auth_pass=alice-pw;outbound="sip:127.0.0.1:5060";'
        "regint=600;answermode=auto;audio_codecs=PCMU\n")
    log = mesh.tmp / "baresip.out"
    proc = mesh.ns.popen(["baresip", "-f", str(conf), "-e", f"/dial {dial}", "-t", "45"],
                         cwd=mesh.tmp, stdin=subprocess.DEVNULL, stdout=log.open("wb"),
                         stderr=subprocess.STDOUT)
    return proc, log


def _sipp(mesh: Mesh, scenario: str, port: int, *args: str) -> list[str]:
    return ["sipp", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
            "127.0.0.1:5060", "-key", "domain", "127.0.0.1", "-m", "1", "-nostdin",
            "-timeout", "20s", "-timeout_error", *args]


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


def test_phones_with_the_edge_as_outbound_proxy_call_each_other_by_aor(mesh: Mesh) -> None:
    linphonec, lp_log = _linphonec(mesh)
    assert linphonec.stdin is not None
    wait_until(lambda: mesh.registered("bob@127.0.0.1"), 30, "linphonec (bob) registered",
               interval=0.5)
    # sipp as carol's phone: registers from 5080, then a UAS answers there.
    reg = mesh.ns.run(_sipp(mesh, "phone_register.xml", 5080, "-s", "carol", "-au", "carol",
                            "-ap", "carol-pw"), cwd=mesh.tmp)
    assert reg.returncode == 0, reg.stdout[-1500:]
    carol_phone = mesh.ns.popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", "5080",
                                 "-m", "1", "-nostdin"], cwd=mesh.tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # alice (baresip) registers and calls bob by his AOR; the 3 s tone ends the call.
    baresip, bs_log = _baresip(mesh, "sip:bob@127.0.0.1")
    wait_until(lambda: "Call established: sip:bob@127.0.0.1" in _text(bs_log), 30,
               "alice's call to bob established")
    wait_until(lambda: "ended" in _text(lp_log), 20, "bob to see the call end")
    assert "connected" in _text(lp_log)
    assert mesh.registered("alice@127.0.0.1")
    # bob (linphonec) calls carol by her AOR; the sipp phone answers, bob hangs up.
    linphonec.stdin.write(b"call sip:carol@127.0.0.1\n")
    linphonec.stdin.flush()
    wait_until(lambda: _text(lp_log).count("connected") >= 2, 20, "bob's call to carol")
    linphonec.stdin.write(b"terminate\n")
    linphonec.stdin.flush()
    assert carol_phone.wait(20) == 0, "carol's phone did not see the call through"
    # A sipp phone calls alice by her AOR through its outbound proxy; alice auto-answers.
    call = mesh.ns.run(_sipp(mesh, "phone_call.xml", 5082, "-s", "alice", "-key", "caller",
                             "carol"), cwd=mesh.tmp)
    assert call.returncode == 0, call.stdout[-1500:]
    wait_until(lambda: "Call established: sip:carol@127.0.0.1" in _text(bs_log), 10,
               "alice to report carol's call")
    for proc in (baresip, linphonec):
        mesh.ns.stop(proc)
