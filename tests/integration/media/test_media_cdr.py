"""MOS and loss in the call record (issue 15's last bullet), in the default routing: an
edge with `[edge] media_anchor = true` and the dialog service, both found by address,
the real rtpengine behind the broker.  A call between two RTP/RTCP endpoints (real
LSR/DLSR, alice dropping every 10th packet) ends with the BYE's delete, whose MOS and
loss the edge writes into the dialog's CDR (SetExtra) before forwarding the BYE: the
CDR row in the SQLite `acc` table carries them in its extra fields.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.edge.edge_harness import Edge, start_edge, stop_process, wait_until
from tests.integration.media.harness import ROOT, RtpEngine, start_broker
from tests.integration.media.rtp_peer import RtpPeer
from tests.integration.media.sip_ua import SipUA
from tests.integration.media.test_media_calls import _call, sipmesh

pytestmark = pytest.mark.peers


class Dialog:
    def __init__(self, proc: subprocess.Popen[str], line: str) -> None:
        self.proc = proc
        self.words = line.split()

    @property
    def grpc(self) -> str:
        return self.words[self.words.index("grpc") + 1]

    @property
    def mi(self) -> str:
        return f"{self.words[self.words.index('http') + 1]}/mi"


def start_dialog(tmp: Path) -> tuple[Dialog, str]:
    """The dialog service alone (CDRs in tmp/cdr.sqlite); (it, its gRPC address)."""
    env = dict(os.environ)
    env.pop("SIPMESH_CONFIG", None)
    env.update({"PYTHONPATH": str(ROOT), "SIPMESH_DIALOG_DB_URL": "none",
                "SIPMESH_DIALOG_CDR_URL": str(tmp / "cdr.sqlite"),
                "XDG_STATE_HOME": str(tmp)})
    proc = subprocess.Popen([sys.executable, "-m", "services.dialog"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if "dialog ready" not in line:
        stop_process(proc)
        raise RuntimeError(f"dialog did not start: {line!r}")
    dialog = Dialog(proc, line)
    return dialog, dialog.grpc


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("media-cdr")
    engine = RtpEngine(tmp).start()
    db = tmp / "media.sqlite"
    added = sipmesh("rtpengine", "add", engine.url, "--db", str(db))
    assert added.returncode == 0, added.stderr
    broker = start_broker(db)
    dialog: Dialog | None = None
    edge: Edge | None = None
    try:
        dialog, dialog_grpc = start_dialog(tmp)
        edge = start_edge({"SIPMESH_EDGE_MEDIA": broker.grpc,
                           "SIPMESH_EDGE_MEDIA_ANCHOR": "true",
                           "SIPMESH_EDGE_DIALOG": dialog_grpc})
        yield {"edge": edge, "cdr": tmp / "cdr.sqlite"}
    finally:
        if edge is not None:
            edge.stop()
        if dialog is not None:
            stop_process(dialog.proc)
        broker.stop()
        engine.kill()


def _cdr(path: Path, call_id: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT extra, sip_code, duration FROM acc WHERE callid = ?",
                         (call_id,)).fetchone()
    if row is None:
        return None
    return {"extra": json.loads(row[0]), "sip_code": row[1], "duration": row[2]}


async def test_mos_and_loss_of_a_call_are_written_into_its_cdr(mesh: dict[str, Any]) -> None:
    caller, callee = SipUA("alice"), SipUA("bob")
    a = RtpPeer(ssrc=0x0A0A0A0A, drop_every=10)  # 10% of alice's RTP never leaves
    b = RtpPeer(ssrc=0x0B0B0B0B)
    for x in (caller, callee, a, b):
        await x.open()
    try:
        call_id, _, _ = await _call(mesh["edge"], caller, callee, a, b, 5.5)
    finally:
        for p in (a, b):
            await p.stop()
            p.close()
        caller.close()
        callee.close()
    row: dict[str, Any] = await asyncio.to_thread(
        wait_until, lambda: _cdr(mesh["cdr"], call_id), 15, "the call's CDR row")
    extra = row["extra"]
    assert str(row["sip_code"]) == "200"
    # MOS x10 as OpenSIPS's $rtpstat (0-50), with the times of the lowest and highest
    assert 10 <= int(extra["mos_average"]) <= 50, extra
    assert int(extra["mos_min"]) <= int(extra["mos_average"]) <= int(extra["mos_max"])
    assert "mos_min_at" in extra and "mos_max_at" in extra
    assert int(extra["packets_lost"]) > 0 and int(extra["rtp_packets"]) > 200, extra
