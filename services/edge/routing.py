"""The routing API: a Python module named in config plays the role of an OpenSIPS script.

The module defines up to three hooks (only `request_route` is required):

    def request_route(request: Request, ctx: RouteContext) -> None | Awaitable[None]
    def reply_route(response: Response, ctx: RouteContext) -> None
    def failure_route(response: Response, ctx: RouteContext) -> None | Awaitable[None]

`request_route` runs once per new request (after the proxy's own §16.3 checks and §16.4
route preprocessing).  It decides through the context: `ctx.forward(uri)` (call it several
times to fork in parallel; `next_hop=` sends the branch elsewhere than its Request-URI, as
OpenSIPS $du; `route=[...]` preloads a route set, e.g. a binding's RFC 3327 Path: the
values become Route header fields on top of the branch, in order, and the branch goes to
the first one - loose routing, or the §16.6 step 6 fix-up when that hop is a strict
router; a route set wins over `next_hop`), `ctx.reply(code)`, `ctx.record_route()`,
header edits on `ctx.request`, and `ctx.set_failure_route(hook)` to get called when every
branch failed (serial forking, failover). An async hook may call out with `await
ctx.jsonrpc_request(dest, method, params)` / `ctx.jsonrpc_notification(...)` (OpenSIPS's
jsonrpc module: raw JSON-RPC over TCP, bounded timeouts, OpenSIPS's outcome codes).
`reply_route` sees every response before it is relayed; it may return an awaitable (e.g.
`ctx.media.answer(message=response)` rewriting a 183/200's SDP): the response is relayed
once it is done, and the responses of one transaction keep their order.
Dialogs and CDRs: `ctx.dialog` (timeout, profiles, limits, sharing tag) and `ctx.acc`
(extra CDR fields) -- see services/edge/dialog_tracking.py.

Facts for the trust decision: `ctx.trusted` (source in `[edge] trusted`),
`ctx.loose_routed` (our Route was on top: in dialog, or a preloaded route set), and
`ctx.record_routed` (an in-dialog request on a Record-Route this mesh signed for that very
dialog and target).  Only `record_routed` makes an untrusted request safe to follow by its
Route set: `loose_routed` alone is what an attacker writes into a preloaded Route.
A hook may be a coroutine function (to call other services); the proxy waits for it
without blocking other traffic.  When a hook decides nothing, the proxy answers 503.

A module may instead define `make_router(ctx: RouterSetup)` returning an object with these
methods, to keep state (clients of other services) without module globals.
"""

from __future__ import annotations

import importlib
import inspect
import ipaddress
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from types import GeneratorType
from typing import TYPE_CHECKING, Any, Protocol

# The per-request objects of this API, compiled with the core (see the module).
from services.edge.route_context import Hook, RouteContext, Target

if TYPE_CHECKING:
    from services.edge.addresses import Source
    from services.edge.auth import ProxyAuthenticator
    from shared.sip import Request


class Router(Protocol):
    def request_route(self, request: Request, ctx: RouteContext) -> Awaitable[None] | None: ...


@dataclass(frozen=True)
class RouterSetup:
    """What a routing module gets at start-up (`make_router(setup)`)."""

    local_domains: frozenset[str]
    static_routes: Mapping[str, str]
    services: Mapping[str, Any] = field(default_factory=dict)
    auth: ProxyAuthenticator | None = None


class TrustedNetworks:
    """Address -> trusted?, remembered per address (the check runs for every request).

    `services.edge.permissions.SourceTrust` extends it with the `address` table."""

    def __init__(self, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.networks = list(networks)
        self._known: dict[str, bool] = {}

    def trusts(self, source: Source) -> bool:
        """The request's source is trusted (here: its address is in a network)."""
        return self.contains(source.host)

    def check_address(self, grp: int, ip: str, port: int, proto: str,
                      pattern: str | None) -> str | None:
        """No address table here: nothing matches."""
        return None

    def contains(self, host: str) -> bool:
        known = self._known.get(host)
        if known is None:
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                known = False
            else:
                known = any(addr in net for net in self.networks)
            if len(self._known) > 65536:
                self._known.clear()  # bounded: a scan from many addresses cannot grow it
            self._known[host] = known
        return known


class LoadedRouter:
    """The three hooks of a routing module, resolved once at start-up."""

    def __init__(self, request_route: Hook, reply_route: Hook | None,
                 failure_route: Hook | None, name: str) -> None:
        self.request_route = request_route
        self.reply_route = reply_route
        self.failure_route = failure_route
        self.name = name


def load_router(module_name: str, setup: RouterSetup) -> LoadedRouter:
    """Import the routing module named in config and pick its hooks."""
    module = importlib.import_module(module_name)
    source: Any = module
    make = getattr(module, "make_router", None)
    if make is not None:
        source = make(setup)
    request_route = getattr(source, "request_route", None)
    if request_route is None or not callable(request_route):
        raise ValueError(f"routing module {module_name} has no request_route(request, ctx)")
    reply_route = getattr(source, "reply_route", None)
    failure_route = getattr(source, "failure_route", None)
    return LoadedRouter(request_route, reply_route, failure_route, module_name)


# Whether instances of a type are awaitable, as `inspect.isawaitable` said of the first
# one seen.  A REGISTER's hook returns a compiled coroutine (a mypyc generator object,
# no CoroutineType), for which isawaitable ends in `isinstance(value, Awaitable)`: an ABC
# check, ~2.7% of a REGISTER flow's instructions (docs/perf.md, tenth round).  It depends
# on the type only, except for plain generators (one decorated with `types.coroutine` is
# awaitable, another is not: their code's flags decide), which are asked every time.
_AWAITABLE_BY_TYPE: dict[type, bool] = {}


def is_awaitable(value: object) -> bool:
    if value is None:
        return False
    kind = type(value)
    known = _AWAITABLE_BY_TYPE.get(kind)
    if known is None:
        known = inspect.isawaitable(value)
        if kind is not GeneratorType and len(_AWAITABLE_BY_TYPE) < 256:
            _AWAITABLE_BY_TYPE[kind] = known
    return known


__all__ = [
    "Hook", "LoadedRouter", "RouteContext", "Router", "RouterSetup", "Target", "TrustedNetworks",
    "is_awaitable", "load_router",
]
