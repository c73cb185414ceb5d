"""Graceful drain of the sans-IO proxy (issue 20): once draining, a new UDP request starts
no transaction (its retransmission reaches the edge that replaces this one), while what
is running finishes: retransmissions are absorbed, responses relayed, CANCEL and ACK go
on. TCP requests are still served (no retransmission would rescue them)."""

from __future__ import annotations

from services.edge.core import Send
from shared.sip import Response, parse_message
from tests.unit.edge.proxyharness import TCP, Harness, answer, invite, to


def statuses(sends: list[Send]) -> list[int]:
    return [m.status for m in (parse_message(s.data) for s in sends) if isinstance(m, Response)]


def test_running_transactions_finish_new_udp_ones_are_left_to_retransmission() -> None:
    h = Harness()
    first = h.feed(invite())
    [fwd] = to(first, 5090)
    assert h.core.pending == 2  # our server and client transactions
    h.core.draining = True
    # A new INVITE (another branch and call): nothing sent, nothing started.
    assert h.feed(invite(branch="z9hG4bKnew", call_id="c2")) == []
    assert h.core.pending == 2 and h.core.drained_requests == 1
    # The running INVITE's retransmission is still absorbed (100 again, no new branch).
    again = h.feed(invite())
    assert statuses(again) == [100] and to(again, 5090) == []
    # Its response still comes back through us, and the transactions end.
    relayed = to(h.feed(answer(fwd, 486), peer=("127.0.0.1", 5090)), 5091)
    assert [r.status for r in relayed if isinstance(r, Response)] == [486]
    assert h.core.pending == 0


def test_cancel_of_a_running_invite_goes_on_and_tcp_is_still_served() -> None:
    h = Harness()
    [fwd] = to(h.feed(invite()), 5090)
    h.feed(answer(fwd, 180), peer=("127.0.0.1", 5090))
    h.core.draining = True
    sends = h.feed(invite(method="CANCEL"))
    assert 200 in statuses(sends)  # §9.2: the CANCEL is answered and sent downstream
    assert any(parse_message(s.data).method == "CANCEL"  # type: ignore[union-attr]
               for s in sends if s.dest.port == 5090)
    # Over TCP no retransmission would reach a successor: served as before.
    tcp = h.feed(invite(branch="z9hG4bKtcp", call_id="c3", transport="TCP"), itf=TCP,
                 conn=7)
    assert statuses(tcp) == [100] and h.core.drained_requests == 0
