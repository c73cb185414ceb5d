"""The dialog table on a fake clock: calls as the edge reports them, timeouts, ownership,
profiles, replication merges. No sockets, no asyncio: times are passed in (ms)."""

from __future__ import annotations

from typing import Any

from services.dialog.cdr import build_cdr
from services.dialog.model import Dialog, decode, encode, split_route_sets
from services.dialog.states import State
from services.dialog.table import (
    Changed,
    DialogTable,
    Purged,
    SendBye,
    SendCancel,
    StateChanged,
    TableConfig,
    WriteCdr,
)

from .events import EDGE, create, reply, request

T0 = 1_700_000_000_000
RR = ("<sip:p2.example;lr>", f"<sip:{EDGE};lr>", "<sip:p1.example;lr>")


def kinds(out: list[Any]) -> list[str]:
    return [type(o).__name__ for o in out]


def states(out: list[Any]) -> list[tuple[int, int]]:
    return [(int(o.old), int(o.new)) for o in out if isinstance(o, StateChanged)]


def answered_call(table: DialogTable, **kw: Any) -> Dialog:
    table.create(create(**kw), T0)
    table.reply(reply(180, callid=kw.get("callid", "c1")), T0 + 100)
    table.reply(reply(200, callid=kw.get("callid", "c1"), record_route=RR), T0 + 2000)
    table.in_dialog(request("ACK", callid=kw.get("callid", "c1"), cseq=1), T0 + 2010)
    d = table.find(kw.get("callid", "c1"), "ft")
    assert d is not None
    return d


def test_a_call_goes_through_the_opensips_states_and_ends_with_one_cdr() -> None:
    table = DialogTable()
    seen: list[Any] = []
    seen += table.create(create(), T0)
    seen += table.reply(reply(180), T0 + 100)
    seen += table.reply(reply(200, record_route=RR), T0 + 2000)
    seen += table.in_dialog(request("ACK", cseq=1), T0 + 2010)
    d = table.find("c1", "ft")
    assert d is not None and d.state is State.CONFIRMED and d.to_tag == "tt"
    out = table.in_dialog(request("BYE", cseq=2), T0 + 7000)
    seen += out
    assert states(seen) == [(1, 2), (2, 3), (3, 4), (4, 5)]
    writes = [o for o in out if isinstance(o, WriteCdr)]
    assert len(writes) == 1 and writes[0].dialog is d
    cdr = build_cdr(d, node=1)
    assert (cdr.sip_code, cdr.duration, cdr.ms_duration, cdr.setuptime) == (200, 5, 5000, 2)
    assert cdr.end_reason == "caller-bye" and not cdr.missed
    assert cdr.caller == "alice@a.example" and cdr.callee == "bob@b.example"
    assert cdr.source_ip == "192.0.2.1" and cdr.cdr_id == "c1;ft"
    # Written: the dialog goes, from this node and (replicated purge) from the others.
    assert kinds(table.cdr_written(d.key, T0 + 7001)) == ["Purged"]
    assert table.find("c1", "ft") is None and len(table) == 0
    # A repeated BYE or a resent Create of the ended call brings nothing back.
    assert table.in_dialog(request("BYE", cseq=2), T0 + 7100) == []
    assert table.create(create(), T0 + 7200) == []


def test_route_sets_split_at_the_edges_record_route() -> None:
    callee, caller = split_route_sets(list(RR), [EDGE])
    assert callee == ("<sip:p2.example;lr>",)
    assert caller == ("<sip:p1.example;lr>",)
    # Double Record-Route (RFC 5658): both values are the edge's.
    two = ["<sip:p2;lr>", f"<sip:{EDGE};lr>", f"<sip:{EDGE};transport=tcp;lr>", "<sip:p1;lr>"]
    assert split_route_sets(two, [EDGE]) == (("<sip:p2;lr>",), ("<sip:p1;lr>",))
    assert split_route_sets([], [EDGE]) == ((), ())


def test_a_missed_call_is_written_as_missed() -> None:
    table = DialogTable()
    table.create(create(), T0)
    table.reply(reply(180), T0 + 100)
    out = table.reply(reply(486), T0 + 1500)
    assert states(out) == [(2, 5)]
    (write,) = [o for o in out if isinstance(o, WriteCdr)]
    cdr = build_cdr(write.dialog, node=0)
    assert cdr.missed and (cdr.sip_code, cdr.sip_reason) == (486, "Busy Here")
    assert (cdr.duration, cdr.setuptime) == (0, 1) and cdr.end_reason == "failed"


def test_cancel_ends_with_the_487() -> None:
    table = DialogTable()
    table.create(create(), T0)
    table.reply(reply(180), T0 + 100)
    out = table.reply(reply(487), T0 + 900)
    assert isinstance(out[0], Changed | StateChanged)
    assert build_cdr(out[0].dialog, 0).end_reason == "cancelled"


def test_bye_from_the_callee() -> None:
    table = DialogTable()
    d = answered_call(table)
    out = table.in_dialog(request("BYE", from_tag="tt", to_tag="ft", cseq=7), T0 + 3000)
    assert states(out) == [(4, 5)] and d.end_reason == "callee-bye" and d.callee_cseq == 7


def test_reinvite_keeps_the_dialog_and_its_cseq() -> None:
    table = DialogTable()
    d = answered_call(table)
    out = table.in_dialog(request("INVITE", cseq=5), T0 + 2500)
    assert states(out) == [] and d.state is State.CONFIRMED and d.caller_cseq == 5
    assert any(isinstance(o, Changed) for o in out)  # stored: a later BYE needs CSeq 6


def test_timeout_set_from_routing_ends_the_call_on_its_owner_only() -> None:
    owner = {"me": False}
    table = DialogTable(TableConfig(recheck_ms=1000), owns=lambda d: owner["me"])
    d = answered_call(table, timeout=30)
    deadline = T0 + 2000 + 30_000
    assert table.next_deadline() is not None
    assert table.on_timer(deadline - 1) == []
    assert table.on_timer(deadline) == []  # not the owner: nothing, look again later
    assert d.state is State.CONFIRMED
    owner["me"] = True  # the owner died, the view changed
    out = table.on_timer(deadline + 1000)
    assert kinds(out) == ["Changed", "StateChanged", "SendBye", "WriteCdr"]
    assert d.end_reason == "timeout" and table.stats.expired == 1
    # Exactly once: later timer runs fire nothing more.
    assert table.on_timer(deadline + 60_000) == []


def test_default_timeout_applies_without_one_from_routing() -> None:
    table = DialogTable(TableConfig(default_timeout=10))
    answered_call(table)
    out = table.on_timer(T0 + 2000 + 10_000)
    assert "SendBye" in kinds(out)


def test_cdr_waits_for_its_owner_and_for_cdr_delay() -> None:
    owner = {"me": False}
    table = DialogTable(TableConfig(cdr_delay_ms=500), owns=lambda d: owner["me"])
    d = answered_call(table)
    out = table.in_dialog(request("BYE"), T0 + 5000)
    assert "WriteCdr" not in kinds(out)
    owner["me"] = True
    assert "WriteCdr" not in kinds(table.on_timer(T0 + 5499))
    out = table.on_timer(T0 + 6000)
    assert kinds(out) == ["WriteCdr"]
    # An extra set meanwhile (a media broker's MOS) is in the CDR.
    table2 = DialogTable(TableConfig(cdr_delay_ms=500))
    d2 = answered_call(table2)
    table2.in_dialog(request("BYE"), T0 + 5000)
    table2.set_extra(d2, {"mos": "4.3"}, T0 + 5100)
    (w,) = [o for o in table2.on_timer(T0 + 5500) if isinstance(o, WriteCdr)]
    assert build_cdr(w.dialog, 0).extra == {"mos": "4.3"}
    assert d.state is State.DELETED


def test_a_failed_cdr_write_is_retried() -> None:
    table = DialogTable()
    d = answered_call(table)
    table.in_dialog(request("BYE"), T0 + 5000)
    assert table.cdr_failed(d.key, T0 + 5001) == []
    assert kinds(table.on_timer(T0 + 6001)) == ["WriteCdr"]


def test_end_sends_bye_when_confirmed_and_cancel_when_early() -> None:
    table = DialogTable()
    d = answered_call(table)
    out = table.end(d, "mi", T0 + 3000, ("X-Reason: admin",))
    byes = [o for o in out if isinstance(o, SendBye)]
    assert byes and byes[0].headers == ("X-Reason: admin",) and d.end_reason == "mi"
    table.create(create(callid="c2"), T0)
    early = table.find("c2", "ft")
    assert early is not None
    out = table.end(early, "mi", T0 + 100)
    assert [type(o) for o in out if not isinstance(o, Changed)] == [SendCancel]


def test_profiles_count_dialogs_until_they_end_and_never_go_below_zero() -> None:
    table = DialogTable()
    table.create(create(callid="a", profiles=(("caller", "alice"), ("calls", None))), T0)
    table.create(create(callid="b", profiles=(("caller", "alice"),)), T0)
    table.create(create(callid="c", profiles=(("caller", "bob"),)), T0)
    assert table.profile_size("caller", "alice") == 2
    assert table.profile_size("caller") == 3 and table.profile_size("calls") == 1
    assert table.profile_values_of("caller") == {"alice": 2, "bob": 1}
    table.reply(reply(486, callid="a"), T0 + 10)
    table.reply(reply(486, callid="a"), T0 + 11)  # repeated: no second decrement
    assert table.profile_size("caller", "alice") == 1 and table.profile_size("calls") == 0
    d = table.find("a", "ft")
    assert d is not None
    table.cdr_written(d.key, T0 + 20)
    assert table.profile_size("caller", "alice") == 1


def test_reserve_is_atomic_against_the_limit() -> None:
    table = DialogTable()
    link = ("caller", "alice")
    assert table.reserve("x1", "f", link, 2, T0)[:2] == (True, 0)
    assert table.reserve("x2", "f", link, 2, T0)[:2] == (True, 1)
    assert table.reserve("x3", "f", link, 2, T0)[:2] == (False, 2)
    # The INVITE of x1 follows: its profile place is the reserved one, counted once.
    table.create(create(callid="x1", from_tag="f", profiles=(link,)), T0 + 5)
    assert table.profile_size(*link) == 2
    # x2 was answered by the routing itself (no branch): the place is given back.
    out = table.reply(reply(486, callid="x2", from_tag="f"), T0 + 6)
    assert kinds(out) == ["Purged"] and table.profile_size(*link) == 1
    # A reservation whose INVITE never came is dropped after reserve_timeout.
    table.reserve("x4", "f", link, 2, T0 + 10)
    assert table.profile_size(*link) == 2
    table.on_timer(T0 + 10 + 32_000)
    assert table.profile_size(*link) == 1 and table.find("x4", "f") is None


def test_replicas_merge_by_rank_and_an_end_is_never_undone() -> None:
    a = DialogTable(node=1)
    b = DialogTable(node=2)
    d = answered_call(a)
    b.apply_replica(decode(encode(d)), T0 + 2100)
    copy = b.find("c1", "ft")
    assert copy is not None and copy.state is State.CONFIRMED and copy.caller_route
    # Node 2 ends the call (dlg_end_dlg) while node 1 sees a re-INVITE: both bump the
    # version; the ended copy wins on both nodes whatever the writer ids.
    b.end(copy, "mi", T0 + 3000)
    a.in_dialog(request("INVITE", cseq=9), T0 + 3000)
    a.apply_replica(decode(encode(copy)), T0 + 3001)
    assert a.find("c1", "ft").state is State.DELETED  # type: ignore[union-attr]
    assert b.apply_replica(decode(encode(d)), T0 + 3002) == []
    assert b.find("c1", "ft").caller_cseq == 1  # type: ignore[union-attr]


def test_a_purged_dialog_is_not_revived_by_a_late_replica() -> None:
    a = DialogTable(node=1)
    b = DialogTable(node=2)
    d = answered_call(a)
    late = decode(encode(d))
    b.apply_replica(decode(encode(d)), T0)
    b.apply_purge(d.key, T0 + 10)
    assert b.apply_replica(late, T0 + 20) == [] and len(b) == 0


def test_profiles_of_replicated_dialogs_are_counted_on_every_node() -> None:
    a = DialogTable(node=1)
    b = DialogTable(node=2)
    d = answered_call(a, profiles=(("caller", "alice"),))
    b.apply_replica(decode(encode(d)), T0)
    assert b.profile_size("caller", "alice") == 1
    out = a.in_dialog(request("BYE"), T0 + 5000)
    assert isinstance(out[0], Changed)
    b.apply_replica(decode(encode(d)), T0 + 5001)
    assert b.profile_size("caller", "alice") == 0
    b.apply_replica(decode(encode(d)), T0 + 5002)  # once more: still 0, not -1
    assert b.profile_size("caller", "alice") == 0 and b.profile_all == {}


def test_a_deleted_replica_makes_its_owner_write_the_cdr() -> None:
    a = DialogTable(node=1, owns=lambda d: False)
    b = DialogTable(node=2, owns=lambda d: True)
    d = answered_call(a)
    b.apply_replica(decode(encode(d)), T0)
    out = a.in_dialog(request("BYE"), T0 + 5000)
    assert "WriteCdr" not in kinds(out)  # node 1 is not the owner
    out = b.apply_replica(decode(encode(d)), T0 + 5001)
    assert "WriteCdr" in kinds(out)
    assert kinds(b.cdr_written(d.key, T0 + 5002)) == ["Purged"]
    assert kinds(a.apply_purge(d.key, T0 + 5003)) == ["Purged"]
    assert isinstance(b.apply_purge(d.key, T0 + 5004), list)


def test_stale_early_dialogs_end_as_missed_on_their_owner() -> None:
    table = DialogTable(TableConfig(early_timeout=300))
    table.create(create(), T0)
    table.reply(reply(180), T0 + 100)
    out = table.on_timer(T0 + 300_000)
    assert states(out) == [(2, 5)]
    (w,) = [o for o in out if isinstance(o, WriteCdr)]
    assert build_cdr(w.dialog, 0).sip_code == 408


def test_no_cdr_dialogs_go_without_a_cdr() -> None:
    table = DialogTable()
    answered_call(table, no_cdr=True)
    out = table.in_dialog(request("BYE"), T0 + 5000)
    assert "WriteCdr" not in kinds(out) and any(isinstance(o, Purged) for o in out)


def test_record_round_trip_keeps_everything() -> None:
    table = DialogTable()
    d = answered_call(table, profiles=(("caller", "alice"), ("all", None)), tag="vip",
                      extra={"account": "42"})
    back = decode(encode(d))
    for name in Dialog.__slots__:
        if name != "counted":
            assert getattr(back, name) == getattr(d, name), name


def test_tombstones_expire_and_are_few() -> None:
    table = DialogTable(TableConfig(tombstone_ms=1000))
    for i in range(100):
        table.create(create(callid=f"t{i}"), T0)
        d = table.find(f"t{i}", "ft")
        assert d is not None
        table.reply(reply(486, callid=f"t{i}"), T0 + 1)
        table.cdr_written(d.key, T0 + 2)
    assert len(table.tombstones) == 100 and table.next_deadline() == T0 + 1002  # first due
    table.on_timer(T0 + 1002)
    assert table.tombstones == {} and table.next_deadline() != T0 + 1002
    # Gone from the tombstones, an old replica could come back: that is why they last
    # longer than any replica in flight (60 s by default).
