"""`sipmesh restart presence` under PUBLISH/SUBSCRIBE load drops nothing (issue 20).

`sipmesh up --nodes 2` with the gateway, the edge and two presence nodes (the shared
store, OpenSIPS 2.4's shared-database mode); sipp publishes a new presentity per call at a
steady rate and fetches it back (SUBSCRIBE with Expires 0: the 200 and a NOTIFY carrying
the published PIDF) while the operator restarts the presence nodes one at a time: each
leaves discovery, drains and is started again, the next one only once it is ready.

Every call must complete (sipp counts no failed call) and every acknowledged publication
must still be listed afterwards (pres_phtable_list through the gateway).
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.edge.edge_harness import free_port
from tests.integration.presence.harness import SCENARIOS, PresenceMesh, wait_for
from tests.integration.registrar.test_registrar_kill9 import acknowledged

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]


def test_rolling_restart_of_presence_under_publish_and_fetch_load(tmp_path: Path) -> None:
    mesh = PresenceMesh(tmp_path, SIPMESH_MESH_NODES="2",
                        SIPMESH_MESH_SERVICES="gateway,edge,presence")
    try:
        rate, most = 40, 2400  # sipp is told to stop (SIGUSR1) long before `most`
        log = tmp_path / "acknowledged.log"
        errors = tmp_path / "errors.log"
        load = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIOS / "publish_fetch_log.xml"), "-i", "127.0.0.1",
             "-p", str(free_port()), mesh.edge, "-r", str(rate), "-m", str(most),
             "-nostdin", "-timeout", "90s", "-trace_logs", "-log_file", str(log),
             "-trace_err", "-error_file", str(errors)],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(acknowledged(log)) >= rate, 30, "the load is being served")
            before = len(acknowledged(log))
            restarted = mesh.mesh.cli("restart", "presence", "--timeout", "60", timeout=150)
            during = len(acknowledged(log)) - before
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            steps = restarted.stdout.strip().splitlines()
            assert [s.split(":")[0] for s in steps] == ["presence.1", "presence.2"], steps
            assert all(re.search(r"pid \d+ -> \d+ ready in", s) for s in steps), steps
            # The load goes on after the restart, served by the restarted nodes.
            wait_for(lambda: len(acknowledged(log)) >= before + during + rate // 2, 30,
                     "load served after the restart")
            assert load.poll() is None, "the load ended before the restart did"
            load.send_signal(signal.SIGUSR1)
            rc = load.wait(60)
            assert rc == 0, (f"sipp counted failed calls: {len(acknowledged(log))} "
                             "acknowledged; "
                             + (errors.read_text()[-3000:] if errors.exists() else ""))
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(10)
        done = acknowledged(log)
        assert during > 0 and len(done) > before + during
        listed = {p["pres_uri"] for p in mesh.mi("pres_phtable_list")["Presentities"]}
        missing = {f"sip:{u}@127.0.0.1" for u in done} - listed
        assert not missing, f"publications lost: {sorted(missing)[:10]}"
        print(f"\nrolling restart of presence (2 nodes) under {rate} PUBLISH+fetch/s: "
              f"{during} calls completed meanwhile, {len(done)} in all, 0 failed, 0 lost; "
              f"steps: {steps}")
    finally:
        mesh.stop()
