"""Routing of the dialog integration tests: the default routing, plus what a billing or
limits script does, chosen by the Request-URI user so plain sipp scenarios drive it:

* `t<N>...`   -> ctx.dialog.set_timeout(N)
* `lim<N>...` -> at most N dialogs in profile caller=<From user> (486 beyond)
* `tag...`    -> owned where sharing tag `vip` is active
* anything    -> ctx.acc.extra["account"] = the Request-URI user; profile "calls" (no value)
"""

from __future__ import annotations

import re
from typing import Any

from services.edge import default_routing


async def request_route(request: Any, ctx: Any) -> None:
    if request.method == "INVITE" and request.to_tag is None:
        user = request.parsed_uri.user or ""
        ctx.acc.extra["account"] = user
        ctx.dialog.set_profile("calls")
        m = re.match(r"t(\d+)", user)
        if m:
            ctx.dialog.set_timeout(int(m.group(1)))
        m = re.match(r"lim(\d+)", user)
        if m:
            caller = request.from_addr.uri.user or ""
            if not await ctx.dialog.set_profile_limited("caller", caller, int(m.group(1))):
                ctx.reply(486, "Too Many Calls")
                return
        if user.startswith("tag"):
            ctx.dialog.set_sharing_tag("vip")
    result = default_routing.request_route(request, ctx)
    if result is not None:
        await result


# The default routing's reply route too (media anchoring answers the 2xx's SDP there).
reply_route = default_routing.reply_route
