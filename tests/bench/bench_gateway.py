"""Benchmark (not a test): MI calls through the gateway versus straight to the service.

Runs an embedded registry, the gateway and one service in this process on loopback, then
times sequential JSON-RPC calls (bounded count): a core command the gateway answers itself
(`version`), a command routed to the service (`echo_back`), the same command sent straight
to the service's own MI endpoint (the baseline), and `get_statistics core:` merged from
both processes. Prints per-call latency and the routed/direct ratio.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared.rpc import JsonRpcClient
from shared.rpc.client import Params
from tests.component.spine.helpers import running_mesh, service, started

CALLS = 400


async def timed(client: JsonRpcClient, method: str, params: Params) -> float:
    for _ in range(20):  # warm-up: connections, caches
        await client.call(method, params)
    t0 = time.perf_counter()
    for _ in range(CALLS):
        await client.call(method, params)
    return (time.perf_counter() - t0) / CALLS


async def main() -> None:
    async with running_mesh() as mesh:
        rt = service("bench", mesh.discovery)

        @rt.command("echo_back", params=(("text",),))
        async def echo_back(text: str) -> str:
            return text

        async with started(rt):
            direct = JsonRpcClient(rt.mi_url)
            results = {
                "gateway core (version)": await timed(mesh.client, "version", None),
                "gateway routed (echo_back)": await timed(mesh.client, "echo_back", ["x"]),
                "service direct (echo_back)": await timed(direct, "echo_back", ["x"]),
                "gateway merged get_statistics core:": await timed(
                    mesh.client, "get_statistics", [["core:"]]),
            }
            await direct.close()
    for name, secs in results.items():
        print(f"{name:40s} {secs * 1e3:7.3f} ms/call  {1 / secs:8.0f} calls/s")
    ratio = results["gateway routed (echo_back)"] / results["service direct (echo_back)"]
    print(f"routed via gateway / direct to service: {ratio:.2f}x latency")


if __name__ == "__main__":
    asyncio.run(main())
