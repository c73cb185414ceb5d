"""`sipmesh restart siprec` under recorded call load loses no recording (issue 20).

`sipmesh up` with the gateway, the edge (`media_anchor`, `siprec_srs`: every call is
recorded), the media broker in front of a real rtpengine, the SIPREC recorder (its
recordings in a SQLite store) and the dialog service (one CDR per call, in the real
PostgreSQL); sipp places calls with SDP through the edge at a steady rate (each held 1 s)
to a sipp UAS, every call recorded to the SRS stand-in, while the operator runs
`sipmesh restart siprec`.

Every call must complete, and every call must have exactly one recording session at
the SRS, answered, acknowledged and ended by exactly one BYE: none missing, none
orphaned (still up at the SRS), none twice; calls that span the restart included.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from services.siprec.testing.fake_srs import FakeSrs
from tests.integration.dialog.harness import CallLoad, DialogMesh, wait_for
from tests.integration.media.harness import SCENARIOS, RtpEngine, free_udp_port
from tests.integration.media.test_media_calls import sipmesh

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]


async def test_every_call_is_recorded_once_across_a_siprec_restart(tmp_path: Path) -> None:
    engine = RtpEngine(tmp_path).start()
    srs = await FakeSrs(port=free_udp_port()).start()
    mesh: DialogMesh | None = None
    load: CallLoad | None = None
    try:
        db = tmp_path / "media.sqlite"
        added = sipmesh("rtpengine", "add", engine.url, "--db", str(db))
        assert added.returncode == 0, added.stderr
        mesh = await asyncio.to_thread(
            DialogMesh, tmp_path, services="gateway,edge,media,siprec,dialog",
            SIPMESH_MEDIA_DB_URL=str(db), SIPMESH_EDGE_MEDIA_ANCHOR="true",
            SIPMESH_EDGE_SIPREC_SRS=srs.uri,
            SIPMESH_SIPREC_DB_URL=str(tmp_path / "siprec.sqlite"))
        mesh.mesh.line(r"^endpoint media grpc ", 20)
        mesh.mesh.line(r"^endpoint siprec ", 20)
        uas = mesh.uas("../../media/scenarios/uas_sdp.xml")
        rate = 8  # calls/s; sipp is told to finish once the restart is done
        load = mesh.call_load(uas, rate=rate, most=600, timeout=100,
                              scenario=str(SCENARIOS / "uac_sdp_hold.xml"))

        def ended() -> int:
            return sum(1 for s in srs.sessions.values() if s.ended)

        await asyncio.to_thread(wait_for, lambda: ended() >= rate, 30,
                                "recordings ended before the restart", interval=0.2)
        before = len(srs.sessions)
        took, steps = await asyncio.to_thread(mesh.restart, "siprec", drain_timeout=30,
                                              timeout=60)
        assert [s.split(":")[0] for s in steps] == ["siprec"], steps
        during = len(srs.sessions) - before
        after = ended()
        await asyncio.to_thread(wait_for, lambda: ended() >= after + rate, 30,
                                "recordings after the restart", interval=0.2)
        calls = await asyncio.to_thread(load.finish, 30)
        cdrs = await asyncio.to_thread(mesh.wait_cdrs, calls, 20)
        callids = {row["callid"] for row in cdrs}
        assert len(callids) == calls, (calls, len(callids))

        def settled() -> bool:
            return len(srs.sessions) >= calls and all(
                s.ended for s in srs.sessions.values())

        try:
            await asyncio.to_thread(wait_for, settled, 15, "every recording ended")
        except AssertionError:
            pass  # the figures below say what is left
        sessions = list(srs.sessions.values())
        per_call = Counter(s.metadata.session_ids[0] for s in sessions
                           if s.metadata is not None and s.metadata.session_ids)
        byes = sum(len(s.byes) for s in sessions)
        orphans = [s.call_id for s in sessions if not s.ended]
        print(f"\nrolling restart of siprec under {rate} calls/s: {took:.1f} s; calls "
              f"{calls} completed, 0 failed; recordings started {len(sessions)} "
              f"({during} during the restart), for {len(per_call)} calls, stopped "
              f"{byes} (BYEs), left up {len(orphans)}; steps: {steps}")
        assert all(s.problems == [] and s.status == 200 and s.acked for s in sessions), [
            (s.call_id, s.status, s.problems) for s in sessions if s.problems or
            s.status != 200 or not s.acked][:5]
        assert not orphans, f"recordings left up at the SRS: {orphans[:5]}"
        assert len(per_call) == calls, f"{calls} calls but {len(per_call)} recorded"
        assert max(per_call.values()) == 1, per_call.most_common(3)
        assert all(len(s.byes) == 1 for s in sessions), [
            (s.call_id, len(s.byes)) for s in sessions if len(s.byes) != 1][:5]
        listed = mesh.mi("siprec_list")["Recordings"]
        assert listed == [], listed[:3]
    finally:
        if load is not None:
            load.kill()
        if mesh is not None:
            await asyncio.to_thread(mesh.stop)
        srs.close()
        engine.kill()
