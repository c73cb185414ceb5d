"""Edge routing for the FreeSWITCH tests, as a user would write it: calls to
`conference@<edge>` go to a FreeSWITCH box of group `media` chosen by load
(OpenSIPS ds_select_dst with fetch_freeswitch_stats); everything else as the default."""

from __future__ import annotations

from typing import Any

from services.edge import default_routing


def request_route(request: Any, ctx: Any) -> Any:
    if request.method == "INVITE" and not ctx.loose_routed and \
            request.parsed_uri.user == "conference":
        uri = ctx.freeswitch.select("media")
        if uri is None:
            ctx.reply(503, "No FreeSWITCH Available")
            return None
        ctx.record_route()
        ctx.forward(next_hop=uri)
        return None
    return default_routing.request_route(request, ctx)
