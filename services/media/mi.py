"""The rtpengine MI commands, named and shaped as OpenSIPS answers them (schemas in
contracts/mi/rtpengine_*.json):

* `rtpengine_show` -> `[{"Set": 0, "Nodes": [{"url", "index", "disabled", "weight",
  "recheck_ticks"}]}]`;
* `rtpengine_enable url 0|1 [setid]` -> "OK", 404 "RTP engine not found";
* `rtpengine_reload` -> "OK" once the `rtpengine` table was read again.

All three are fan-out commands: the gateway sends them to every broker (each keeps its own
view of which instance answers) and unites the `rtpengine_show` answers
(gateway/merging.py).  Statistics group `rtpengine:`.
"""

from __future__ import annotations

from typing import Any

from services.media.broker import Broker
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, MiError, int_param
from shared.service.runtime import ServiceRuntime


def register_mi(runtime: ServiceRuntime, broker: Broker) -> None:
    @runtime.command("rtpengine_show", fanout=True, doc="the rtpengine sets and their state")
    async def rtpengine_show() -> Any:
        return broker.sets.show(broker.now())

    @runtime.command("rtpengine_enable", (("url", "enable"), ("url", "enable", "setid")),
                     fanout=True, doc="enable (1) or disable (0) an rtpengine instance")
    async def rtpengine_enable(url: Any, enable: Any, setid: Any = None) -> Any:
        value = int_param(enable, "enable")
        if value not in (0, 1):
            raise MiError(BAD_REQUEST, "Bad enable")
        set_id = None if setid is None else int_param(setid, "setid")
        found, changes = broker.sets.mi_enable(str(url), bool(value), set_id)
        for change in changes:
            broker._changed(change)
        if not found:
            raise MiError(NOT_FOUND, "RTP engine not found")
        return "OK"

    @runtime.command("rtpengine_reload", fanout=True, doc="read the rtpengine table again")
    async def rtpengine_reload() -> Any:
        if broker.store is None:
            raise MiError(BAD_REQUEST, "Dynamic loading not enabled")
        try:
            await broker.reload()
        except Exception as exc:
            broker.log.warning("rtpengine_reload_failed", error=repr(exc))
            raise MiError(500, "Internal error") from None
        return "OK"

    def values() -> dict[str, int]:
        enabled = sum(1 for e in broker.sets.engines() if not e.disabled)
        total = sum(1 for _ in broker.sets.engines())
        ng = broker.ng.stats
        return {**broker.counters, "instances": total, "instances_enabled": enabled,
                "ng_requests": ng.requests, "ng_retransmissions": ng.retransmissions,
                "ng_timeouts": ng.timeouts, "ng_dropped": ng.dropped}

    runtime.stats.group("rtpengine", values)
