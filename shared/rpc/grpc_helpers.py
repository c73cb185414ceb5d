"""gRPC (grpc.aio) helpers: a server with standard health checking, channels on which
every call has a deadline, and retries with backoff for idempotent calls.

* :func:`start_grpc_server` binds (port 0 = ephemeral), adds the servicers and
  ``grpc.health.v1.Health`` (grpcio-health-checking) with every named service SERVING, and
  returns a :class:`GrpcServer` whose ``stop`` first flips health to NOT_SERVING (so
  balancers stop sending) and then stops with a grace period.
* :func:`open_channel` returns an insecure loopback/cluster channel with a
  :class:`DeadlineInterceptor`: a call made without ``timeout`` gets the default deadline,
  so no call can hang forever.
* :func:`call_unary` makes one unary call with a deadline; with ``idempotent=True`` it
  retries UNAVAILABLE (and DEADLINE_EXCEEDED) with exponential backoff. Non-idempotent
  calls are never retried: the first attempt may have taken effect.

Channels and servers must be created inside the running loop (grpc#32480).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

T = TypeVar("T")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


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
    server = grpc.aio.server()
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


def open_channel(target: str, *, default_timeout: float = 2.0) -> grpc.aio.Channel:
    """An insecure channel whose calls all carry a deadline."""
    return grpc.aio.insecure_channel(
        target, interceptors=[DeadlineInterceptor(default_timeout)],
        options=[("grpc.keepalive_time_ms", 30_000)],
    )


async def call_unary(
    method: Callable[..., Awaitable[T]], request: Any, *, timeout: float,
    idempotent: bool = False, attempts: int = 3, backoff: float = 0.05,
    max_backoff: float = 1.0,
) -> T:
    """One unary call with a deadline; idempotent calls retry transient failures."""
    tries = attempts if idempotent else 1
    delay = backoff
    for attempt in range(1, tries + 1):
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if attempt == tries or exc.code() not in RETRYABLE:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff)
    raise AssertionError("unreachable")  # pragma: no cover


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
