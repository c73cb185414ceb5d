"""Inter-process calls: JSON-RPC 2.0 (the MI surface) and gRPC helpers.

* :mod:`.jsonrpc` -- MI commands, a dispatcher on jsonrpcserver that never leaks exception
  text, and the aiohttp handler that serves it;
* :mod:`.client` -- a JSON-RPC client on jsonrpcclient over aiohttp;
* :mod:`.grpc_helpers` -- grpc.aio server/client helpers with health checking, deadlines and
  retries of idempotent calls.
"""

from shared.rpc.client import JsonRpcClient, RpcError, RpcTransportError
from shared.rpc.jsonrpc import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    SERVICE_UNAVAILABLE,
    MiCommand,
    MiDispatcher,
    MiError,
    mi_http_handler,
)

__all__ = [
    "BAD_REQUEST",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "SERVICE_UNAVAILABLE",
    "JsonRpcClient",
    "MiCommand",
    "MiDispatcher",
    "MiError",
    "RpcError",
    "RpcTransportError",
    "mi_http_handler",
]
