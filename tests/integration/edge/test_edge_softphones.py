"""One call between two real softphones through the edge: baresip calls linphonec.

baresip (headless, audio from an 8 kHz WAV file that ends after 3 s, which hangs up) uses
the edge as its outbound proxy; linphonec auto-answers.  Both sides must report the call
connected and ended, so INVITE/180/200/ACK and the BYE all crossed the edge.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import pytest
from edge_harness import Edge, free_port, is_bound, stop_process, wait_until

pytestmark = pytest.mark.peers


def _tone(path: Path, seconds: int = 3) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
                               for i in range(8000 * seconds)))


def test_baresip_calls_linphonec_through_the_edge(edge: Edge, tmp_path: Path) -> None:
    for tool in ("baresip", "linphonec"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: tests/peers/ensure.sh installs it")
    lp_port, bs_port = free_port(), free_port()
    home = tmp_path / "home"
    (home / ".local/share/linphone").mkdir(parents=True)  # else linphonec never listens
    rc = tmp_path / "linphonerc"
    rc.write_text(f"[sip]\nsip_port={lp_port}\nsip_tcp_port=0\nbind_address=127.0.0.1\n"
                  f"[rtp]\naudio_rtp_port={free_port()}\n")
    lp_log = tmp_path / "linphonec.out"
    linphonec = subprocess.Popen(
        ["linphonec", "-c", str(rc), "-a"], stdin=subprocess.PIPE,  # stdin open: EOF quits
        stdout=lp_log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp_path,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    try:
        wait_until(lambda: is_bound(lp_port, "udp"), 20, "linphonec listening")
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
            f'<sip:alice@127.0.0.1>;regint=0;outbound="sip:{edge.address}";'
            "audio_codecs=PCMU\n")
        baresip = subprocess.run(
            ["baresip", "-f", str(conf), "-e", f"/dial sip:bob@127.0.0.1:{lp_port}", "-t", "8"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        out = baresip.stdout.decode(errors="replace")
        assert "Call established" in out, out[-2000:]
        assert "terminated" in out, out[-2000:]
        wait_until(lambda: "ended" in lp_log.read_text(errors="replace"), 10,
                   "linphonec to see the BYE")
        lp = lp_log.read_text(errors="replace")
        assert "connected" in lp and "Media streams established" in lp
    finally:
        stop_process(linphonec)
