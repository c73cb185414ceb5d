"""SIPREC through a dialog owner's death (issue 17's failover test): `sipmesh up --nodes 3`
with gateway, edge, three clustered dialog nodes (dialogs in memory only, replicated),
the media broker on the real rtpengine and the recorder, `[edge] media_anchor` and
`[edge] siprec_srs` set, the SRS stand-in (services/siprec/testing/fake_srs.py).

Two recorded sipp calls with RTP: one the caller ends with BYE, one whose lifetime
(set by routing, `t<N>` users) runs out so that a dialog node ends it with BYE to both
sides.  While both are recorded, the dialog node the edge streams to (the one that
learnt the calls first) is killed with SIGKILL.  When the calls end, both recordings still
end with BYE to the SRS: the recording's state lives in the recorder (its own store),
not in the dialog, and its stop comes from the edge that relays the call's BYE or sends
the surviving dialog node's BYE (its Uac API), whichever node owns the dialog then.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.siprec.testing.fake_srs import FakeSrs
from tests.cluster.test_dialog_cluster import node_dialogs, node_mi, nodes, pid_of
from tests.integration.dialog.harness import DialogMesh, rpc, sipp_output, wait_for
from tests.integration.edge.edge_harness import free_port
from tests.integration.media.harness import RtpEngine, free_udp_port
from tests.integration.media.test_media_calls import sipmesh
from tests.support.service_logs import ServiceLogs

pytestmark = pytest.mark.peers
SIPREC = Path(__file__).resolve().parents[1] / "integration" / "siprec" / "scenarios"
MEDIA = Path(__file__).resolve().parents[1] / "integration" / "media" / "scenarios"
HOLD_MS = 12000
LIFETIME = 12  # s: the dialog timeout of the second call (user t12)


def _uac(mesh: DialogMesh, scenario: str, uas: int, user: str, hold_ms: int = 0
         ) -> subprocess.Popen[bytes]:
    port = free_port()
    cmd = ["sipp", "-sf", str(SIPREC / scenario), "-i", "127.0.0.1", "-p", str(port),
           "-mp", str(free_port()), "-rsa", mesh.edge, f"127.0.0.1:{uas}", "-s", user,
           "-m", "1", "-d", str(hold_ms), "-nostdin", "-timeout", "60s", "-timeout_error",
           "-trace_err", "-error_file", str(mesh.tmp / f"uac_{port}_err.log")]
    proc = subprocess.Popen(cmd, cwd=mesh.tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    mesh.sipp.append(proc)
    return proc


def _recordings(mesh: DialogMesh) -> list[dict[str, Any]]:
    answer = rpc(mesh.gateway, "siprec_list")
    return list(answer.get("result", {}).get("Recordings", []))


async def test_a_killed_dialog_owner_still_ends_the_recordings(
        tmp_path: Path, service_logs: ServiceLogs) -> None:
    engine = RtpEngine(tmp_path).start()
    service_logs.add("rtpengine", tmp_path / f"rtpengine-{engine.ng_port}.log")
    service_logs.add("sipmesh up (every service)", tmp_path / "mesh.stderr")
    service_logs.add("sipp errors", lambda: "\n".join(
        f"{f.name}:\n{f.read_text(errors='replace')}"
        for f in sorted(tmp_path.glob("uac_*_err.log"))))
    srs = await FakeSrs(port=free_udp_port()).start()
    db = tmp_path / "media.sqlite"
    mesh: DialogMesh | None = None
    try:
        added = sipmesh("rtpengine", "add", engine.url, "--db", str(db))
        assert added.returncode == 0, added.stderr
        mesh = await asyncio.to_thread(
            DialogMesh, tmp_path, nodes=3, services="gateway,edge,dialog,media,siprec",
            SIPMESH_DIALOG_DB_URL="none", SIPMESH_MESH_BACKOFF_INITIAL="6",
            SIPMESH_MEDIA_DB_URL=str(db), SIPMESH_MEDIA_UVLOOP="false",
            SIPMESH_EDGE_MEDIA_ANCHOR="true", SIPMESH_EDGE_SIPREC_SRS=srs.uri)
        dm = mesh
        await asyncio.to_thread(dm.seen_lines, r"^endpoint siprec ", 1, 30)
        await asyncio.to_thread(dm.seen_lines, r"^endpoint media ", 1, 30)
        await asyncio.to_thread(wait_for, lambda: len(nodes(dm)) == 3, 20,
                                "three dialog nodes")
        uas = dm.uas(str(MEDIA / "uas_media.xml"), extra=["-mp", str(free_port())])
        by_bye = _uac(dm, "uac_media_held.xml", uas, "held", HOLD_MS)
        by_timeout = _uac(dm, "uac_media_wait_bye.xml", uas, f"t{LIFETIME}")

        def recorded() -> list[dict[str, Any]]:
            return [r for r in _recordings(dm) if r["state"] == "active"]

        def copies() -> dict[str, int]:
            """Call-ID -> how many dialog nodes hold the call confirmed."""
            held: dict[str, int] = {}
            for n in (1, 2, 3):
                for d in node_dialogs(dm, n):
                    if d["state"] == 4:
                        held[d["callid"]] = held.get(d["callid"], 0) + 1
            return held

        await asyncio.to_thread(wait_for, lambda: len(recorded()) == 2, 25,
                                "two calls recorded")
        # Each call on two nodes, so that one survives whichever node is killed: four
        # copies in all also counted one call on three nodes and the other on the node
        # killed next alone (its replication late on a loaded host), a call then ended
        # by no node: its sipp waited for a BYE that never came and exited non-zero.
        await asyncio.to_thread(wait_for, lambda: len(held := copies()) == 2 and min(
            held.values()) >= 2, 15, "both calls confirmed on two dialog nodes at least")
        assert len(srs.sessions) == 2 and not any(s.ended for s in srs.sessions.values())
        streamed = {n: node_mi(meta, "get_statistics", [["dialog:create_sent"]])
                    ["dialog:create_sent"] for n, meta in nodes(dm).items()}
        victim = max(streamed, key=lambda n: streamed[n])
        os.kill(pid_of(dm, victim), signal.SIGKILL)

        for proc in (by_bye, by_timeout):
            code = await asyncio.to_thread(proc.wait, 60)
            assert code == 0, sipp_output(proc)
        await asyncio.to_thread(wait_for, lambda: all(
            s.ended for s in srs.sessions.values()), 20, "BYE to the SRS for both")
        await asyncio.to_thread(wait_for, lambda: _recordings(dm) == [], 10,
                                "no recording left")
        # the timed-out call was ended by a surviving node (its CDR says so)
        rows = await asyncio.to_thread(wait_for, lambda: (
            r := dm.cdrs("extra::json->>'account' IN ('held', 't12')")) and len(r) == 2
            and r, 20, "two CDRs")
        reasons = sorted(r["end_reason"] for r in rows)
        assert reasons == ["caller-bye", "timeout"], reasons
        stats = rpc(dm.gateway, "get_statistics", [["siprec:"]])["result"]
        assert stats["siprec:started"] == 2 and stats["siprec:stopped"] == 2, stats
    finally:
        if mesh is not None:
            mesh.stop()
        srs.close()
        engine.kill()
    sessions = list(srs.sessions.values())
    assert all(s.problems == [] and s.acked and s.ended for s in sessions)
    assert all(s.rtp.get("1", 0) > 50 and s.rtp.get("2", 0) > 50 for s in sessions), [
        s.rtp for s in sessions]
