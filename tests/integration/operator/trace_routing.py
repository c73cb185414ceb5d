"""The routing an operator writes to trace chosen calls (OpenSIPS: ``trace("cap", "d")``
in request_route): a call to user ``traced`` is captured, dialog-wide, to trace id ``cap``;
one to ``filed`` to trace id ``file``; everything is then routed as by default."""

from __future__ import annotations

from typing import Any

from services.edge import default_routing
from shared.sip import Request


def request_route(request: Request, ctx: Any) -> Any:
    if request.method == "INVITE" and request.to_tag is None:
        user = request.parsed_uri.user
        if user == "traced":
            ctx.trace("cap")
        elif user == "filed":
            ctx.trace("file", "d")
    return default_routing.request_route(request, ctx)
