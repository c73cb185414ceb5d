"""SIPREC the way a new user turns it on: `sipmesh up` (gateway, edge, media broker,
recorder, all found through discovery) with two settings, `SIPMESH_EDGE_MEDIA_ANCHOR=
true` and `SIPMESH_EDGE_SIPREC_SRS=sip:srs@...`, the rtpengine added with `sipmesh
rtpengine add`.  A sipp call with RTP both ways is recorded to the SRS stand-in
(services/siprec/testing/fake_srs.py): compliant INVITE, both directions forked, BYE at
the call's end; `siprec_list` through the gateway shows it while it lasts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.siprec.testing.fake_srs import FakeSrs
from tests.integration.edge.edge_harness import free_port, wait_until
from tests.integration.media.harness import RtpEngine, free_udp_port
from tests.integration.media.test_media_calls import sipmesh
from tests.integration.siprec.test_siprec_calls import _sipp_call
from tests.integration.spine.meshproc import MeshProcess

pytestmark = pytest.mark.peers


def _rpc(url: str, method: str) -> Any:
    from tests.integration.dialog.harness import rpc

    return rpc(url, method)


async def test_sipmesh_up_records_a_call_with_two_settings(tmp_path: Path) -> None:
    engine = RtpEngine(tmp_path).start()
    srs = await FakeSrs(port=free_udp_port()).start()
    db = tmp_path / "media.sqlite"
    mesh: MeshProcess | None = None
    try:
        added = sipmesh("rtpengine", "add", engine.url, "--db", str(db))
        assert added.returncode == 0, added.stderr
        sip_port = free_port()
        mesh = MeshProcess(
            tmp_path, SIPMESH_MESH_SERVICES="gateway,edge,media,siprec",
            SIPMESH_EDGE_LISTEN=f"udp:127.0.0.1:{sip_port}", SIPMESH_EDGE_UVLOOP="false",
            SIPMESH_MEDIA_DB_URL=str(db), SIPMESH_MEDIA_UVLOOP="false",
            SIPMESH_EDGE_MEDIA_ANCHOR="true", SIPMESH_EDGE_SIPREC_SRS=srs.uri,
            XDG_STATE_HOME=str(tmp_path / "state"))
        mesh.line(r"^endpoint edge sip ", 30)
        mesh.line(r"^endpoint siprec ", 30)
        mesh.line(r"^endpoint media ", 30)
        call = asyncio.create_task(asyncio.to_thread(_sipp_call, f"127.0.0.1:{sip_port}",
                                                     tmp_path))

        def listed() -> bool:
            answer = _rpc(mesh.gateway_url, "siprec_list")
            return any(r.get("state") == "active"
                       for r in answer.get("result", {}).get("Recordings", []))

        await asyncio.to_thread(wait_until, listed, 20, "siprec_list through the gateway")
        result, _ = await call
        await asyncio.to_thread(wait_until, lambda: any(
            s.ended for s in srs.sessions.values()), 15, "BYE to the SRS")
    finally:
        if mesh is not None:
            mesh.stop()
        srs.close()
        engine.kill()
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-1500:]
    assert len(srs.sessions) == 1
    session = next(iter(srs.sessions.values()))
    assert session.problems == [] and session.acked and session.ended
    assert session.rtp.get("1", 0) > 50 and session.rtp.get("2", 0) > 50, session.rtp
