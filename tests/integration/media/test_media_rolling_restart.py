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

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dialog.harness import DialogMesh, wait_for
from tests.integration.edge.edge_harness import free_port
from tests.integration.media.harness import SCENARIOS, RtpEngine, ng
from tests.integration.media.test_media_calls import sipmesh

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]


def _successful(stats: str) -> int:
    """sipp's final 'Successful call' cumulative count (the last column of that line)."""
    found = re.findall(r"Successful call\s*\|[^\n]*?(\d+)\s*$", stats, re.MULTILINE)
    assert found, stats[-2000:]
    return int(found[-1])


def _sessions(engine: RtpEngine) -> int:
    """rtpengine's count of the sessions it managed since it started."""
    reply = ng(engine.ng_port, {"command": "statistics"}) or {}
    total = reply.get("statistics", {}).get("totalstatistics", {})
    return int(total.get("managedsessions", -1))


def test_calls_are_anchored_and_deleted_across_a_media_restart(tmp_path: Path) -> None:
    engine = RtpEngine(tmp_path).start()
    mesh: DialogMesh | None = None
    load: subprocess.Popen[bytes] | None = None
    try:
        db = tmp_path / "media.sqlite"
        added = sipmesh("rtpengine", "add", engine.url, "--db", str(db))
        assert added.returncode == 0, added.stderr
        mesh = DialogMesh(tmp_path, services="gateway,edge,media,dialog",
                          SIPMESH_MEDIA_DB_URL=str(db), SIPMESH_EDGE_MEDIA_ANCHOR="true")
        mesh.mesh.line(r"^endpoint media grpc ", 20)
        uas = mesh.uas("../../media/scenarios/uas_sdp.xml")
        rate, most = 10, 600  # calls/s; sipp is told to finish once the restart is done
        out = tmp_path / "uac.out"
        with out.open("wb") as sink:
            load = subprocess.Popen(
                ["sipp", "-sf", str(SCENARIOS / "uac_sdp_hold.xml"), "-i", "127.0.0.1",
                 "-p", str(free_port()),
                 "-rsa", mesh.edge, f"127.0.0.1:{uas}", "-s", "1002", "-m", str(most),
                 "-r", str(rate), "-d", "1000", "-nostdin", "-timeout", "100s",
                 "-timeout_error", "-buff_size", "1048576", "-trace_err",
                 "-error_file", str(tmp_path / "uac_err.log")],
                cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
        wait_for(lambda: len(mesh.cdrs()) >= rate * 2, 30, "calls completing", interval=0.2)
        before = len(mesh.cdrs())
        started = time.monotonic()
        restarted = mesh.mesh.cli("restart", "media", "--timeout", "30", timeout=60)
        took = time.monotonic() - started
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        steps = restarted.stdout.strip().splitlines()
        assert [s.split(":")[0] for s in steps] == ["media"], steps
        during = len(mesh.cdrs()) - before
        # Calls go on after the restart, their media through the new broker.
        wait_for(lambda: len(mesh.cdrs()) >= before + during + rate * 2, 30,
                 "calls completing after the restart", interval=0.2)
        assert load.poll() is None, "the load ended before the restart did"
        load.send_signal(signal.SIGUSR1)  # no new calls; those running complete
        rc = load.wait(30)
        stats = out.read_text(errors="replace")
        errors = tmp_path / "uac_err.log"
        assert rc == 0, (f"sipp counted failed calls:\n{stats[-2500:]}\n"
                         + (errors.read_text()[-2000:] if errors.exists() else ""))
        calls = _successful(stats)

        def all_cdrs() -> list[dict[str, Any]] | None:
            rows = mesh.cdrs() if mesh is not None else []
            return rows if len(rows) >= calls else None

        cdrs = wait_for(all_cdrs, 20, "a CDR for every call")
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
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(10)
        if mesh is not None:
            mesh.stop()
        engine.kill()
