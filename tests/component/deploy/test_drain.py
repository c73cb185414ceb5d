"""Graceful drain on SIGTERM for every service (issue 20).

The order a service follows when it is told to stop (``ServiceRuntime.stop``): it leaves
discovery first, keeps serving ``drain_delay`` s with ``/ready`` answering 503 "draining"
(clients and load balancers move away), then its gRPC servers refuse new RPCs and give
those in flight ``drain_grace`` s, then its HTTP endpoint closes and gives the MI requests
in flight ``drain_grace`` s, then it exits. The first tests drive that order step by step
in-process (each step is waited for, not slept through); the last runs each service as
its own process (``python -m <module>``, default embedded config) and sends it SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest

from shared.discovery import DiscoveryConfig
from shared.rpc import JsonRpcClient, RpcTransportError
from shared.rpc.grpc_helpers import GrpcServer, check_health, start_grpc_server
from shared.service import ServiceRuntime
from shared.service.runtime import RuntimeConfig
from tests.component.conftest import Registry
from tests.support.waiting import eventually

# Every probe is bounded: a connection accepted but never answered (the listener racing
# its close, or the freed port taken by another process on a shared machine) must fail a
# probe, not hang the test (aiohttp's default total timeout is 5 min).
PROBE_TIMEOUT = 5.0


async def _status(url: str) -> tuple[int, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
        return resp.status, await resp.json()


def _base(mi_url: str) -> str:
    parts = urlsplit(mi_url)
    return f"{parts.scheme}://{parts.netloc}"


async def _refused(url: str) -> bool:
    """True when the endpoint refuses (or drops) the connection; an answer, or none within
    the probe's bound, is "not yet"."""
    try:
        await _status(url)
    except TimeoutError:  # before ClientConnectionError: ServerTimeoutError is both
        return False
    except aiohttp.ClientConnectionError:
        return True
    return False


class SlowService:
    """A runtime with one gRPC method and one MI command that each block until released."""

    def __init__(self, disc: DiscoveryConfig, *, delay: float, grace: float) -> None:
        self.rt = ServiceRuntime("drainer", discovery=disc, config=RuntimeConfig(
            drain_delay=delay, drain_grace=grace, drain_timeout=grace + 5.0))
        self.grpc_started = asyncio.Event()
        self.grpc_release = asyncio.Event()
        self.mi_started = asyncio.Event()
        self.mi_release = asyncio.Event()
        self.srv: GrpcServer | None = None

        @self.rt.command("slow")
        async def slow() -> str:
            self.mi_started.set()
            await self.mi_release.wait()
            return "mi done"

        @self.rt.on_start
        async def _start() -> None:
            self.srv = await start_grpc_server([self._add])

        @self.rt.on_stop
        async def _stop() -> None:  # what each service's own stop hook does
            assert self.srv is not None
            await self.srv.stop(grace)

    def _add(self, server: grpc.aio.Server) -> None:
        async def call(request: bytes, context: Any) -> bytes:
            self.grpc_started.set()
            await self.grpc_release.wait()
            return b"grpc done"

        async def echo(request: bytes, context: Any) -> bytes:
            return request

        handler = grpc.method_handlers_generic_handler(
            "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(call),
                          "Echo": grpc.unary_unary_rpc_method_handler(echo)})
        server.add_generic_rpc_handlers((handler,))

    async def grpc_call(self, timeout: float = 30.0, method: str = "Call") -> bytes:
        assert self.srv is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.srv.port}") as channel:
            reply: bytes = await channel.unary_unary(f"/test.Slow/{method}")(
                b"", timeout=timeout)
            return reply

    def release_all(self) -> None:
        self.grpc_release.set()
        self.mi_release.set()

    async def mi_call(self) -> Any:
        client = JsonRpcClient(self.rt.mi_url, timeout=30.0)
        try:
            return await client.call("slow")
        finally:
            await client.close()


async def test_drain_order_leaves_discovery_then_finishes_rpcs_and_mi_in_flight(
        registry: Registry) -> None:
    server, disc = registry
    svc = SlowService(disc, delay=2.0, grace=20.0)
    await svc.rt.start()
    base = svc.rt.base_url
    grpc_call = asyncio.create_task(svc.grpc_call())
    mi_call = asyncio.create_task(svc.mi_call())
    stopping: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(
            asyncio.gather(svc.grpc_started.wait(), svc.mi_started.wait()), 20)
        stopping = asyncio.create_task(svc.rt.stop())

        # 1. Out of discovery at once, still answering: /ready says draining.
        async def deregistered() -> bool:
            return await server.registry.instances("drainer") == []

        await eventually(deregistered, 10, "the instance left discovery")
        status, body = await _status(f"{base}/ready")
        assert status == 503 and body["status"] == "draining"

        # 2. The gRPC server refuses new RPCs while the one in flight is still running. The
        # probe calls a method that answers at once, so only a refusal (UNAVAILABLE) counts;
        # a probe the loaded machine did not finish within its deadline is "not yet".
        async def grpc_refuses() -> bool:
            try:
                await asyncio.wait_for(svc.grpc_call(timeout=2.0, method="Echo"),
                                       PROBE_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                return bool(exc.code() == grpc.StatusCode.UNAVAILABLE)
            except TimeoutError:
                return False
            return False

        await eventually(grpc_refuses, 20, "new RPCs refused")
        assert not grpc_call.done()
        svc.grpc_release.set()
        assert await asyncio.wait_for(grpc_call, 20) == b"grpc done"

        # 3. The HTTP endpoint stops accepting connections; the MI request in flight
        # finishes.
        await eventually(lambda: _refused(f"{base}/health"), 20, "the endpoint closed")
        assert not mi_call.done() and not stopping.done()
        svc.mi_release.set()
        assert await asyncio.wait_for(mi_call, 20) == "mi done"
        await asyncio.wait_for(stopping, 20)
    finally:
        # A failure above must end the test, not leave work blocked for pytest-timeout.
        svc.release_all()
        pending = [t for t in (grpc_call, mi_call, stopping) if t is not None]
        await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 60)
        await asyncio.wait_for(svc.rt.stop(), 60)


async def test_drain_is_bounded_when_work_never_finishes(registry: Registry) -> None:
    """An RPC or MI request that never ends does not hold the process: the stop returns
    within drain_delay + drain_grace (gRPC) + drain_grace (HTTP) and a margin."""
    _, disc = registry
    svc = SlowService(disc, delay=0.2, grace=0.5)
    await svc.rt.start()
    grpc_call = asyncio.create_task(svc.grpc_call())
    mi_call = asyncio.create_task(svc.mi_call())
    await asyncio.wait_for(asyncio.gather(svc.grpc_started.wait(), svc.mi_started.wait()), 20)
    began = time.monotonic()
    await asyncio.wait_for(svc.rt.stop(), 30)
    took = time.monotonic() - began
    assert took < 0.2 + 0.5 + 0.5 + 5.0, took  # margin: a loaded shared machine
    with pytest.raises(grpc.aio.AioRpcError):
        await asyncio.wait_for(grpc_call, 10)
    with pytest.raises(RpcTransportError):  # the connection was closed under the request
        await asyncio.wait_for(mi_call, 10)


# One process per service, as compose and Kubernetes run them: (module, env prefix,
# whether it serves gRPC). The edge's own drain is tested in tests/integration/edge.
UNITS = [
    ("gateway", "GATEWAY", False),
    ("services.media", "MEDIA", True),
    ("services.freeswitch", "FREESWITCH", True),
    ("services.siprec", "SIPREC", False),
    ("services.dialog", "DIALOG", True),
    ("services.presence", "PRESENCE", True),
]


@pytest.mark.parametrize(("module", "prefix", "has_grpc"), UNITS,
                         ids=[u[0].removeprefix("services.") for u in UNITS])
async def test_each_service_drains_on_sigterm(registry: Registry, tmp_path: Path, module: str,
                                              prefix: str, has_grpc: bool) -> None:
    server, disc = registry
    name = module.removeprefix("services.")
    port_var = "SIPMESH_GATEWAY_PORT" if prefix == "GATEWAY" else f"SIPMESH_{prefix}_HTTP_PORT"
    env = dict(os.environ, SIPMESH_CONFIG="", SIPMESH_DISCOVERY_URL=disc.url,
               **{port_var: "0", f"SIPMESH_{prefix}_DRAIN_DELAY": "3",
                  f"SIPMESH_{prefix}_DRAIN_GRACE": "2"})
    if has_grpc:
        env[f"SIPMESH_{prefix}_GRPC_PORT"] = "0"
    log = (tmp_path / "out.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        async def ready() -> bool:
            found = await server.registry.instances(name)
            if not found:
                return False
            base = _base(found[0].meta["mi_url"])
            return (await _status(f"{base}/ready"))[0] == 200

        await eventually(ready, 60, f"{name} registered and ready")
        [inst] = await server.registry.instances(name)
        base = _base(inst.meta["mi_url"])
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()

        async def gone() -> bool:
            return await server.registry.instances(name) == []

        await eventually(gone, 10, f"{name} left discovery")
        # Draining, not dead: still answering (so work already routed here finishes).
        assert proc.returncode is None
        status, body = await _status(f"{base}/ready")
        assert status == 503 and body["status"] == "draining"
        if has_grpc:
            async with grpc.aio.insecure_channel(inst.meta["grpc"]) as channel:
                assert await check_health(channel, timeout=2.0)
        rc = await asyncio.wait_for(proc.wait(), 30)
        took = time.monotonic() - began
        out = (tmp_path / "out.log").read_text(errors="replace")
        assert rc == 0, out
        assert "Traceback" not in out, out
        assert took >= 3.0 - 0.5, took  # it did wait out drain_delay
        assert took < 3.0 + 2.0 + 2.0 + 15.0, took  # bounded (margin for a loaded machine)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
