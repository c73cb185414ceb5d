"""Mesh event path figures (a script, not a test): run by `make bench`.

The embedded mode's whole path, with the gateway in a process of its own (``python -m
gateway`` on free ports, its registry in this process): a service's
``rt.events.publish()`` -> forwarder -> the gateway's ``event_ingest`` -> subscription
manager -> a ``udp:`` subscriber socket in this process.

1. Latency at a paced 500 events/s for 4 s: p50/p99/max from publish() to the datagram.
2. Throughput: a burst of 5,000 events, publish() until the last datagram arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.discovery import DiscoveryConfig
from shared.discovery.embedded import RegistryServer
from shared.events.config import EventsConfig
from shared.rpc import JsonRpcClient
from shared.service import ServiceRuntime

ROOT = Path(__file__).resolve().parents[2]
EVENT = "E_UL_AOR_INSERT"


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.arrivals[json.loads(data)["params"]["aor"]] = time.perf_counter()
        self.changed.set()

    async def wait_for(self, n: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.arrivals) < n:
                self.changed.clear()
                await self.changed.wait()


async def main() -> None:
    registry = RegistryServer()
    url = await registry.start()
    disc = DiscoveryConfig(url=url, ttl=10)
    tmp = tempfile.mkdtemp(prefix="bench-mesh-events-")
    env = dict(os.environ, SIPMESH_DISCOVERY_URL=url, SIPMESH_GATEWAY_PORT="0",
               SIPMESH_EVENTS_STORE=f"{tmp}/subs.sqlite", SIPMESH_GATEWAY_LOG_LEVEL="warning")
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env)
    loop = asyncio.get_running_loop()
    sink = Sink()
    transport, _ = await loop.create_datagram_endpoint(lambda: sink, local_addr=("127.0.0.1", 0))
    svc = ServiceRuntime("registrar", discovery=disc, events=EventsConfig(buffer_size=20_000))
    try:
        async with asyncio.timeout(20):
            while not await svc.registry.healthy("gateway"):
                await asyncio.sleep(0.05)
        [gw] = await svc.registry.healthy("gateway")
        client = JsonRpcClient(gw.meta["public_mi_url"])
        port = transport.get_extra_info("sockname")[1]
        await client.call("event_subscribe", [EVENT, f"udp:127.0.0.1:{port}", 600])
        await client.close()
        await svc.start()

        sent: dict[str, float] = {}
        n, rate = 2000, 500
        start = time.perf_counter()
        for i in range(n):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"lat{i}@x"
            sent[key] = time.perf_counter()
            svc.events.publish(EVENT, {"aor": key})
        await sink.wait_for(n, 30)
        ms = sorted((sink.arrivals[k] - t) * 1000 for k, t in sent.items())
        print(f"embedded path publish->udp subscriber @{rate}/s, {n} events: "
              f"p50 {statistics.median(ms):.2f} ms, p99 {ms[int(len(ms) * 0.99)]:.2f} ms, "
              f"max {ms[-1]:.2f} ms")

        sink.arrivals.clear()
        burst = 5000
        t0 = time.perf_counter()
        for i in range(burst):
            svc.events.publish(EVENT, {"aor": f"burst{i}@x"})
        await sink.wait_for(burst, 120)
        took = time.perf_counter() - t0
        print(f"embedded path burst of {burst}: {burst / took:,.0f} events/s to the subscriber "
              f"(dropped {svc.events.stats.dropped})")
    finally:
        await svc.stop()
        transport.close()
        gateway.terminate()
        gateway.wait(10)
        await registry.stop()


if __name__ == "__main__":
    asyncio.run(main())
