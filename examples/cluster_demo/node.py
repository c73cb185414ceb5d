"""``python -m examples.cluster_demo``: a runnable cluster node holding a replicated key/value
store -- the smallest clustered service, used by tests/cluster and tests/bench.

It embeds the engine exactly as a real service does: a :class:`ServiceRuntime` (MI,
/metrics, /health), a :class:`ClusterNode` configured from the ``[demo.cluster]`` section
(file via ``$SIPMESH_CONFIG``, or ``SIPMESH_DEMO_CLUSTER_<FIELD>`` variables, or the CLI
flags below), one capability ``demo-kv-repl`` (full sync, live updates and anti-entropy:
``summary`` is every key with its value, so two nodes repair what differs whenever a link
comes back Up), the clusterer MI commands, and the two clusterer events. A cluster needs a
shared secret (``--secret`` or ``SIPMESH_DEMO_CLUSTER_SECRET``; ``sipmesh up --nodes`` draws
one per run). Under ``sipmesh up --nodes N`` (it is the catalog's
``nodes_only`` service ``cluster-demo``, cluster 2, sharing tag ``vip/2``) it registers in
the mesh's discovery with its node in the metadata, so
``SIPMESH_DEMO_CLUSTER_DISCOVERY_SERVICE=cluster-demo`` finds the other nodes without
static seeds, and its events go to the mesh's event bus (``event_subscribe`` at the
gateway); standalone they stay on an embedded bus.

Demo MI: ``kv_put key value`` (stores and broadcasts), ``kv_put_acked key value`` (stores,
replicates and waits for the acks: answers which nodes hold it and which did not confirm),
``kv_get key``, ``kv_count`` (count and an order-independent checksum), ``kv_fill count size
[prefix]`` (local bulk load, not replicated: anti-entropy repairs it on the next
reconnect), ``kv_burst count size [prefix]`` (stores and replicates that many
records as fast as the links take them), ``kv_index`` (this node's index among the
synced nodes),
``demo_events`` (the clusterer events raised here). It prints one line when ready::

    cluster-demo ready node=1 repl=127.0.0.1:PORT mi=http://127.0.0.1:PORT/mi pid=PID
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import Any

CAP = "demo-kv-repl"


class KvStore:
    """The demo's data: a dict, and its records as ``key NUL value``."""

    def __init__(self, produce_delay: float = 0.0, delay_every: int = 200) -> None:
        self.data: dict[bytes, bytes] = {}
        self.produce_delay = produce_delay
        self.delay_every = delay_every

    @staticmethod
    def record(key: bytes, value: bytes) -> bytes:
        return key + b"\0" + value

    def apply(self, rec: bytes) -> None:
        key, _, value = rec.partition(b"\0")
        self.data[key] = value

    def apply_sync(self, records: list[bytes]) -> None:
        data = self.data
        for rec in records:
            key, _, value = rec.partition(b"\0")
            data[key] = value

    def apply_update(self, src: int, payload: bytes) -> None:
        self.apply(payload)

    async def produce(self) -> AsyncIterator[bytes]:
        """The whole store; ``produce_delay`` slows it down (tests kill a donor mid-sync)."""
        for i, (k, v) in enumerate(list(self.data.items())):
            yield k + b"\0" + v
            if i % self.delay_every == self.delay_every - 1:
                await asyncio.sleep(self.produce_delay)

    def summary(self) -> Iterator[tuple[bytes, bytes]]:
        """Anti-entropy items: the value is the version (records are small)."""
        return iter(list(self.data.items()))

    def records_for(self, keys: Collection[bytes]) -> Iterator[bytes]:
        data = self.data
        return iter([k + b"\0" + data[k] for k in keys if k in data])

    def checksum(self) -> str:
        acc = 0
        for k, v in self.data.items():
            acc ^= int.from_bytes(hashlib.blake2b(k + b"\0" + v, digest_size=8).digest(), "big")
        return f"{acc:016x}"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m examples.cluster_demo", description=__doc__)
    p.add_argument("--node-id", type=int)
    p.add_argument("--cluster-id", type=int)
    p.add_argument("--listen", help="replication host:port (port 0 = ephemeral)")
    p.add_argument("--seeds", help="comma-separated node_id@host:port")
    p.add_argument("--seed", action="store_true", help="this node is a seed")
    p.add_argument("--secret")
    p.add_argument("--members", help="allowed node ids, e.g. 1-5")
    p.add_argument("--sharing-tag", action="append", default=[],
                   help="name/cluster_id=active|backup (repeatable)")
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--produce-delay", type=float, default=0.0)
    p.add_argument("--fill", type=int, default=0, help="preload this many records")
    p.add_argument("--record-size", type=int, default=200)
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from shared.cluster import ClusterConfig, ClusterNode, register_mi, run_local_mi
    from shared.config import load_section
    from shared.events.bus import EmbeddedEventBus
    from shared.events.schema import EventCatalog
    from shared.rpc.jsonrpc import BAD_REQUEST, MiError
    from shared.service import RuntimeConfig, ServiceRuntime
    from shared.service.boot import discovery_settings, serve_announced

    config = load_section(ClusterConfig, "demo.cluster")
    overrides: dict[str, Any] = {}
    for field in ("node_id", "cluster_id", "listen", "secret", "members"):
        value = getattr(args, field)
        if value is not None:
            overrides[field] = value
    if args.seeds is not None:
        overrides["seeds"] = tuple(s for s in args.seeds.split(",") if s)
    if args.seed:
        overrides["seed"] = True
    if args.sharing_tag:
        overrides["sharing_tags"] = tuple(args.sharing_tag)
    config = dataclasses.replace(config, **overrides)

    discovery, registry = discovery_settings()  # registry: an embedded one when standalone
    runtime = ServiceRuntime("cluster-demo", config=RuntimeConfig(port=args.http_port),
                             discovery=discovery, registry=registry)
    own_bus = registry is not None  # standalone: no gateway to forward events to
    bus = EmbeddedEventBus(EventCatalog.load(), service="cluster-demo",
                           node=str(config.node_id)) if own_bus else runtime.events
    seen: list[dict[str, Any]] = []

    async def remember(event: Any) -> None:
        seen.append({"event": event.name, "params": dict(event.params)})
        del seen[:-200]

    bus.add_listener(remember, "#")
    store = KvStore(args.produce_delay)
    node = ClusterNode(config, events=bus, registry=runtime.registry,
                       mi_runner=lambda cmd, params: run_local_mi(runtime, cmd, params))
    node.register_capability(CAP, produce=store.produce, apply_sync=store.apply_sync,
                             apply_update=store.apply_update, summary=store.summary,
                             records_for=store.records_for)
    register_mi(runtime, node)

    def fill(count: int, size: int, prefix: str = "k") -> None:
        value = b"v" * max(size - 16, 1)
        for i in range(count):
            store.data[f"{prefix}{i:012d}".encode()] = value

    if args.fill:
        fill(args.fill, args.record_size)

    @runtime.command("kv_put", (("key", "value"),), doc="store and replicate")
    async def kv_put(key: Any, value: Any) -> Any:
        rec = KvStore.record(str(key).encode(), str(value).encode())
        store.apply(rec)
        return {"sent": node.broadcast(CAP, rec)}

    @runtime.command("kv_put_acked", (("key", "value"),),
                     doc="store, replicate and wait for the other nodes' acks")
    async def kv_put_acked(key: Any, value: Any) -> Any:
        rec = KvStore.record(str(key).encode(), str(value).encode())
        store.apply(rec)
        done = await node.replicate(CAP, rec)
        return {"acked": sorted(done.acked), "missing": sorted(done.missing)}

    @runtime.command("kv_get", (("key",),))
    async def kv_get(key: Any) -> Any:
        value = store.data.get(str(key).encode())
        return {"key": key, "value": None if value is None else value.decode()}

    @runtime.command("kv_count")
    async def kv_count() -> Any:
        return {"count": len(store.data), "checksum": store.checksum()}

    @runtime.command("kv_fill", (("count", "size"), ("count", "size", "prefix")))
    async def kv_fill(count: Any, size: Any, prefix: Any = "k") -> Any:
        if not isinstance(count, int) or not isinstance(size, int) or count < 0 or size < 1:
            raise MiError(BAD_REQUEST, "count and size must be positive integers")
        fill(count, size, str(prefix))
        return {"count": len(store.data)}

    @runtime.command("kv_burst", (("count", "size"), ("count", "size", "prefix")),
                     doc="store and replicate count records of size bytes (benchmarks)")
    async def kv_burst(count: Any, size: Any, prefix: Any = "u") -> Any:
        if not isinstance(count, int) or not isinstance(size, int) or count < 0 or size < 1:
            raise MiError(BAD_REQUEST, "count and size must be positive integers")
        value = b"u" * max(size - 16, 1)
        started = time.perf_counter()
        for i in range(count):
            rec = f"{prefix}{i:012d}".encode() + b"\0" + value
            store.apply(rec)
            node.broadcast(CAP, rec)
            if i % 512 == 511:
                await node.wait_writable()
                await asyncio.sleep(0)
        return {"count": count, "seconds": round(time.perf_counter() - started, 4)}

    @runtime.command("kv_index")
    async def kv_index() -> Any:
        index, count = node.my_index(CAP)
        return {"index": index, "count": count}

    @runtime.command("demo_events")
    async def demo_events() -> Any:
        return seen

    @runtime.on_start
    async def _start() -> None:
        if own_bus:
            await bus.start()
        await node.start()
        runtime.meta.update(node.meta())  # announced at registration (discovery seeds)

    @runtime.on_stop
    async def _stop() -> None:
        await node.stop()
        if own_bus:
            await bus.close(1.0)

    await serve_announced(
        runtime, lambda: f"cluster-demo ready node={config.node_id} repl={node.url} "
                         f"mi={runtime.mi_url} pid={os.getpid()}",
        ready=lambda: bool(node.port))


def main(argv: Sequence[str] | None = None) -> int:
    from shared.service import configure_logging, run_service
    from shared.service.parent import die_with_parent_from_env

    die_with_parent_from_env()  # started by `sipmesh up`: end with it, even on its SIGKILL
    args = _parse_args(argv)
    configure_logging("cluster-demo", level=os.environ.get("SIPMESH_LOG_LEVEL", "info"))
    try:
        run_service(lambda: serve(args))
    except ValueError as exc:
        print(f"cluster-demo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
