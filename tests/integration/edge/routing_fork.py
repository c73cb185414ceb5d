"""Routing module for the forking tests: `sip:fork@...` rings every target listed in the
static route `fork` (`|`-separated), in parallel; everything else as the default module.

Loaded by the edge from this directory (PYTHONPATH) as `routing_fork`.
"""

from __future__ import annotations

from typing import Any

from services.edge import default_routing


def make_router(setup: Any) -> Any:
    targets = [t for t in setup.static_routes.get("fork", "").split("|") if t]

    class ForkRouter:
        def request_route(self, request: Any, ctx: Any) -> None:
            if not ctx.loose_routed and request.parsed_uri.user == "fork" and ctx.trusted:
                ctx.record_route()
                for target in targets:
                    ctx.forward(target)
                return
            default_routing.request_route(request, ctx)

    return ForkRouter()
