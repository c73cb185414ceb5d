"""Properties of the client transactions under any order of responses and timer firings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.transaction import (
    ResponseReceived,
    State,
    TimedOut,
    TimerSettings,
    TransactionLayer,
)
from tests.unit.transaction.sipmsg import request, response_to

STEP = st.one_of(st.sampled_from([100, 180, 183, 200, 302, 404, 486, 503, 603]),
                 st.floats(min_value=0.01, max_value=40.0))


@settings(max_examples=200, deadline=None)
@given(method=st.sampled_from(["INVITE", "OPTIONS"]), reliable=st.booleans(),
       steps=st.lists(STEP, max_size=25))
def test_at_most_one_final_response_reaches_the_tu(method: str, reliable: bool,
                                                   steps: list[int | float]) -> None:
    layer = TransactionLayer(TimerSettings(t1=0.5))
    req = request(method, branch="z9hG4bKprop")
    txn, _ = layer.create_client(req, req.serialize(), ("10.0.0.2", 5060), reliable, 0.0)
    now = 0.0
    finals = 0
    outcomes = 0
    for step in steps:
        if isinstance(step, int):
            events = layer.receive_response(response_to(req, step), now) or []
        else:
            now += step
            events = layer.handle_timer(now)
        for e in events:
            if isinstance(e, ResponseReceived) and e.response.status >= 200:
                finals += 1
            if isinstance(e, ResponseReceived | TimedOut) and (
                    isinstance(e, TimedOut) or e.response.status >= 200):
                outcomes += 1
    assert finals <= 1
    assert outcomes <= 1  # a final response or a timeout, never both
    # Whatever happened, enough time ends every transaction and forgets it.
    now += 200.0
    while (deadline := layer.next_deadline()) is not None:
        layer.handle_timer(max(deadline, now))
    if method == "INVITE" and txn.state is State.PROCEEDING:
        return  # §17.1.1.2: no timer in Proceeding; the proxy's Timer C ends it (§16.8)
    assert txn.state is State.TERMINATED
    assert layer.clients == {}
