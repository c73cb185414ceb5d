"""Flood protection in a running edge: the guard before the proxy core, the MI commands.

The rules are in :mod:`services.edge.pike` (sans-IO). `PikeGuard.admit` sees every
message a worker receives before the proxy core does: responses and keep-alives pass,
trusted sources pass (``ctx.trusted``: ``[edge] trusted`` and the address table, as
OpenSIPS scripts exempt them before ``pike_check_req``), any other request is counted
and dropped while its source is blocked. The request that blocks a source raises
``E_PIKE_BLOCKED {ip}`` on the event bus (family ``pike``) and logs a warning.

MI (OpenSIPS names, OpenSIPS 3's shapes; schemas in ``contracts/mi``): ``pike_list`` ->
``{"IPs": [...]}`` (the blocked addresses of the worker answering), ``pike_rm ip`` ->
"OK", 404 "Match not found", 400 "IP not blocked". Statistics ``pike:`` (``blocked_ips``,
``blocks``, ``blocked_requests``, ``nodes``). Each worker keeps its own tree (OpenSIPS
shares one between its processes): with N workers a source is limited per worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from services.edge.pike import PikeTree
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, MiError

if TYPE_CHECKING:
    from services.edge.addresses import Source
    from services.edge.config import EdgeConfig
    from services.edge.routing import TrustedNetworks
    from shared.service.runtime import ServiceRuntime


class PikeGuard:
    def __init__(self, tree: PikeTree, trust: TrustedNetworks, clock: Callable[[], float],
                 on_block: Callable[[str], object]) -> None:
        self.tree = tree
        self.trust = trust
        self.clock = clock
        self.on_block = on_block

    def admit(self, data: bytes, source: Source) -> bool:
        """False: drop this message (a request from a blocked source)."""
        if len(data) <= 4 or data.startswith(b"SIP/"):
            return True  # a keep-alive, a response
        if self.trust.trusts(source):
            return True
        verdict = self.tree.check(source.host, self.clock())
        if verdict.newly:
            self.on_block(source.host)
        return not verdict.blocked


def attach_pike(runtime: ServiceRuntime, trust: TrustedNetworks,
                config: EdgeConfig) -> PikeGuard | None:
    """The guard (None when ``pike_density`` is 0) and its MI commands."""
    if config.pike_density <= 0:
        return None
    clock = time.monotonic
    tree = PikeTree(density=config.pike_density, unit=config.pike_unit,
                    remove_latency=config.pike_remove_latency, now=clock())
    log = structlog.get_logger("edge")
    runtime.declare_events("E_PIKE_BLOCKED")

    def on_block(ip: str) -> None:
        log.warning("pike.blocked", ip=ip, density=config.pike_density, unit=config.pike_unit)
        runtime.events.publish("E_PIKE_BLOCKED", {"ip": ip})

    guard = PikeGuard(tree, trust, clock, on_block)

    @runtime.command("pike_list", fanout=True, doc="the source addresses blocked by pike")
    async def pike_list() -> Any:
        return {"IPs": tree.blocked(clock())}

    @runtime.command("pike_rm", (("ip",),), fanout=True, doc="unblock a source address")
    async def pike_rm(ip: Any) -> Any:
        try:
            done = tree.unblock(str(ip))
        except ValueError:
            raise MiError(500, "Bad IP") from None
        if done is None:
            raise MiError(NOT_FOUND, "Match not found")
        if not done:
            raise MiError(BAD_REQUEST, "IP not blocked")
        log.info("pike.unblocked", ip=str(ip), by="pike_rm")
        return "OK"

    def values() -> dict[str, int]:
        return {"blocked_ips": len(tree.blocked(clock())), "blocks": tree.blocks,
                "blocked_requests": tree.blocked_requests, "nodes": tree.nodes}

    runtime.stats.group("pike", values)
    return guard
