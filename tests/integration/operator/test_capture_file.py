"""``sip_trace`` to a pcap file, as an operator sets it up (issue 21): ``[edge] hep_dest
= "file:..."`` and ``sip_trace = true`` in a real ``sipmesh up``; a sipp call through the
edge lands in the file, every message both ways, and sngrep (a real reader) opens it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.operator.harness import OperatorMesh, start
from tests.support.pcap_reader import read
from tests.support.ports import reserve_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def om(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorMesh]:
    tmp = tmp_path_factory.mktemp("capfile")
    m = start(tmp, f'hep_dest = "file:{tmp}/all.pcap"\nsip_trace = true\n',
              trust_loopback=True)
    yield m
    assert m.mesh.stop() == 0


async def test_sip_trace_writes_a_pcap_file_sngrep_reads(om: OperatorMesh) -> None:
    path = om.tmp / "all.pcap"
    uas_port = reserve_port()
    uas = om.uas(uas_port)
    try:
        assert await asyncio.to_thread(om.cli, "sip_trace") == "on"
        done = await asyncio.to_thread(om.call, f"127.0.0.1:{uas_port}")
        assert done.returncode == 0, done.stdout[-2000:]
    finally:
        uas.terminate()
        uas.wait(10)

    def starts() -> list[bytes]:
        return [f.payload.split(b"\r\n", 1)[0] for f in read(path)]

    # INVITE, 180, 200, ACK, BYE, 200 each in and out, and the edge's own 100 Trying
    await eventually(lambda: len(starts()) >= 13, 15, "the call in the file")
    frames = read(path)
    edge = ("127.0.0.1", om.sip_port)
    assert any(f.dst == edge and f.payload.startswith(b"INVITE ") for f in frames)
    assert any(f.dst == ("127.0.0.1", uas_port) and f.payload.startswith(b"BYE ")
               for f in frames)
    assert b"SIP/2.0 100 Trying" in starts()
    if shutil.which("sngrep") is not None:
        run = subprocess.run(["sngrep", "-N", "-I", str(path)], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 0 and "Dialog count: 1" in run.stdout, run.stdout
