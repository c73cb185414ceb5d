"""The generated Probe service over a real loopback gRPC channel, with the shared helpers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from contracts.generated.sipmesh.health.v1 import probe_pb2, probe_pb2_grpc
from shared.rpc.grpc_helpers import (
    GrpcServer,
    RetryPolicy,
    check_health,
    open_channel,
    start_grpc_server,
)


class Probe(probe_pb2_grpc.ProbeServicer):
    def __init__(self, fail_first: int = 0, delay: float = 0.0) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.delay = delay

    async def Echo(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if self.calls <= self.fail_first:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        if self.delay:
            await asyncio.sleep(self.delay)  # the slow server under test, not synchronisation
        return probe_pb2.EchoReply(payload=request.payload, instance="probe-1")


async def _serve(probe: Probe) -> GrpcServer:
    return await start_grpc_server(
        [lambda s: probe_pb2_grpc.add_ProbeServicer_to_server(  # type: ignore[no-untyped-call]
            probe, s)],
        services=["sipmesh.health.v1.Probe"])


async def test_echo_and_health_over_a_real_channel() -> None:
    probe = Probe()
    server = await _serve(probe)
    async with open_channel(f"127.0.0.1:{server.port}") as channel:
        stub = probe_pb2_grpc.ProbeStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.Echo(probe_pb2.EchoRequest(payload="hi"), timeout=2)
        assert (reply.payload, reply.instance) == ("hi", "probe-1")
        assert await check_health(channel, "sipmesh.health.v1.Probe")
        assert await check_health(channel)
        await server.set_serving(False)
        assert not await check_health(channel, "sipmesh.health.v1.Probe")
    await server.stop(0)


async def test_deadline_applies_even_without_an_explicit_timeout() -> None:
    server = await _serve(Probe(delay=2.0))
    async with open_channel(f"127.0.0.1:{server.port}", default_timeout=0.2) as channel:
        stub = probe_pb2_grpc.ProbeStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Echo(probe_pb2.EchoRequest(payload="slow"))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await server.stop(0)


async def test_the_channel_retries_the_idempotent_methods_only() -> None:
    probe = Probe(fail_first=2)
    server = await _serve(probe)
    try:
        async with open_channel(f"127.0.0.1:{server.port}") as plain:
            stub = probe_pb2_grpc.ProbeStub(plain)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Echo(probe_pb2.EchoRequest(payload="x"), timeout=1)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert probe.calls == 1  # not declared idempotent: one attempt only
        # gRPC's retryPolicy (service config) retries Echo: attempts 2 and 3 after backoff.
        policy = RetryPolicy(("sipmesh.health.v1.Probe/Echo",), attempts=3)
        probe.calls, probe.fail_first = 0, 2
        async with open_channel(f"127.0.0.1:{server.port}", retry=policy) as retrying:
            stub = probe_pb2_grpc.ProbeStub(retrying)  # type: ignore[no-untyped-call]
            reply = await stub.Echo(probe_pb2.EchoRequest(payload="y"), timeout=2)
            assert reply.payload == "y" and probe.calls == 3
            # Beyond maxAttempts the caller gets the last failure.
            probe.calls, probe.fail_first = 0, 5
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Echo(probe_pb2.EchoRequest(payload="z"), timeout=2)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and probe.calls == 3
    finally:
        await server.stop(0)


def test_retry_policy_is_grpc_service_config() -> None:
    config = json.loads(RetryPolicy(("a.B/C", "a.D"), attempts=4, initial_backoff=0.1,
                                    max_backoff=2.0).service_config())
    [method] = config["methodConfig"]
    assert method["name"] == [{"service": "a.B", "method": "C"}, {"service": "a.D"}]
    assert method["retryPolicy"] == {
        "maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "2.0s",
        "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}


def _count(registry: Any, name: str, method: str, code: str) -> float:
    value = registry.get_sample_value(f"{name}_count", {"method": method, "code": code})
    return float(value or 0.0)


async def test_unary_calls_are_timed_per_method_on_both_sides() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from shared.rpc import grpc_metrics

    registry = CollectorRegistry()
    grpc_metrics.register(registry)
    grpc_metrics.register(registry)  # a second runtime in the same process: no error
    echo = "/sipmesh.health.v1.Probe/Echo"
    before = [_count(registry, f"sipmesh_grpc_{side}_seconds", echo, code)
              for side in ("server", "client") for code in ("OK", "UNAVAILABLE")]
    probe = Probe(fail_first=1)
    server = await _serve(probe)
    try:
        async with open_channel(f"127.0.0.1:{server.port}") as channel:
            stub = probe_pb2_grpc.ProbeStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Echo(probe_pb2.EchoRequest(payload="x"), timeout=2)
            await stub.Echo(probe_pb2.EchoRequest(payload="y"), timeout=2)
    finally:
        await server.stop(0)
    after = [_count(registry, f"sipmesh_grpc_{side}_seconds", echo, code)
             for side in ("server", "client") for code in ("OK", "UNAVAILABLE")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]
    text = generate_latest(registry).decode()
    assert 'sipmesh_grpc_server_seconds_bucket{code="OK",le="0.0001",method="' + echo in text
