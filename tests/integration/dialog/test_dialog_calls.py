"""Calls through a real mesh (`sipmesh up`: gateway, edge, dialog; embedded defaults but
CDRs in the real PostgreSQL): sipp phones, record-routed by the edge, tracked by the
dialog service; MI through the gateway (and opensips-cli), events to a UDP subscriber.

Every call is told apart by its Request-URI user (`-s`), which the test routing writes in
the CDR's `account` extra (tests/integration/dialog/dialog_routing.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dialog.harness import DialogMesh, rpc, sipp_output, wait_for

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DialogMesh]:
    m = DialogMesh(tmp_path_factory.mktemp("dialog-mesh"))
    yield m
    m.stop()


@pytest.fixture(scope="module")
def events(mesh: DialogMesh) -> Iterator[socket.socket]:
    """A UDP subscriber (event_datagram) of E_ACC_CDR and E_DLG_STATE_CHANGED."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    for name in ("E_ACC_CDR", "E_ACC_MISSED_EVENT", "E_DLG_STATE_CHANGED"):
        assert mesh.mi("event_subscribe", [name, f"udp:127.0.0.1:{port}", 600]) == "OK"
    yield sock
    sock.close()


def received(sock: socket.socket, seconds: float = 0.0) -> list[dict[str, Any]]:
    """Every event datagram waiting now (or arriving within `seconds`)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while True:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            if time.monotonic() >= deadline:
                return out
            continue
        out.append(json.loads(data))


def cdr_of(mesh: DialogMesh, account: str, timeout: float = 15) -> dict[str, Any]:
    rows = wait_for(lambda: mesh.cdrs(f"extra::json->>'account' = '{account}'"), timeout,
                    f"the CDR of {account}")
    assert len(rows) == 1, rows
    row: dict[str, Any] = rows[0]
    return row


def live(mesh: DialogMesh, account: str) -> list[dict[str, Any]]:
    """dlg_list_ctx entries of the calls of `account` (through the gateway)."""
    out = []
    for d in mesh.mi("dlg_list_ctx")["Dialogs"]:
        values = d.get("context", {}).get("values", [])
        if {"acc_extra.account": account} in values:
            out.append(d)
    return out


def test_a_call_is_listed_confirmed_then_written_once_with_its_hold_time(
        mesh: DialogMesh, events: socket.socket) -> None:
    received(events)  # nothing left from elsewhere
    uas = mesh.uas()
    uac = mesh.uac("uac", uas, "basic", hold_ms=2000, background=True)
    (entry,) = wait_for(lambda: [d for d in live(mesh, "basic") if d["state"] == 4], 10,
                        "the dialog confirmed in dlg_list")
    assert entry["CALLEES"] and entry["caller_route_set"] == ""
    assert entry["from_uri"].startswith("sip:sipp@") and entry["timestart"] > 0
    # dlg_list callid [from_tag] finds it; the numeric ID is OpenSIPS's (h_entry << 32 | h_id).
    one = mesh.mi("dlg_list", {"callid": entry["callid"], "from_tag": entry["caller_tag"]})
    assert one["Dialog"]["ID"] == entry["ID"]
    assert uac.wait(30) == 0, sipp_output(uac)
    cdr = cdr_of(mesh, "basic")
    assert (cdr["sip_code"], cdr["sip_reason"], cdr["method"]) == ("200", "OK", "INVITE")
    assert cdr["duration"] == 2 and 2000 <= cdr["ms_duration"] < 2600, cdr
    assert cdr["end_reason"] == "caller-bye" and cdr["callid"] == entry["callid"]
    assert cdr["caller"].startswith("sipp@127.0.0.1") and cdr["callee"].startswith("basic@")
    assert cdr["source_ip"] == "127.0.0.1" and cdr["to_tag"] and cdr["from_tag"]
    wait_for(lambda: not live(mesh, "basic"), 5, "the dialog gone from dlg_list")
    # Events: the OpenSIPS states in order and one E_ACC_CDR, from a UDP subscriber.
    got = received(events, 2.0)
    states = [(e["params"]["old_state"], e["params"]["new_state"]) for e in got
              if e["method"] == "E_DLG_STATE_CHANGED" and e["params"]["callid"] == cdr["callid"]]
    assert states == [(1, 2), (2, 3), (3, 4), (4, 5)]
    accs = [e["params"] for e in got if e["method"] == "E_ACC_CDR"
            and e["params"]["callid"] == cdr["callid"]]
    assert len(accs) == 1 and accs[0]["account"] == "basic" and accs[0]["duration"] == 2


def test_a_cancelled_call_is_a_missed_call(mesh: DialogMesh) -> None:
    uas = mesh.uas("uas_ring_cancel.xml")
    uac = mesh.uac("uac_cancel.xml", uas, "cancelled")
    assert uac.returncode == 0, sipp_output(uac)
    cdr = cdr_of(mesh, "cancelled")
    assert (cdr["sip_code"], cdr["missed"], cdr["duration"]) == ("487", True, 0)
    assert cdr["end_reason"] == "cancelled"


def test_a_busy_callee_is_a_missed_call(mesh: DialogMesh) -> None:
    uas = mesh.uas("uas_busy.xml")
    uac = mesh.uac("uac_expect_486.xml", uas, "busy")
    assert uac.returncode == 0, sipp_output(uac)
    cdr = cdr_of(mesh, "busy")
    assert (cdr["sip_code"], cdr["sip_reason"], cdr["missed"]) == ("486", "Busy Here", True)


def test_a_reinvite_keeps_the_dialog_and_moves_its_cseq(mesh: DialogMesh) -> None:
    uas = mesh.uas("uas_reinvite.xml")
    uac = mesh.uac("uac_reinvite.xml", uas, "reinvite", hold_ms=1500, background=True)
    wait_for(lambda: [d for d in live(mesh, "reinvite") if d["state"] == 4
                      and d["CALLEES"][0]["caller_cseq"] == "2"], 10,
             "the re-INVITE's CSeq in dlg_list")
    assert uac.wait(30) == 0, sipp_output(uac)
    cdr = cdr_of(mesh, "reinvite")
    assert cdr["sip_code"] == "200" and 2000 <= cdr["ms_duration"] < 2700, cdr


def test_the_callee_hangs_up(mesh: DialogMesh) -> None:
    uas = mesh.uas("uas_hangup.xml", hold_ms=1000)
    uac = mesh.uac("uac_wait_bye.xml", uas, "calleebye")
    assert uac.returncode == 0, sipp_output(uac)
    cdr = cdr_of(mesh, "calleebye")
    assert cdr["end_reason"] == "callee-bye" and 1000 <= cdr["ms_duration"] < 1600, cdr


def test_a_timeout_set_by_routing_ends_the_call_with_bye_to_both_sides(
        mesh: DialogMesh) -> None:
    # Neither phone hangs up: the callee waits for a BYE (sipp's uas, one call and exit),
    # the caller too.
    uas_port = mesh.uas(extra=["-m", "1"])
    uas = mesh.sipp[-1]
    uac = mesh.uac("uac_wait_bye.xml", uas_port, "t2timeout")
    assert uac.returncode == 0, sipp_output(uac)  # the caller got its BYE and answered it
    assert uas.wait(10) == 0  # ... and so did the callee
    cdr = cdr_of(mesh, "t2timeout")
    assert cdr["end_reason"] == "timeout" and cdr["duration"] == 2, cdr
    assert 2000 <= cdr["ms_duration"] < 2600
    stats = mesh.mi("get_statistics", [["dialog:expired_dialogs"]])
    assert stats["dialog:expired_dialogs"] >= 1


def test_dlg_end_dlg_through_the_gateway_ends_a_call(mesh: DialogMesh) -> None:
    uas = mesh.uas()
    uac = mesh.uac("uac_wait_bye.xml", uas, "endgw", background=True)
    (entry,) = wait_for(lambda: [d for d in live(mesh, "endgw") if d["state"] == 4], 10,
                        "the call confirmed")
    ident = int(entry["ID"])
    # OpenSIPS 2.4's form: h_entry h_id, positional (as opensips-cli sends them).
    assert mesh.checked("dlg_end_dlg", [ident >> 32, ident & 0xFFFFFFFF]) == "OK"
    assert uac.wait(20) == 0, sipp_output(uac)
    cdr = cdr_of(mesh, "endgw")
    assert cdr["end_reason"] == "mi" and cdr["sip_code"] == "200"
    gone = rpc(mesh.gateway, "dlg_end_dlg", [ident >> 32, ident & 0xFFFFFFFF])
    assert gone["error"]["code"] == 404


def test_dlg_end_dlg_through_opensips_cli(mesh: DialogMesh) -> None:
    cli = Path(sys.executable).parent / "opensips-cli"
    if not cli.exists():
        pytest.fail("opensips-cli is missing from the venv (make venv installs it)")
    uas = mesh.uas()
    uac = mesh.uac("uac_wait_bye.xml", uas, "endcli", background=True)
    (entry,) = wait_for(lambda: [d for d in live(mesh, "endcli") if d["state"] == 4], 10,
                        "the call confirmed")
    out = subprocess.run([str(cli), "-o", "communication_type=http", "-o",
                          f"url={mesh.gateway}", "-x", "mi", "dlg_end_dlg", entry["ID"]],
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, HOME=str(mesh.tmp)))
    assert out.returncode == 0, out.stderr
    assert uac.wait(20) == 0, sipp_output(uac)
    assert cdr_of(mesh, "endcli")["end_reason"] == "mi"


def test_dlg_end_dlg_on_an_early_dialog_cancels_it(mesh: DialogMesh) -> None:
    uas = mesh.uas("uas_ring_cancel.xml")
    uac = mesh.uac("uac_expect_487.xml", uas, "endearly", background=True)
    (entry,) = wait_for(lambda: [d for d in live(mesh, "endearly") if d["state"] == 2], 10,
                        "the call ringing")
    assert mesh.checked("dlg_end_dlg", {"callid": entry["callid"]}) == "OK"
    assert uac.wait(20) == 0, sipp_output(uac)  # the caller got 487 from the edge
    cdr = cdr_of(mesh, "endearly")
    assert (cdr["sip_code"], cdr["missed"], cdr["end_reason"]) == ("487", True, "cancelled")


def test_a_profile_limit_answers_486_beyond_two_calls(mesh: DialogMesh) -> None:
    uas = mesh.uas()
    held = mesh.uac("uac", uas, "lim2", calls=2, rate=10, hold_ms=4000, background=True)
    wait_for(lambda: mesh.mi("profile_get_size", ["caller", "sipp"])["Profile"]["count"] == 2,
             10, "two calls in profile caller=sipp")
    third = mesh.uac("uac_expect_486.xml", uas, "lim2")
    assert third.returncode == 0, sipp_output(third)  # answered 486 by the routing
    assert mesh.checked("profile_get_values", ["caller"]) == [{"value": "sipp", "count": 2}]
    listed = mesh.checked("profile_list_dlgs", ["caller", "sipp"])["Dialogs"]
    assert len(listed) == 2 and all(d["state"] == 4 for d in listed)
    # Every dialog MI answer, as contracts/mi says (OpenSIPS's shapes), with calls up.
    size = mesh.checked("profile_get_size", {"profile": "caller", "value": "sipp"})
    assert size["Profile"] == {"name": "caller", "value": "sipp", "count": 2, "shared": "no",
                               "replicated": "no"}
    assert mesh.checked("profile_get_size", ["calls"])["Profile"]["count"] >= 2
    assert {"name": "caller", "has value": True} in mesh.checked("list_all_profiles")["Profiles"]
    assert len(mesh.checked("dlg_list")["Dialogs"]) >= 2
    page = mesh.checked("dlg_list", {"index": 0, "counter": 1})
    assert page["count"] >= 2 and len(page["Dialogs"]) == 1
    ctx = mesh.checked("dlg_list_ctx", {"callid": listed[0]["callid"]})["Dialog"]["context"]
    assert {"caller": "sipp"} in ctx["profiles"] and {"acc_extra.account": "lim2"} in ctx["values"]
    with pytest.raises(RuntimeError, match="404"):
        mesh.mi("profile_get_size", ["no-such-profile"])
    with pytest.raises(RuntimeError, match="400"):
        mesh.mi("dlg_cluster_sync")  # one node, no cluster
    assert held.wait(30) == 0, sipp_output(held)
    wait_for(lambda: mesh.mi("profile_get_size", ["caller", "sipp"])["Profile"]["count"] == 0,
             10, "the profile empty again")
    assert len(mesh.cdrs("extra::json->>'account' = 'lim2'")) == 2  # the 486 was no call
    again = mesh.uac("uac", uas, "lim2")
    assert again.returncode == 0, sipp_output(again)


def test_kill_9_of_the_dialog_service_loses_no_dialog(mesh: DialogMesh) -> None:
    """The default configuration (a SQLite dialog table): the supervisor restarts the
    killed service, which loads its dialogs back; every held call still ends with its
    BYE and has its one CDR."""
    pid = int(mesh.mesh.line(r"^started dialog pid (\d+)").group(1))
    uas = mesh.uas()
    uac = mesh.uac("uac", uas, "kill9", calls=20, rate=20, hold_ms=5000, background=True)
    wait_for(lambda: len([d for d in live(mesh, "kill9") if d["state"] == 4]) == 20, 15,
             "20 confirmed calls")
    os.kill(pid, signal.SIGKILL)
    mesh.seen_lines(r"^started dialog pid (\d+)", 2, 30)
    def back() -> bool:
        try:
            return len(live(mesh, "kill9")) == 20
        except RuntimeError:  # not registered again yet: "Method not found"
            return False

    wait_for(back, 20, "the 20 calls back after the restart")
    assert uac.wait(40) == 0, sipp_output(uac)
    rows = wait_for(lambda: (r := mesh.cdrs("extra::json->>'account' = 'kill9'"))
                    and len(r) == 20 and r, 20, "20 CDRs")
    assert len({r["callid"] for r in rows}) == 20
    assert all(r["end_reason"] == "caller-bye" and r["duration"] >= 4 for r in rows)


def test_cdr_export_writes_every_call_as_csv_and_json(mesh: DialogMesh) -> None:
    import csv
    import io

    rows = mesh.cdrs()
    assert rows

    def export(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "sipmesh.cli.main", "cdr", "export", "--store",
             "postgresql://postgres@127.0.0.1:5432/test", "--table", mesh.table, *args],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[3])
        assert out.returncode == 0, out.stderr
        return out.stdout

    as_json = json.loads(export("--since", "1h", "--format", "json"))
    assert [r["cdr_id"] for r in as_json] == [r["cdr_id"] for r in rows]
    assert {r["end_reason"] for r in as_json} >= {"caller-bye", "timeout", "mi", "cancelled"}
    as_csv = list(csv.DictReader(io.StringIO(export("--since", "1h"))))
    assert [r["cdr_id"] for r in as_csv] == [r["cdr_id"] for r in rows]
    first = as_csv[0]
    assert json.loads(first["extra"])["account"] and first["missed"] in ("true", "false")
    assert export("--until", "2000-01-01") == ",".join(
        ["cdr_id", "method", "from_tag", "to_tag", "callid", "sip_code", "sip_reason", "time",
         "duration", "ms_duration", "setuptime", "created", "caller", "callee", "source_ip",
         "destination", "end_reason", "extra", "missed", "node", "event_sent"]) + "\n"
    bad = subprocess.run([sys.executable, "-m", "sipmesh.cli.main", "cdr", "export", "--since",
                          "yesterday-ish"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "span" in bad.stderr
