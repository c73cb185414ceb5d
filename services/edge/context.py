"""The proxy's record of a forwarded request: the response context and its branches (§16.7).

A `ResponseContext` is created when a request is forwarded statefully (RFC 3261 §16.6) and
lives until its server transaction ends: the request as preprocessed (the base of every
branch), the branches with their client transactions, what has been sent upstream (a final
response, 2xx) and the responses waiting for an async reply route.  `ProxyCore`
(services/edge/core.py) drives them; this module only holds the data, sans-IO.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.edge.addresses import Source
    from services.edge.routing import RouteContext, Target
    from shared.sip import Request, Response
    from shared.transaction import ClientTransaction, ServerTransaction


class Branch:
    """One client transaction of a response context (§16.6 step 9)."""

    __slots__ = (
        "cancel_pending", "cancelled", "context", "final_status", "got_provisional",
        "response", "target", "timer_c", "timer_c_seq", "txn", "via_line",
    )

    def __init__(self, context: ResponseContext, target: Target) -> None:
        self.context = context
        self.target = target
        self.txn: ClientTransaction | None = None
        self.response: Response | None = None  # final response (received or synthesized)
        self.final_status = 0
        self.got_provisional = False
        self.cancelled = False
        self.cancel_pending = False  # CANCEL asked before any provisional (§9.1)
        self.timer_c: float | None = None
        self.timer_c_seq = -1  # this branch's entry in ProxyCore._timer_c_branches
        self.via_line = b""  # our Via line in its request (ProxyCore._own_vias' key)

    @property
    def done(self) -> bool:
        return self.final_status >= 200


class ResponseContext:
    """Everything the proxy keeps about one forwarded request (§16.7)."""

    __slots__ = (
        "branches", "cancelled", "ctx", "final_sent", "reply_gate", "request", "server",
        "source", "started", "two_xx_sent",
    )

    def __init__(self, server: ServerTransaction, request: Request, source: Source,
                 ctx: RouteContext) -> None:
        self.server = server
        self.request = request  # after route preprocessing; the base of every branch
        self.source = source
        self.ctx = ctx
        self.branches: list[Branch] = []
        self.final_sent = False
        self.two_xx_sent = False
        self.cancelled = False
        # Responses waiting for an async reply_route, in arrival order: [done, then].
        self.reply_gate: deque[list[Any]] | None = None
        self.started = 0.0  # `now` when the request arrived (-1 once its time is taken)

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"


__all__ = ["Branch", "ResponseContext"]
