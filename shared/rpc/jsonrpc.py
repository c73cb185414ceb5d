"""JSON-RPC 2.0 dispatch of MI commands, as OpenSIPS's mi_http/mi_json do it.

An :class:`MiCommand` names its accepted parameter sets (OpenSIPS "recipes", what ``which``
answers). A call's ``params`` may be a named object -- its keys must be exactly one recipe --
or a positional array, mapped onto the first recipe of that length. The handler is then
awaited with keyword arguments.

jsonrpcserver does the protocol work (parse errors -32700, invalid requests -32600, unknown
methods -32601, batches, notifications). Two of its habits are closed off here: every
handler is wrapped so an uncaught exception becomes a bare -32603 "Internal error" (logged
with its traceback, never sent), and a post-processing step drops ``data`` from internal
and server errors, which jsonrpcserver fills with ``str(exc)``.

Application errors use OpenSIPS's convention of HTTP-like codes (404 "not found", 400 bad
request, 503 unavailable) raised as :class:`MiError`.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from aiohttp import web
from jsonrpcserver import Error, Success
from jsonrpcserver.async_main import dispatch_to_response
from jsonrpcserver.response import ErrorResponse, serialize_error, to_serializable_one
from jsonrpcserver.sentinels import NODATA

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
UNAUTHORIZED = -32001
# Application codes, HTTP-like as OpenSIPS MI uses them.
BAD_REQUEST = 400
NOT_FOUND = 404
SERVICE_UNAVAILABLE = 503

MAX_BODY = 1 << 20

Handler = Callable[..., Awaitable[Any]]


class MiError(Exception):
    """An error the client may see: code, message and optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def int_param(value: Any, name: str) -> int:
    """`value` as an int (a JSON number or numeric string, not a boolean), else
    MiError 400 "Bad {name}"."""
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise MiError(BAD_REQUEST, f"Bad {name}") from None


@dataclasses.dataclass(frozen=True)
class MiCommand:
    """One MI command: ``handler(**params)`` and the parameter sets it accepts."""

    name: str
    handler: Handler
    # None: pass the raw params through as ``params=`` (used by the gateway's forwarders).
    params: tuple[tuple[str, ...], ...] | None = ((),)
    doc: str = ""

    def bind(self, args: list[Any] | None, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Maps positional or named params onto a recipe; raises MiError(-32602)."""
        if self.params is None:
            return {"params": list(args) if args else dict(kwargs or {})}
        if args:
            for recipe in self.params:
                if len(recipe) == len(args):
                    return dict(zip(recipe, args, strict=True))
            raise MiError(INVALID_PARAMS, "Invalid params",
                          f"{self.name} takes {self._arities()} positional params")
        given = dict(kwargs or {})
        for recipe in self.params:
            if set(recipe) == set(given):
                return given
        raise MiError(INVALID_PARAMS, "Invalid params",
                      f"{self.name} accepts params {self._recipes()}")

    def _arities(self) -> str:
        assert self.params is not None
        return " or ".join(sorted({str(len(r)) for r in self.params}))

    def _recipes(self) -> str:
        assert self.params is not None
        return " or ".join("{" + ", ".join(r) + "}" for r in self.params)


def _serialise(response: Any) -> dict[str, Any]:
    """Serialises one jsonrpcserver response, dropping exception text from ``data``."""
    out = to_serializable_one(response)
    assert isinstance(out, dict)  # one response serialises to one object
    error = out.get("error")
    if isinstance(error, dict) and error.get("code") in (INTERNAL_ERROR, SERVER_ERROR):
        out["error"] = {"code": error["code"], "message": "Internal error"}
    elif isinstance(error, dict) and error.get("code") == PARSE_ERROR:
        # jsonrpcserver puts the JSON decoder's exception text here.
        out["error"] = {"code": PARSE_ERROR, "message": "Parse error"}
    return out


class MiDispatcher:
    """Dispatches JSON-RPC text to MI commands; see the module docstring."""

    def __init__(self, commands: Iterable[MiCommand] = (), *, name: str = "mi") -> None:
        self.commands: dict[str, MiCommand] = {}
        self._log = structlog.get_logger(name)
        for c in commands:
            self.add(c)

    def add(self, command: MiCommand) -> None:
        if command.name in self.commands:
            raise ValueError(f"MI command {command.name!r} declared twice")
        self.commands[command.name] = command

    def _wrap(self, command: MiCommand) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = command.bind(list(args), kwargs)
                return Success(await command.handler(**bound))
            except MiError as exc:
                return Error(exc.code, exc.message, NODATA if exc.data is None else exc.data)
            except Exception:
                self._log.exception("mi_command_failed", command=command.name)
                return Error(INTERNAL_ERROR, "Internal error")

        return call

    async def dispatch(
        self, text: str, extra: Mapping[str, MiCommand] | None = None
    ) -> str:
        """Answers a request (or batch); ``""`` when nothing is to be sent back."""
        table = dict(self.commands)
        if extra:
            for name, cmd in extra.items():
                table.setdefault(name, cmd)
        methods = {name: self._wrap(cmd) for name, cmd in table.items()}
        result = await dispatch_to_response(text, methods, post_process=_serialise)
        if result is None or result == []:
            return ""
        return json.dumps(result)


def bearer_ok(headers: Mapping[str, str], token: str | None) -> bool:
    """True when ``token`` is unset or ``Authorization: Bearer <token>`` carries it.

    Compared as UTF-8 bytes in constant time: ``hmac.compare_digest`` refuses ``str`` with
    non-ASCII characters (a TypeError, which was a 500), and a header aiohttp decoded with
    surrogate escapes must be compared as the bytes that arrived."""
    if not token:
        return True
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        sent = given.strip().encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(sent, token.encode("utf-8"))


def error_body(code: int, message: str, data: Any = NODATA) -> dict[str, Any]:
    """A JSON-RPC error response with a null id (jsonrpcserver's serializer)."""
    return serialize_error(ErrorResponse(code, message, data, None))


def unauthorized() -> web.Response:
    return web.json_response(error_body(UNAUTHORIZED, "Unauthorized"), status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="sipmesh"'})


def mi_http_handler(
    dispatch: Callable[[str], Awaitable[str]], token: str | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler serving JSON-RPC over HTTP POST, as OpenSIPS mi_http.

    A configured ``token`` is required as ``Authorization: Bearer <token>`` (401 otherwise).
    The whole body is read, however many TCP segments or chunks it arrives in, up to
    ``MAX_BODY`` bytes: a longer one (announced or chunked) gets 413 as soon as the limit
    is passed, without the rest being buffered. Notifications-only requests get 204.
    """

    log = structlog.get_logger("mi_http")
    too_large = error_body(INVALID_REQUEST, "Request too large")

    async def handle(request: web.Request) -> web.StreamResponse:
        if not bearer_ok(request.headers, token):
            return unauthorized()
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response(too_large, status=413)
        try:
            raw = await read_body(request, MAX_BODY)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(too_large, status=413)
        text = raw.decode("utf-8", errors="replace")
        try:
            answer = await dispatch(text)
        except Exception:
            # Whatever broke outside a command handler: logged, never shown.
            log.exception("mi_dispatch_failed")
            return web.json_response(error_body(INTERNAL_ERROR, "Internal error"))
        if not answer:
            return web.Response(status=204)
        return web.Response(text=answer, content_type="application/json")

    return handle


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or HTTPRequestEntityTooLarge once more than ``limit`` bytes came
    (aiohttp's own reading loop, on a clone carrying this handler's limit rather than the
    application's ``client_max_size``)."""
    return await request.clone(client_max_size=limit).read()


__all__ = [
    "BAD_REQUEST",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "SERVICE_UNAVAILABLE",
    "UNAUTHORIZED",
    "MiCommand",
    "MiDispatcher",
    "MiError",
    "bearer_ok",
    "error_body",
    "int_param",
    "mi_http_handler",
    "read_body",
    "unauthorized",
]
