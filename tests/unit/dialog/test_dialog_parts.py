"""The small pure parts: BYE building, ownership by rendezvous hashing, MI shapes,
dialog references as billing gives them, CDR export times."""

from __future__ import annotations

import datetime as dt

import pytest

from services.dialog.byes import bye_requests, cancel_request, hop_uri
from services.dialog.cdr_export import parse_time, to_csv
from services.dialog.mi import dialog_entry, parse_origin
from services.dialog.ownership import owner_key, rendezvous_owner
from services.dialog.table import DialogTable

from .events import create, reply, request
from .test_dialog_table import RR, T0


def confirmed() -> object:
    table = DialogTable()
    table.create(create(profiles=(("caller", "alice"),), extra={"account": "7"}), T0)
    table.reply(reply(200, record_route=RR), T0 + 1000)
    table.in_dialog(request("ACK", cseq=1), T0 + 1010)
    table.in_dialog(request("INVITE", from_tag="tt", to_tag="ft", cseq=40), T0 + 2000)
    return table.find("c1", "ft")


def test_byes_go_to_both_sides_along_their_route_sets() -> None:
    d = confirmed()
    callee, caller = bye_requests(d, ("X-Reason: credit", "Bad\r\nInjected: 1"))  # type: ignore[arg-type]
    h = dict(callee.headers)
    assert callee.ruri == "sip:bob@192.0.2.2:5064" and callee.route == ("<sip:p2.example;lr>",)
    assert h["From"].endswith(";tag=ft") and h["To"] == "<sip:bob@b.example>;tag=tt"
    assert h["CSeq"] == "2 BYE" and h["X-Reason"] == "credit" and "Injected" not in h
    assert callee.next_hop == ""  # a route set: the first Route is the next hop
    g = dict(caller.headers)
    assert caller.ruri == "sip:alice@192.0.2.1:5062" and caller.route == ("<sip:p1.example;lr>",)
    assert g["From"] == "<sip:bob@b.example>;tag=tt" and g["To"].endswith(";tag=ft")
    assert g["CSeq"] == "41 BYE"  # above the callee's own re-INVITE


def test_without_a_route_set_the_bye_goes_where_the_side_sent_from() -> None:
    table = DialogTable()
    table.create(create(), T0)
    table.reply(reply(200), T0 + 1000)
    d = table.find("c1", "ft")
    callee, caller = bye_requests(d)  # type: ignore[arg-type]
    assert caller.next_hop == "sip:192.0.2.1:5062;transport=udp"
    assert callee.next_hop == "sip:192.0.2.2:5064;transport=udp"
    assert hop_uri("") == "" and cancel_request(d).method == "CANCEL"  # type: ignore[arg-type]


def test_rendezvous_owner_is_one_node_and_moves_only_the_dead_nodes_dialogs() -> None:
    keys = [owner_key(f"call-{i}", "t") for i in range(3000)]
    three = {k: rendezvous_owner(k, [1, 2, 3]) for k in keys}
    counts = {n: list(three.values()).count(n) for n in (1, 2, 3)}
    assert all(800 < c < 1200 for c in counts.values()), counts
    two = {k: rendezvous_owner(k, [1, 3]) for k in keys}
    moved = [k for k in keys if three[k] != two[k]]
    assert all(three[k] == 2 for k in moved)  # only node 2's dialogs moved
    assert rendezvous_owner("x", []) is None
    assert rendezvous_owner("x", [3, 1, 2]) == rendezvous_owner("x", [1, 2, 3])


def test_dialog_entry_has_opensips_fields() -> None:
    d = confirmed()
    e = dialog_entry(d, context=True, owner=2)  # type: ignore[arg-type]
    assert e["ID"] == str((d.h_entry << 32) + d.h_id) and e["state"] == 4  # type: ignore[attr-defined]
    assert e["timestart"] == (T0 + 1000) // 1000 and e["timeout"] == e["timestart"] + 43200
    assert e["caller_route_set"] == "<sip:p1.example;lr>"
    assert e["CALLEES"][0]["callee_route_set"] == "<sip:p2.example;lr>"
    assert e["CALLEES"][0]["caller_cseq"] == "1" and e["callee_cseq"] == "40"
    assert e["context"]["profiles"] == [{"caller": "alice"}]
    assert {"owner": "2"} in e["context"]["values"]
    assert {"acc_extra.account": "7"} in e["context"]["values"]


def test_billing_origin_ids() -> None:
    assert parse_origin("a@b;ft") == ("a@b", "ft")
    assert parse_origin("abc@host") == ("abc@host", None)
    assert parse_origin(str((5 << 32) + 9)) == (5, 9)


def test_export_times() -> None:
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    assert parse_time("15m", now) == now - dt.timedelta(minutes=15)
    assert parse_time("2d", now) == now - dt.timedelta(days=2)
    assert parse_time("2026-12-06T10:00:00Z") == dt.datetime(2026, 12, 6, 10, tzinfo=dt.UTC)
    assert parse_time("2026-12-06") == dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        parse_time("yesterday")
    assert to_csv([]).startswith("cdr_id,method,from_tag")
