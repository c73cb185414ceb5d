"""A real softphone (baresip, headless) registers through the edge with a password (401,
digest against the registrar's subscriber store) and receives a call from sipp placed to
its AOR; baresip auto-answers and the call completes (INVITE/200/ACK/BYE across the edge)."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.edge.edge_harness import (
    Edge,
    Sipp,
    free_port,
    start_edge,
    summary,
    wait_until,
)
from tests.integration.registrar.harness import Registrar, add_user, start_registrar
from tests.integration.registrar.test_registrar_sipp import mi

pytestmark = pytest.mark.peers


def _tone(path: Path, seconds: int = 2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
            for i in range(8000 * seconds)))


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Registrar, Edge]]:
    if shutil.which("baresip") is None:
        pytest.fail("baresip missing: tests/peers/ensure.sh installs it")
    store = tmp_path / "subscribers.sqlite"
    add_user(store, "erin@127.0.0.1", "erin-pw")
    reg = start_registrar(store)
    # The phone's domain is 127.0.0.1 and the edge its outbound proxy (a preloaded Route).
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc,
                       "SIPMESH_EDGE_LOCAL_DOMAINS": "127.0.0.1"})
    yield reg, edge
    edge.stop()
    reg.stop()


def test_baresip_registers_with_a_password_and_receives_a_call(
        mesh: tuple[Registrar, Edge], tmp_path: Path) -> None:
    reg, edge = mesh
    bs_port = free_port()
    conf = tmp_path / "baresip"
    conf.mkdir()
    _tone(tmp_path / "tone.wav")
    (conf / "config").write_text(
        f"sip_listen\t127.0.0.1:{bs_port}\nnet_interface\t127.0.0.1\n"
        f"audio_player\taufile,{tmp_path / 'heard.wav'}\n"
        f"audio_source\taufile,{tmp_path / 'tone.wav'}\n"
        f"audio_alert\taufile,{tmp_path / 'alert.wav'}\n"
        "module_path\t/usr/lib/baresip/modules\nmodule\tstdio.so\nmodule\tg711.so\n"
        "module\taufile.so\nmodule_app\taccount.so\nmodule_app\tmenu.so\n")
    (conf / "accounts").write_text(
        f'<sip:erin@127.0.0.1>;auth_pass=erin-pw;outbound="sip:{edge.address}";'
        "regint=600;answermode=auto;audio_codecs=PCMU\n")
    log = tmp_path / "baresip.out"
    phone = subprocess.Popen(["baresip", "-f", str(conf), "-t", "25"], cwd=tmp_path,
                             stdin=subprocess.DEVNULL, stdout=log.open("wb"),
                             stderr=subprocess.STDOUT)
    try:
        def registered() -> bool:
            answer = mi(reg.mi, "ul_show_contact", ["location", "erin@127.0.0.1"])
            return "result" in answer

        wait_until(registered, 20, "baresip registered")
        wait_until(lambda: "200 OK () [1 binding]" in log.read_text(errors="replace"), 10,
                   "baresip to see its 200 listing one binding")
        sipp = Sipp(tmp_path)
        try:
            result = sipp.uac("uac", edge, edge.address, service="erin", calls=1, timeout=20)
        finally:
            sipp.stop()
        assert result.returncode == 0, summary(result) + log.read_text(errors="replace")[-2000:]
        wait_until(lambda: "Call established" in log.read_text(errors="replace"), 10,
                   "baresip to report the call")
    finally:
        if phone.poll() is None:
            phone.terminate()
            try:
                phone.wait(5)
            except subprocess.TimeoutExpired:
                phone.kill()
                phone.wait(5)
