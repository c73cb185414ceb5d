"""A routing module for the tests: decides each request from a JSON-RPC lookup service,
through the routing API's ``ctx.jsonrpc_request`` / ``ctx.jsonrpc_notification``.

The lookup address comes from ``RouterSetup.services["lookup"]`` (no module globals);
a Request-URI user ``down`` uses ``services["down"]`` instead (nothing listens there) and
``crash`` makes the hook fail.
"""

from __future__ import annotations

from typing import Any


class LookupRouter:
    def __init__(self, services: Any) -> None:
        self.services = services

    async def request_route(self, request: Any, ctx: Any) -> None:
        user = request.parsed_uri.user or ""
        if user == "crash":
            raise RuntimeError("routing script bug")
        dest = self.services["down" if user == "down" else "lookup"]
        outcome = await ctx.jsonrpc_request(dest, "lookup", {"user": user})
        await ctx.jsonrpc_notification(dest, "seen", [request.call_id])
        if outcome.code == 1:
            ctx.reply(int(outcome.value["code"]), str(outcome.value["reason"]))
        elif outcome.code == -3:
            ctx.reply(500, f"Lookup Error {outcome.value['code']}")
        elif outcome.code == -2:
            ctx.reply(503, "Lookup Unreachable")
        else:
            ctx.reply(500, "Lookup Broken")


def make_router(setup: Any) -> LookupRouter:
    return LookupRouter(setup.services)
