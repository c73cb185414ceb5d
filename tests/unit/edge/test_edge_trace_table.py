"""Per-call tracing's decisions (services/edge/trace_table.py): which messages of a call
each scope captures, when a traced call ends, what trace_start filters match."""

from __future__ import annotations

import pytest

from services.edge.trace_table import (
    TraceTable,
    filters_of,
    initial_request,
    parse_filter,
)


def msg(start: str, cseq: str, *, to_tag: str = "", call_id: str = "c1",
        frm: str = "<sip:alice@example.com>;tag=a1", to: str = "<sip:bob@example.com>") -> bytes:
    to_value = f"{to};tag={to_tag}" if to_tag else to
    return (f"{start}\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{cseq.replace(' ', '')}"
            f"\r\nFrom: {frm}\r\nTo: {to_value}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


INVITE = msg("INVITE sip:bob@example.com SIP/2.0", "1 INVITE")
TRYING = msg("SIP/2.0 100 Trying", "1 INVITE")
RINGING = msg("SIP/2.0 180 Ringing", "1 INVITE", to_tag="b1")
OK = msg("SIP/2.0 200 OK", "1 INVITE", to_tag="b1")
ACK = msg("ACK sip:bob@192.0.2.2 SIP/2.0", "1 ACK", to_tag="b1")
REINVITE = msg("INVITE sip:alice@192.0.2.1 SIP/2.0", "2 INVITE", to_tag="b1")
BYE = msg("BYE sip:bob@192.0.2.2 SIP/2.0", "3 BYE", to_tag="b1")
BYE_OK = msg("SIP/2.0 200 OK", "3 BYE", to_tag="b1")
BUSY = msg("SIP/2.0 486 Busy Here", "1 INVITE", to_tag="b1")


def test_a_traced_dialog_is_every_message_of_the_call_until_after_its_bye() -> None:
    table = TraceTable()
    table.add("c1", "cap", "d", 1, "INVITE", 0.0)
    for i, data in enumerate((INVITE, TRYING, RINGING, OK, ACK, REINVITE, BYE, BYE_OK)):
        assert table.targets("c1", data, float(i)) == {"cap"}
    assert table.targets("other", INVITE, 8.0) == set()
    # the BYE's final response ends it: retransmissions for 32 s (64*T1), then nothing
    assert table.targets("c1", BYE_OK, 38.5) == {"cap"}
    assert table.targets("c1", BYE_OK, 39.0) == set()
    assert "c1" not in table.calls


def test_a_failed_invite_ends_the_dialog_trace() -> None:
    table = TraceTable()
    table.add("c1", "cap", "d", 1, "INVITE", 0.0)
    assert table.targets("c1", BUSY, 1.0) == {"cap"}
    assert table.targets("c1", ACK.replace(b"1 ACK", b"1 ACK"), 2.0) == {"cap"}
    table.expire(40.0)
    assert table.calls == {}


def test_transaction_and_message_scopes() -> None:
    table = TraceTable()
    table.add("c1", "t", "t", 1, "INVITE", 0.0)
    assert table.targets("c1", INVITE, 0.0) == {"t"}
    assert table.targets("c1", OK, 0.0) == {"t"}
    assert table.targets("c1", ACK, 0.0) == {"t"}  # same CSeq number
    assert table.targets("c1", BYE, 0.0) == set()
    table.add("c2", "m", "m", 1, "INVITE", 0.0)
    assert table.targets("c2", INVITE.replace(b"c1", b"c2"), 0.0) == {"m"}
    assert table.targets("c2", OK.replace(b"c1", b"c2"), 0.0) == set()
    assert table.targets("c2", ACK.replace(b"c1", b"c2"), 0.0) == set()


def test_two_ids_on_one_call_the_widest_scope_and_dropping_an_id() -> None:
    table = TraceTable()
    table.add("c1", "a", "t", 1, "INVITE", 0.0)
    table.add("c1", "b", "d", 1, "INVITE", 0.0)
    assert table.targets("c1", BYE, 0.0) == {"a", "b"}
    table.drop_id("a")
    assert table.targets("c1", BYE, 0.0) == {"b"}
    table.drop_id("b")
    assert table.calls == {}


def test_unended_calls_are_forgotten_and_the_table_is_bounded() -> None:
    table = TraceTable(hold=100.0, limit=3)
    for i in range(5):
        table.add(f"c{i}", "cap", "d", 1, "INVITE", 0.0)
    assert list(table.calls) == ["c2", "c3", "c4"]
    table.expire(100.0)
    assert table.calls == {}
    with pytest.raises(ValueError, match="scope"):
        table.add("c9", "cap", "x", 1, "INVITE", 0.0)


def test_filters_match_caller_callee_and_ip() -> None:
    request = initial_request(INVITE)
    assert request is not None
    for text in ("caller=alice", "caller=alice@example.com", "caller=sip:Alice@example.com",
                 "callee=bob", "callee=sip:bob@example.com", "ip=192.0.2.0/24",
                 "ip=192.0.2.7"):
        assert filters_of([text]).matches(request, "192.0.2.7"), text
    for text in ("caller=bob", "callee=alice", "caller=alice@other.org", "ip=198.51.100.1",
                 "ip=2001:db8::/32"):
        assert not filters_of([text]).matches(request, "192.0.2.7"), text
    assert filters_of(["caller=alice", "callee=bob"]).matches(request, "192.0.2.7")
    assert not filters_of(["caller=alice", "callee=carol"]).matches(request, "192.0.2.7")
    assert filters_of([]).matches(request, "192.0.2.7")


def test_only_initial_requests_start_a_filtered_trace_and_bad_filters_are_refused() -> None:
    assert initial_request(INVITE) is not None
    assert initial_request(BYE) is None  # in a dialog
    assert initial_request(OK) is None
    assert initial_request(b"garbage\r\n\r\n") is None
    for bad in ("who=alice", "caller=", "alice", "ip=not-an-ip"):
        with pytest.raises(ValueError):
            parse_filter(bad)


def test_raw_header_lookups_compact_forms_and_case() -> None:
    from services.edge.trace_table import call_id, has_to_tag

    assert call_id(INVITE) == "c1"
    compact = (b"BYE sip:a@b SIP/2.0\r\ni:  x@y \r\nt: <sip:b@c>;TAG=9\r\ncseq: 7 BYE\r\n"
               b"\r\nCall-ID: body-is-not-a-header\r\n")
    assert call_id(compact) == "x@y" and has_to_tag(compact)
    assert not has_to_tag(INVITE) and has_to_tag(BYE)
    assert call_id(b"OPTIONS sip:a@b SIP/2.0\r\n\r\ni: nope\r\n") == ""
    table = TraceTable()
    table.add("x@y", "cap", "t", 7, "BYE", 0.0)
    assert table.targets("x@y", compact, 0.0) == {"cap"}
