"""A routing module for the media tests, as a user would write one: the default routing
(media anchored), and after a BYE's delete the call's statistics (`ctx.media.stats`)
sent to a collector with a JSON-RPC notification (OpenSIPS jsonrpc module) at
$MEDIA_STATS_DEST, method `call_stats`."""

from __future__ import annotations

import os
from typing import Any

from services.edge import default_routing

reply_route = default_routing.reply_route


def request_route(request: Any, ctx: Any) -> Any:
    routed = default_routing.request_route(request, ctx)
    if request.method != "BYE":
        return routed

    async def report() -> None:
        if routed is not None:
            await routed
        stats = ctx.media.stats
        params: dict[str, Any] = {"call_id": request.call_id,
                                  "error": ctx.media.last_error}
        if stats is not None:
            params.update(stats.acc_extra())
            params["by_tag"] = stats.by_tag
            params["instance"] = stats.instance
        await ctx.jsonrpc_notification(os.environ["MEDIA_STATS_DEST"], "call_stats", params)

    return report()
