"""gRPC (grpc.aio) helpers: a server with standard health checking, channels on which
every call has a deadline, and retries with backoff for idempotent methods.

* :func:`start_grpc_server` binds (port 0 = ephemeral), adds the servicers and
  ``grpc.health.v1.Health`` (grpcio-health-checking) with every named service SERVING, and
  returns a :class:`GrpcServer` whose ``stop`` first flips health to NOT_SERVING (so
  balancers stop sending) and then stops with a grace period.
* :func:`open_channel` returns an insecure loopback/cluster channel with a
  :class:`DeadlineInterceptor`: a call made without ``timeout`` gets the default deadline,
  so no call can hang forever. With a :class:`RetryPolicy` the channel itself retries the
  methods the policy names (the idempotent ones) on UNAVAILABLE, with exponential backoff
  and jitter, through gRPC's own ``retryPolicy`` service config (gRFC A6): retries stay
  inside the call's one deadline and only happen when the server committed nothing.
  Other methods are never retried: the first attempt may have taken effect.
* Both time their unary calls per method (:mod:`shared.rpc.grpc_metrics`:
  ``sipmesh_grpc_server_seconds`` and ``sipmesh_grpc_client_seconds`` on ``/metrics``).

Channels and servers must be created inside the running loop (grpc#32480).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from shared.rpc.grpc_metrics import ClientTiming, ServerTiming


@dataclasses.dataclass
class GrpcServer:
    """A started grpc.aio server with its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    services: tuple[str, ...]

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self.services):
            await self.health.set(name, status)

    async def stop(self, grace: float = 2.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)


async def start_grpc_server(
    adders: Iterable[Callable[[grpc.aio.Server], None]], *, services: Sequence[str] = (),
    host: str = "127.0.0.1", port: int = 0,
) -> GrpcServer:
    """Starts a server with the given ``add_XServicer_to_server`` partials and health."""
    server = grpc.aio.server(interceptors=[ServerTiming()])
    for add in adders:
        add(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    srv = GrpcServer(server, bound, health, tuple(services))
    await srv.set_serving(True)
    return srv


class DeadlineInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Gives every unary call without a timeout the default deadline."""

    def __init__(self, default_timeout: float) -> None:
        self.default_timeout = default_timeout

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], client_call_details: Any,
        request: Any,
    ) -> Any:
        if client_call_details.timeout is None:
            client_call_details = grpc.aio.ClientCallDetails(
                client_call_details.method, self.default_timeout,
                client_call_details.metadata, client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
        return await continuation(client_call_details, request)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retryPolicy for the idempotent ``methods`` of a channel.

    A method is ``package.Service/Method``, or ``package.Service`` for all its methods.
    Backoffs are seconds; gRPC draws each wait at random up to the current backoff."""

    methods: tuple[str, ...]
    attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    codes: tuple[str, ...] = ("UNAVAILABLE",)

    def service_config(self) -> str:
        names = []
        for method in self.methods:
            service, _, name = method.partition("/")
            names.append({"service": service, **({"method": name} if name else {})})
        return json.dumps({"methodConfig": [{"name": names, "retryPolicy": {
            "maxAttempts": self.attempts,
            "initialBackoff": f"{self.initial_backoff}s",
            "maxBackoff": f"{self.max_backoff}s",
            "backoffMultiplier": self.multiplier,
            "retryableStatusCodes": list(self.codes),
        }}]})


def open_channel(target: str, *, default_timeout: float = 2.0,
                 retry: RetryPolicy | None = None) -> grpc.aio.Channel:
    """An insecure channel whose calls all carry a deadline; ``retry`` names the methods
    the channel retries (see the module docstring)."""
    options: list[tuple[str, Any]] = [("grpc.keepalive_time_ms", 30_000)]
    if retry is not None:
        options += [("grpc.enable_retries", 1), ("grpc.service_config", retry.service_config())]
    return grpc.aio.insecure_channel(
        target, interceptors=[DeadlineInterceptor(default_timeout), ClientTiming()],
        options=options)


async def check_health(channel: grpc.aio.Channel, service: str = "", *,
                       timeout: float = 1.0) -> bool:
    """True when the peer reports ``service`` SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service),
                                 timeout=timeout)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
