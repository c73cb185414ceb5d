"""The cluster side of anycast (thin adapter): capability `tm-repl` over `shared/cluster`.

`setup_anycast(runtime, app, config)` reads `[edge.tm]` (anycast.TmConfig) and, when
`replication_cluster` is on, `[edge.cluster]` (shared.cluster.ClusterConfig), builds the
`ClusterNode`, the sans-IO `AnycastCore` the proxy core consults, and this adapter, which
only moves bytes:

* `send(item)`: a `ClusterSend` the core emitted goes to its owner (`ClusterNode.send`) or
  to every node having `tm-repl` (`send_all`). Transaction-key announcements are batched
  per 20 ms window into one message. A send the cluster refuses (owner unreachable,
  node disabled) goes back to the core (`replication_failed`: the reply forwarded by its
  Via, RFC 3261 §16.11) and raises `E_CORE_TM_REPLICATION_FAILED`;
* `on_update(src, payload)`: a message from another node is re-injected into the core
  (`ProxyCore.replicated`) as if it had arrived on our own anycast listener, and what the
  core returns is carried out by the app like any other output.

Every decision is the core's (services/edge/anycast.py); nothing here parses SIP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from services.edge.anycast import (
    ANNOUNCE,
    AUTO_CANCEL,
    REPLY,
    AnycastCore,
    ClusterSend,
    TmConfig,
    decode,
    decode_keys,
    encode,
    encode_keys,
)

CAPABILITY = "tm-repl"  # as OpenSIPS tm registers it (no data sync)
# Keys created within this window travel in one message: at 400 calls/s (800 server
# transactions/s) one message carries ~8 keys. A held INVITE's claim must reach the other
# nodes within [edge.tm] anycast_hold (50 ms) minus this window (anycast.py).
ANNOUNCE_WINDOW = 0.01
_KINDS = {REPLY: "reply", AUTO_CANCEL: "auto_cancel"}
_REASONS = {-1: "disabled", -2: "unreachable", -3: "send_error"}  # shared.cluster codes


class AnycastCluster:
    """Moves `tm-repl` packets between the proxy core of this node and the cluster."""

    def __init__(self, node: Any, app: Any, core: AnycastCore, events: Any = None,
                 metrics: Any = None) -> None:
        self.node = node  # shared.cluster.ClusterNode
        self.app = app  # services.edge.app.EdgeApp
        self.core = core
        self.events = events
        self.log = structlog.get_logger("edge.anycast").bind(node=core.node_id)
        self._keys: list[tuple[str, ...]] = []
        self._flush: asyncio.Handle | None = None
        self.handover: Any = None  # Histogram: sender's send to our processing, by kind
        if metrics is not None:
            from prometheus_client import Histogram

            self.handover = Histogram(
                "sipmesh_edge_anycast_handover_seconds",
                "a message handed over by another anycast node: its send to our processing "
                "(wall clocks of two hosts: meaningful with synchronised clocks)", ["kind"],
                registry=metrics, buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05,
                                           0.25, 1))

    def register(self) -> None:
        self.node.register_capability(
            CAPABILITY, produce=lambda: [], apply_sync=lambda _records: None,
            apply_update=self.on_update, needs_sync=False)

    def alive(self, node_id: int) -> bool:
        return node_id in self.node.reachable

    # -- out ----------------------------------------------------------------------------
    def send(self, item: ClusterSend) -> None:
        if item.kind == ANNOUNCE:
            self._keys.extend(item.keys)
            if self._flush is None:
                self._flush = asyncio.get_running_loop().call_later(
                    ANNOUNCE_WINDOW, self._announce)
            return
        from shared.cluster import SENT

        payload = encode(item, time.time())
        if item.node is None:
            result = self.node.send_all(CAPABILITY, payload)
        else:
            result = self.node.send(CAPABILITY, item.node, payload)
        if result == SENT:
            return
        reason = _REASONS.get(result, str(result))
        self.log.warning("anycast.replication_failed", owner=item.node, reason=reason,
                         call_id=item.call_id, kind=_KINDS.get(item.kind, "request"))
        if self.events is not None:
            self.events.publish("E_CORE_TM_REPLICATION_FAILED", {
                "node": item.node or 0, "kind": _KINDS.get(item.kind, "request"),
                "callid": item.call_id, "reason": reason})
        self.app.feed(lambda core, now: core.replication_failed(item, now))

    def _announce(self) -> None:
        self._flush = None
        keys, self._keys = self._keys, []
        if keys:
            self.node.send_all(CAPABILITY, encode(ClusterSend(ANNOUNCE, None,
                                                              encode_keys(keys))))

    # -- in -----------------------------------------------------------------------------
    def on_update(self, src: int, payload: bytes) -> None:
        try:
            item = decode(payload)
            if item.kind == ANNOUNCE:
                loop = asyncio.get_running_loop()
                self.core.learn(src, decode_keys(item.data), loop.time())
                return
        except ValueError as exc:
            self.log.warning("anycast.bad_packet", src=src, error=str(exc))
            return
        if self.handover is not None and item.sent_at > 0:
            self.handover.labels(_KINDS.get(item.kind, "request")).observe(
                max(0.0, time.time() - item.sent_at))
        self.app.feed(lambda core, now: core.replicated(item, src, now))


def setup_anycast(runtime: Any, app: Any, t1: float, workers: int) -> AnycastCluster | None:
    """Builds the cluster node and the anycast core of this edge when `[edge.tm]
    replication_cluster` is on (None otherwise); call before `app.start()`."""
    from shared.cluster import ClusterConfig, ClusterNode, run_local_mi
    from shared.cluster import register_mi as register_cluster_mi
    from shared.config import load_section

    tm = load_section(TmConfig, "edge.tm")
    tm.validate()
    if not tm.replication_cluster:
        if any(itf.anycast for itf in app.config.interfaces()):
            structlog.get_logger("edge.anycast").warning(
                "anycast.no_cluster", consequence="an ;anycast listener without [edge.tm] "
                "replication_cluster handles every message locally, as a plain listener")
        return None
    if workers > 1:
        raise ValueError("[edge.tm] replication_cluster needs [edge] workers = 1 "
                         "(run one edge process per node)")
    cluster_config = load_section(ClusterConfig, "edge.cluster")
    node = ClusterNode(cluster_config, events=runtime.events, registry=runtime.registry,
                       mi_runner=lambda cmd, params: run_local_mi(runtime, cmd, params))
    register_cluster_mi(runtime, node)
    holder: list[AnycastCluster] = []
    core = AnycastCore(node.id, lambda n: holder[0].alive(n), param=tm.cluster_param,
                       auto_cancel=tm.cluster_auto_cancel, key_ttl=64 * t1,
                       hold=tm.anycast_hold)
    adapter = AnycastCluster(node, app, core, events=runtime.events, metrics=runtime.metrics)
    holder.append(adapter)
    adapter.register()
    app.anycast_core = core
    app.anycast = adapter
    runtime.declare_events("E_CORE_TM_REPLICATION_FAILED")
    for name in core.counters.as_dict():
        runtime.stats.gauge("tm", name, lambda n=name: int(getattr(core.counters, n)))
    runtime.stats.gauge("tm", "anycast_keys_known", lambda: core.known_keys)

    async def tm_anycast() -> Any:
        # A list per node: the gateway's fan-out merge concatenates the nodes' answers
        # (get_statistics through the gateway sums them over the nodes instead).
        return {"Nodes": [{"node_id": core.node_id, **core.counters.as_dict(),
                           "anycast_keys_known": core.known_keys}]}

    runtime.command("tm_anycast", fanout=True,
                    doc="this anycast node's tm: replication statistics, by node")(tm_anycast)

    async def _start() -> None:
        await node.start()
        runtime.meta.update(node.meta())

    async def _stop() -> None:
        await node.stop()

    runtime.on_start(_start)
    runtime.on_stop(_stop)

    return adapter
