"""Latency histograms of gRPC calls, per method, for clients and servers.

Two process-wide Prometheus histograms, created without a registry so that each
:class:`~shared.service.runtime.ServiceRuntime` adds them to its own ``/metrics``
(:func:`register`; several runtimes in one test process share them):

* ``sipmesh_grpc_server_seconds{method, code}``: how long a servicer took to answer a
  unary request (:class:`ServerTiming`, installed by
  :func:`~shared.rpc.grpc_helpers.start_grpc_server`);
* ``sipmesh_grpc_client_seconds{method, code}``: a unary call as its caller saw it, the
  network and the retries included (:class:`ClientTiming`, installed by
  :func:`~shared.rpc.grpc_helpers.open_channel`; a channel made otherwise can add
  ``ClientTiming()`` to its interceptors).

``method`` is gRPC's full name (``/sipmesh.registrar.v1.Registrar/Lookup``), ``code`` the
status name (``OK``, ``UNAVAILABLE``, ...). Streaming calls are not timed: a long-lived
stream (cluster links, watch streams) has no meaningful duration, and what a stream
carries is measured by the service that uses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram

# Buckets from 100 us (an in-process loopback call) to 5 s (beyond any deadline we set).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0)
SERVER_SECONDS = Histogram("sipmesh_grpc_server_seconds",
                           "Time a gRPC servicer took to answer a unary call",
                           ["method", "code"], buckets=BUCKETS, registry=None)
CLIENT_SECONDS = Histogram("sipmesh_grpc_client_seconds",
                           "Time a unary gRPC call took as its caller saw it",
                           ["method", "code"], buckets=BUCKETS, registry=None)


def register(registry: CollectorRegistry) -> None:
    """Adds both histograms to a process's registry (idempotent)."""
    for histogram in (SERVER_SECONDS, CLIENT_SECONDS):
        try:
            registry.register(histogram)
        except ValueError:  # already there
            pass


def _method(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


class ServerTiming(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Times every unary-unary handler of a grpc.aio server."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = _method(handler_call_details.method)
        inner = handler.unary_unary

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                code = "UNKNOWN"
                raise
            finally:
                got = context.code() if hasattr(context, "code") else None
                if isinstance(got, grpc.StatusCode):
                    code = got.name
                SERVER_SECONDS.labels(method, code).observe(time.perf_counter() - started)

        return handler._replace(unary_unary=timed)


class ClientTiming(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Times every unary-unary call made on a channel."""

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], client_call_details: Any,
        request: Any,
    ) -> Any:
        method = _method(client_call_details.method)
        started = time.perf_counter()
        call = await continuation(client_call_details, request)
        code = "UNKNOWN"
        try:
            await call  # the outcome: the caller awaits the same call and gets it too
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        else:
            code = "OK"
        finally:
            CLIENT_SECONDS.labels(method, code).observe(time.perf_counter() - started)
        return call


__all__ = ["CLIENT_SECONDS", "SERVER_SECONDS", "ClientTiming", "ServerTiming", "register"]
