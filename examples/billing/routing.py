"""Prepaid billing in routing (step 1 of the README's billing flow).

    SIPMESH_EDGE_ROUTING_MODULE=examples.billing.routing \
    SIPMESH_BILLING_CGRATES=127.0.0.1:2012 make run

Every new INVITE is authorized with the billing engine (CGRateS SessionSv1.AuthorizeEvent,
as OpenSIPS's cgrates_auth): the caller (From user) is the account, the callee (Request-URI
user) the destination. No credit: 403. Limited credit: the dialog gets MaxUsage as its
timeout and the dialog service ends the call with BYE to both sides when it runs out.
The account is written in the CDR (`extra.account`). Then the default routing runs.
"""

from __future__ import annotations

import os
from typing import Any

from services.edge import default_routing
from services.edge.cgrates import authorize

CGRATES = os.environ.get("SIPMESH_BILLING_CGRATES", "127.0.0.1:2012")


async def request_route(request: Any, ctx: Any) -> None:
    if request.method == "INVITE" and request.to_tag is None and not ctx.loose_routed:
        account = request.from_addr.uri.user or ""
        auth = await authorize(ctx, CGRATES, account=account,
                               destination=request.parsed_uri.user or "")
        if auth.apply(ctx, account):
            return  # refused: no credit, or the billing engine is away
    result = default_routing.request_route(request, ctx)
    if result is not None:
        await result
