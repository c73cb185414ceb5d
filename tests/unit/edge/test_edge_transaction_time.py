"""The proxy core tells its adapter when each stateful request's final response leaves
(the edge's transaction time histogram, services/edge/operator_mi.py): once per request,
with the method, the final status and the time the request arrived."""

from __future__ import annotations

from shared.sip import Request
from tests.unit.edge.proxyharness import Harness, answer, invite, to


def test_one_observation_per_transaction_with_its_arrival_time() -> None:
    h = Harness()
    seen: list[tuple[str, int, float]] = []
    h.core.on_transaction = lambda method, status, started: seen.append(
        (method, status, started))
    h.now = 10.0
    sends = h.feed(invite())
    [fwd] = [m for m in to(sends, 5090) if isinstance(m, Request)]
    h.now = 10.5
    h.feed(answer(fwd, 180), peer=("127.0.0.1", 5090))
    assert seen == []  # provisional: not final yet
    h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))
    h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))  # a retransmitted 2xx
    assert seen == [("INVITE", 200, 10.0)]
    # A request answered without a transaction (483 for Max-Forwards 0) is not one.
    h.feed(invite(mf=0, branch="z9hG4bK2", call_id="c2"))
    assert len(seen) == 1


def test_a_refusal_by_routing_is_a_transaction_too() -> None:
    h = Harness(trusted=())
    seen: list[tuple[str, int, float]] = []
    h.core.on_transaction = lambda method, status, started: seen.append(
        (method, status, started))
    h.now = 3.0
    h.feed(invite("sip:bob@elsewhere.example", method="MESSAGE"))
    assert seen == [("MESSAGE", 403, 3.0)]
