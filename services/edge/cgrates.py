"""Billing authorization from routing, as OpenSIPS's `cgrates_auth` does it.

`await authorize(ctx, "127.0.0.1:2012", account="1001", destination="1002")` sends
CGRateS's `SessionSv1.AuthorizeEvent` (raw JSON-RPC over TCP through
`ctx.jsonrpc_request`, the OpenSIPS `jsonrpc` module) and reads `MaxUsage`, in
nanoseconds: -1 means unlimited, 0 means no credit, anything else is the longest the call
may last. `Authorization.apply(ctx)` then does what a billing script does with it: a call
without credit is answered (403 by default, CGRateS's usual "insufficient credit"), a
limited one gets the limit as its dialog timeout (`ctx.dialog.set_timeout`), so the dialog
service ends it with BYE to both sides when the money runs out, and the account goes into
the CDR (`ctx.acc.extra["account"]`). An unreachable billing engine answers 503 unless
`fail_open` lets the call through unlimited.

CGRateS itself cannot run here; `services/dialog/testing/fake_cgrates.py` speaks the same
wire format, and the contract suite (tests/contracts/test_cgrates_contract.py) can be
pointed at a real engine with `CGRATES_ADDR`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

UNLIMITED = -1
NS = 1_000_000_000


@dataclass(frozen=True)
class Authorization:
    """The billing engine's answer: `seconds` (None: unlimited), or why the call is
    refused (`status`, `reason`)."""

    allowed: bool
    seconds: int | None = None
    status: int = 0
    reason: str = ""

    def apply(self, ctx: Any, account: str = "") -> bool:
        """Refuses the call (True: answered) or sets its timeout; the account goes in the CDR."""
        if account:
            ctx.acc.extra["account"] = account
        if not self.allowed:
            ctx.reply(self.status, self.reason)
            return True
        if self.seconds is not None:
            ctx.dialog.set_timeout(self.seconds)
        return False


def from_max_usage(max_usage: Any) -> Authorization:
    """SessionSv1.AuthorizeEvent's MaxUsage (ns) -> an Authorization."""
    try:
        ns = int(max_usage)
    except (TypeError, ValueError):
        return Authorization(False, status=500, reason="Bad Billing Answer")
    if ns == UNLIMITED or ns < 0:
        return Authorization(True)
    if ns == 0:
        return Authorization(False, status=403, reason="Insufficient Credit")
    # Whole seconds, rounded down (a call must never outlast its credit); at least one.
    return Authorization(True, seconds=max(1, ns // NS))


async def authorize(ctx: Any, dest: str, *, account: str, destination: str,
                    tenant: str = "cgrates.org", timeout: float = 0.5,
                    fail_open: bool = False) -> Authorization:
    request = ctx.request
    event = {
        "GetMaxUsage": True, "Tenant": tenant, "ID": uuid.uuid4().hex,
        "Event": {
            "Account": account, "Subject": account, "Destination": destination,
            "OriginID": f"{request.call_id};{request.from_tag or ''}",
            "OriginHost": ctx.source.interface.host, "RequestType": "*prepaid",
            "SetupTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ToR": "*voice", "Category": "call",
        },
    }
    outcome = await ctx.jsonrpc_request(dest, "SessionSv1.AuthorizeEvent", [event],
                                        connect_timeout=timeout, write_timeout=timeout,
                                        read_timeout=timeout)
    if outcome.code == 1 and isinstance(outcome.value, dict):
        return from_max_usage(outcome.value.get("MaxUsage"))
    if outcome.code == -3:  # the engine refused: unknown account, no credit...
        return Authorization(False, status=403, reason="Not Authorized")
    if fail_open:
        return Authorization(True)
    return Authorization(False, status=503, reason="Billing Unavailable")
