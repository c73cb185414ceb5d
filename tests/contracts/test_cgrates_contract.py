"""The billing authorization contract (CGRateS SessionSv1.AuthorizeEvent, as OpenSIPS's
cgrates_auth uses it), over the routing helper `services.edge.cgrates.authorize` and the
real `ctx.jsonrpc_request`.

Runs against the in-repo fake CGRateS (services/dialog/testing/fake_cgrates.py); with
`CGRATES_ADDR=host:port` the engine-independent part runs against a real cgr-engine too
(its accounts are not scripted, so only the shapes and the unknown-account refusal are
checked there).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from services.dialog.testing.fake_cgrates import FakeCGRateS
from services.edge.cgrates import Authorization, authorize, from_max_usage
from shared.events.jsonrpc_route import jsonrpc_request

REAL = os.environ.get("CGRATES_ADDR", "")


class Ctx:
    """What `authorize` uses of a RouteContext: the request, the source, jsonrpc_request,
    and what `Authorization.apply` sets."""

    def __init__(self) -> None:
        self.request = SimpleNamespace(call_id="c-1@test", from_tag="ft")
        self.source = SimpleNamespace(interface=SimpleNamespace(host="127.0.0.1"))
        self.acc = SimpleNamespace(extra={})
        self.timeout: int | None = None
        self.replied: tuple[int, str] | None = None
        self.dialog = SimpleNamespace(set_timeout=self._set_timeout)

    def _set_timeout(self, seconds: int) -> None:
        self.timeout = seconds

    def reply(self, status: int, reason: str) -> None:
        self.replied = (status, reason)

    async def jsonrpc_request(self, dest: str, method: str, params: Any, **kw: Any) -> Any:
        return await jsonrpc_request(dest, method, params, **kw)


@pytest.fixture
async def engine() -> AsyncIterator[FakeCGRateS]:
    fake = FakeCGRateS()
    fake.set_credit("unlimited", None)
    fake.set_credit("minute", 60)
    fake.set_credit("broke", 0)
    fake.set_credit("tiny", 1.5)
    await fake.start()
    yield fake
    await fake.close()


@pytest.mark.parametrize(("account", "allowed", "seconds", "status"), [
    ("unlimited", True, None, 0), ("minute", True, 60, 0), ("tiny", True, 1, 0),
    ("broke", False, None, 403)])
async def test_max_usage_becomes_the_dialog_timeout(engine: FakeCGRateS, account: str,
                                                    allowed: bool, seconds: int | None,
                                                    status: int) -> None:
    ctx = Ctx()
    auth = await authorize(ctx, engine.address, account=account, destination="1002")
    assert (auth.allowed, auth.seconds, auth.status) == (allowed, seconds, status)
    answered = auth.apply(ctx, account)
    assert answered is not allowed
    assert ctx.timeout == seconds and ctx.acc.extra == {"account": account}
    assert (ctx.replied is not None) is not allowed
    event = engine.authorized[-1]
    assert event["Account"] == account and event["Destination"] == "1002"
    assert event["OriginID"] == "c-1@test;ft"


async def test_an_unknown_account_is_refused(engine: FakeCGRateS) -> None:
    auth = await authorize(Ctx(), REAL or engine.address, account="nobody-here",
                           destination="1002")
    assert not auth.allowed and auth.status == 403


async def test_an_engine_that_is_away_fails_closed_unless_told_otherwise() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        closed = await authorize(Ctx(), dead, account="x", destination="y", timeout=0.2)
        opened = await authorize(Ctx(), dead, account="x", destination="y", timeout=0.2,
                                 fail_open=True)
    assert (closed.allowed, closed.status) == (False, 503)
    assert opened == Authorization(True)


def test_max_usage_values() -> None:
    assert from_max_usage(-1) == Authorization(True)
    assert from_max_usage(0).status == 403
    assert from_max_usage(2_999_999_999).seconds == 2
    assert from_max_usage("junk").status == 500


async def test_the_wire_is_go_jsonrpc(engine: FakeCGRateS) -> None:
    """Replies carry `error: null` beside the result (net/rpc/jsonrpc), and a bad method
    is an error string, as cgr-engine answers."""
    outcome = await jsonrpc_request(REAL or engine.address, "CoreSv1.Ping", [{}])
    assert outcome.code == 1 and outcome.value == "Pong"
    if not REAL:
        answer = engine.answer({"id": 7, "method": "Nope.Nope", "params": [{}]})
        assert answer["id"] == 7 and answer["result"] is None and "Nope" in answer["error"]
