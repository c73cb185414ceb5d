"""``load`` under real SIP traffic: sipp calls through the edge of a real ``sipmesh up``
make the mesh-wide ``load`` (SIP processes: the edge) rise, and it falls back when the
traffic stops; the OpenSIPS core counters count the calls."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.mesh_events.meshkit import line, mi, start_mesh
from tests.integration.spine.meshproc import MeshProcess
from tests.support.ports import reserve_port
from tests.support.waiting import eventually

SIPP = shutil.which("sipp")


def _bound(port: int) -> bool:
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as fh:
        return any(row.split()[1] == want for row in fh.readlines()[1:])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    if SIPP is None:
        pytest.skip("sipp is not installed (tests/peers/ensure.sh installs it)")
    m, _ = start_mesh(tmp_path_factory.mktemp("mesh_load"), threshold="0")
    yield m
    assert m.stop() == 0


async def _load(url: str) -> dict[str, int]:
    return dict(await mi(url, "get_statistics", [["load:", "core:rcv_requests"]]))


async def test_load_rises_under_sipp_and_falls_back_when_idle(mesh: MeshProcess) -> None:
    assert SIPP is not None
    edge = line(mesh, r"^endpoint edge sip sip:(127\.0\.0\.1):(\d+);transport=udp")
    edge_addr = f"{edge.group(1)}:{edge.group(2)}"
    uas_port = reserve_port()
    uas = subprocess.Popen([SIPP, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port),
                            "-nostdin"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    uac: subprocess.Popen[bytes] | None = None
    try:
        await eventually(lambda: _bound(uas_port), 10, "the sipp UAS to bind")
        before = await _load(mesh.gateway_url)
        # A steady stream of short calls through the edge, well inside what it handles.
        uac = subprocess.Popen(
            [SIPP, "-sn", "uac", "-i", "127.0.0.1", "-p", str(reserve_port()),
             f"127.0.0.1:{uas_port}", "-rsa", edge_addr, "-r", "150", "-m", "1500",
             "-d", "0", "-nostdin", "-timeout", "60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async def loaded() -> dict[str, int] | None:
            found = await _load(mesh.gateway_url)
            return found if found["load:load"] >= 10 else None

        peak = await eventually(loaded, 30, "load:load >= 10 under sipp", interval=0.25)
        assert 0 <= peak["load:load"] <= 100
        assert peak["load:load-all"] >= 1  # the edge is one of the processes
        rc = await asyncio.to_thread(uac.wait, 60)
        assert rc == 0, "sipp reported failed calls"
        after = await _load(mesh.gateway_url)
        assert after["core:rcv_requests"] - before["core:rcv_requests"] >= 1500 * 3
        counts = await mi(mesh.gateway_url, "get_statistics", [["core:"]])
        # OpenSIPS names, per method too: INVITE, ACK and BYE of every call. Like OpenSIPS,
        # the counters include retransmissions, which a loaded machine makes sipp send
        # (seen: 1,564 INVITEs), so the bound is every call once and no call counted twice.
        for method in ("invite", "ack", "bye"):
            assert 1500 <= counts[f"core:rcv_requests_{method}"] < 2 * 1500, counts
        assert counts["core:fwd_requests"] >= 1500 * 3
        assert counts["core:rcv_replies"] >= 1500 * 2 and counts["core:fwd_replies"] >= 1500 * 2
        assert counts["core:err_requests"] == 0 and counts["core:err_replies"] == 0
        async def quiet() -> dict[str, int] | None:
            found = await _load(mesh.gateway_url)
            return found if found["load:load"] <= 3 else None

        idle = await eventually(quiet, 15, "load:load <= 3 once idle", interval=0.25)
        assert idle["load:load"] < peak["load:load"]
        assert idle["load:load1m"] >= 1  # the minute still remembers the work
    finally:
        for proc in (uac, uas):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
