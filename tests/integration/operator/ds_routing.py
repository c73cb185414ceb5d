"""The routing an operator writes for gateways (OpenSIPS: ds_select_dst + t_relay, and in
failure_route ds_mark_dst("p") + ds_next_dst): calls go to dispatcher set 1, round-robin,
failing over to the next gateway when one times out or answers 5xx."""

from __future__ import annotations

from typing import Any

from services.edge import default_routing
from shared.sip import Request, Response


def request_route(request: Request, ctx: Any) -> Any:
    if request.method == "INVITE" and request.to_tag is None:
        if ctx.dispatch(1, 4) is None:
            ctx.reply(503, "No Gateway Available")
            return None
        ctx.record_route()
        ctx.set_failure_route()
        return None
    return default_routing.request_route(request, ctx)


def failure_route(response: Response, ctx: Any) -> None:
    if response.status == 408 or response.status >= 500:
        ctx.ds_mark_dst("p")
        ctx.dispatch_next()
