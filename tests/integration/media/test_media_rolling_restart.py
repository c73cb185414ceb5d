"""`sipmesh restart media` under call load drops nothing (issue 20).

`sipmesh up` with the gateway, the edge (`[edge] media_anchor = true`), the media broker
in front of a real rtpengine and the dialog service (CDRs in the real PostgreSQL); sipp
places calls with SDP through the edge at a steady rate (each held 1 s, then BYE) to a
sipp UAS while the operator runs `sipmesh restart media`: the broker drains (leaves
discovery, finishes the offers, answers and deletes in flight) and a new one takes over.

Every call must succeed (sipp counts no failed call) and have its CDR, every call must
have been anchored (rtpengine counts one managed session per call) and every session
must have been deleted by the call's BYE (rtpengine lists no call once the load ends).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.dialog.harness import CallLoad, DialogMesh, wait_for
from tests.integration.media.harness import SCENARIOS, RtpEngine, ng
from tests.integration.media.test_media_calls import sipmesh

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]



def _sessions(engine: RtpEngine) -> int:
    """rtpengine's count of the sessions it managed since it started."""
    reply = ng(engine.ng_port, {"command": "statistics"}) or {}
    total = reply.get("statistics", {}).get("totalstatistics", {})
    return int(total.get("managedsessions", -1))


def test_calls_are_anchored_and_deleted_across_a_media_restart(tmp_path: Path) -> None:
    engine = RtpEngine(tmp_path).start()
    mesh: DialogMesh | None = None
    load: CallLoad | None = None
    try:
        db = tmp_path / "media.sqlite"
        added = sipmesh("rtpengine", "add", engine.url, "--db", str(db))
        assert added.returncode == 0, added.stderr
        mesh = DialogMesh(tmp_path, services="gateway,edge,media,dialog",
                          SIPMESH_MEDIA_DB_URL=str(db), SIPMESH_EDGE_MEDIA_ANCHOR="true")
        mesh.mesh.line(r"^endpoint media grpc ", 20)
        uas = mesh.uas("../../media/scenarios/uas_sdp.xml")
        rate = 10  # calls/s; sipp is told to finish once the restart is done
        load = mesh.call_load(uas, rate=rate, most=600, timeout=100,
                              scenario=str(SCENARIOS / "uac_sdp_hold.xml"))
        wait_for(lambda: len(mesh.cdrs()) >= rate * 2, 30, "calls completing", interval=0.2)
        before = len(mesh.cdrs())
        took, steps = mesh.restart("media", drain_timeout=30, timeout=60)
        assert [s.split(":")[0] for s in steps] == ["media"], steps
        during = len(mesh.cdrs()) - before
        # Calls go on after the restart, their media through the new broker.
        wait_for(lambda: len(mesh.cdrs()) >= before + during + rate * 2, 30,
                 "calls completing after the restart", interval=0.2)
        calls = load.finish(30)
        cdrs = mesh.wait_cdrs(calls, 20)
        callids = [row["callid"] for row in cdrs]
        assert len(callids) == calls and len(set(callids)) == calls, (calls, len(callids))
        # Every call anchored: one rtpengine session each (none went around the broker).
        assert _sessions(engine) == calls, (_sessions(engine), calls)
        # Every session deleted by its call's BYE: nothing left behind in rtpengine.
        assert engine.calls() == [], engine.calls()
        print(f"\nrolling restart of media under {rate} calls/s: {took:.1f} s, "
              f"{during} calls ended meanwhile, {calls} calls in all, 0 failed, "
              f"{len(cdrs)} CDRs, {calls} rtpengine sessions, none left; steps: {steps}")
    finally:
        if load is not None:
            load.kill()
        if mesh is not None:
            mesh.stop()
        engine.kill()
