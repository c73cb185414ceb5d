"""The routing API's per-request objects: `RouteContext` (the hook's `ctx`) and `Target`.

Their reference, and how a routing module uses them, is `services/edge/routing.py`, which
exports both under the same names; they live here so that the compiled core
(shared/compiled.py) builds them natively: the proxy makes a `RouteContext` for every
request and a `Target` for every branch.  Routing scripts stay interpreted and use them as
before (attributes, methods, properties); nothing subclasses them.  Sans-IO.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.edge.addresses import Source
    from services.edge.auth import ProxyAuthenticator
    from services.edge.dialog_tracking import AccOptions, RouteDialog
    from services.edge.media import MediaSession
    from services.edge.routing import TrustedNetworks
    from shared.events.jsonrpc_route import JsonRpcOutcome
    from shared.sip import Request, Uri


Hook = Callable[["Any", "RouteContext"], "Awaitable[None] | None"]


@dataclass(slots=True, init=False)
class Target:
    """One branch to create: the Request-URI, and optionally a next hop that overrides it
    or a preloaded route set (Route values, first hop first) that overrides both."""

    uri: str
    next_hop: str | None  # like OpenSIPS $du: send here, keep the Request-URI
    transport: str | None
    route: tuple[str, ...]  # e.g. RFC 3327 Path: Route header fields, in order

    def __init__(self, uri: str, next_hop: str | None = None, transport: str | None = None,
                 route: tuple[str, ...] = ()) -> None:
        # Written out (init=False): a dataclass's generated __init__ is interpreted Python
        # even in the compiled core, and every forwarded request builds one.
        self.uri = uri
        self.next_hop = next_hop
        self.transport = transport
        self.route = route


class RouteContext:
    """The hook's handle on one transaction; see services/edge/routing.py."""

    __slots__ = (
        "_acc",
        "_auth",
        "_dialog",
        "_dialog_check",
        "_ds",
        "_is_myself",
        "_media",
        "_record_routed",
        "_stale",
        "_trusted",
        "_trusted_nets",
        "anycast",
        "default_failure",
        "failure_hook",
        "local_domains",
        "loose_routed",
        "on_final",
        "replicate",
        "reply_headers",
        "reply_reason",
        "reply_stateless",
        "reply_status",
        "request",
        "rr",
        "services",
        "source",
        "static_routes",
        "targets",
        "user",
    )

    def __init__(
        self,
        request: Request,
        source: Source,
        *,
        loose_routed: bool,
        local_domains: frozenset[str],
        static_routes: Mapping[str, str],
        trusted: TrustedNetworks,
        is_myself: Callable[[Uri], bool],
        services: Mapping[str, Any],
        auth: ProxyAuthenticator | None = None,
        record_routed: bool = False,
        dialog_check: Callable[[], bool] | None = None,
    ) -> None:
        self.request = request
        self._auth = auth
        self._stale = False
        self.user: str | None = None  # set by a successful authenticate()
        self.source = source
        self.loose_routed = loose_routed
        # `record_routed`, or None until `dialog_check` (the core's MAC check of the
        # signatures the request carries) has answered it on first read.
        self._record_routed: bool | None = None if dialog_check is not None else record_routed
        self._dialog_check = dialog_check
        self.local_domains = local_domains
        self.static_routes = static_routes
        self.services = services
        self._trusted_nets = trusted
        self._trusted: bool | None = None  # `trusted`, asked once per request
        self._is_myself = is_myself
        self.targets: list[Target] = []
        self.reply_status: int | None = None
        self.reply_reason: str | None = None
        self.reply_headers: list[tuple[str, str]] = []
        self.reply_stateless = False
        self.rr = False
        self.failure_hook: Hook | None = None
        self.default_failure: Hook | None = None  # the module's failure_route, if any
        # Called once with the status of the final response sent for this request
        # (relayed or made here); services/edge/media.py deletes a failed call's session.
        self.on_final: Callable[[int], None] | None = None
        self._media: MediaSession | None = None
        self._dialog: RouteDialog | None = None
        self._acc: AccOptions | None = None
        self._ds: Any = None  # services/edge/dispatcher.RouteDispatch of ctx.dispatch()
        # Set by the core on an anycast listener of a clustered edge: "anycast", or
        # "replicated" for a message another node handed over (services/edge/anycast.py).
        self.anycast: str | None = None
        self.replicate = False

    # -- anycast (services/edge/anycast.py) ---------------------------------------------------
    def anycast_replicate(self) -> int:
        """OpenSIPS `t_anycast_replicate()`: an ACK or CANCEL matching no local transaction
        (the only ones routing sees) goes to every node of the cluster; only the owner of
        its transaction acts on it, and nothing is forwarded from here. Returns 1 when
        replicated; -1 when it must not be (not ACK/CANCEL, not on an anycast listener);
        -2 when it was replicated to us already (loop guard); -3 when this edge has no
        cluster (no `[edge.tm] replication_cluster`)."""
        if self.request.method not in ("ACK", "CANCEL") or not self.source.interface.anycast:
            return -1
        if self.anycast is None:
            return -3
        if self.anycast == "replicated":
            return -2
        self.replicate = True
        return 1

    # -- facts -------------------------------------------------------------------------------
    @property
    def record_routed(self) -> bool:
        """An in-dialog request that came back on a Record-Route this mesh signed, to the
        target the dialog's other side gave (services/edge/rr_signing.py): safe to follow.
        Checked on first read (a MAC per signature): the default script asks only for
        requests from untrusted sources."""
        known = self._record_routed
        if known is None:
            check = self._dialog_check
            known = self._record_routed = check is not None and check()
        return known

    @record_routed.setter
    def record_routed(self, value: bool) -> None:
        self._record_routed = value

    @property
    def trusted(self) -> bool:
        """The source is trusted: in a network of `[edge].trusted`, or in the `address`
        table's `[edge] trusted_group` (services/edge/permissions.py).  Asked once: the
        default script and the core read it several times for one request."""
        known = self._trusted
        if known is None:
            known = self._trusted = self._trusted_nets.trusts(self.source)
        return known

    def check_source_address(self, grp: int = 0, pattern: str | None = None) -> str | None:
        """OpenSIPS `check_source_address(grp[, ctx[, pattern]])`: the matching address
        row's `context_info` ('' when it has none), or None when no row of group `grp`
        (0: any) matches the request's source address, port and transport."""
        return self._trusted_nets.check_address(
            grp, self.source.host, self.source.port, self.source.interface.transport, pattern)

    def check_address(self, grp: int, ip: str, port: int = 0, proto: str = "any",
                      pattern: str | None = None) -> str | None:
        """OpenSIPS `check_address(grp, ip, port, proto[, ctx[, pattern]])`: as
        `check_source_address` for the address given."""
        return self._trusted_nets.check_address(grp, ip, port, proto, pattern)

    def is_myself(self, uri: Uri) -> bool:
        """The URI names this proxy (one of its interfaces)."""
        return self._is_myself(uri)

    def is_local(self, uri: Uri) -> bool:
        """The URI's host is one of the configured local domains."""
        return uri.host.lower() in self.local_domains

    @property
    def can_authenticate(self) -> bool:
        """Proxy authentication is configured ([edge].users)."""
        return self._auth is not None and bool(self._auth.users)

    def authenticate(self) -> str | None:
        """The user whose Proxy-Authorization for our realm is valid, else None (§22.3).

        On success our credentials are removed from the request (they were for us)."""
        if self._auth is None:
            return None
        user, self._stale = self._auth.authenticate(self.request)
        if user is not None:
            self._auth.consume(self.request)
            self.user = user
        return user

    def challenge(self) -> None:
        """Answer 407 with a fresh Proxy-Authenticate challenge (stale when it was)."""
        if self._auth is None:
            raise ValueError("no [edge].users configured: nothing to authenticate against")
        self.reply(407, headers=[("Proxy-Authenticate", self._auth.challenge(self._stale))])

    @property
    def media(self) -> MediaSession:
        """rtpengine for this transaction: `await ctx.media.offer(flags)`, `answer`,
        `delete` (services/edge/media.py; the broker is `services["media"]`)."""
        if self._media is None:
            from services.edge.media import MediaSession

            self._media = MediaSession(self, self.services.get("media"))
        return self._media

    @property
    def freeswitch(self) -> Any:
        """The FreeSWITCH bridge (`services.freeswitch.routing_client`): `select(group)`
        a box for a call by load, `await api(box, cmd)` / `bgapi`, `on_event(name, fn)`."""
        return self.services.get("freeswitch")

    @property
    def decided(self) -> bool:
        return self.reply_status is not None or bool(self.targets)

    # -- decisions ---------------------------------------------------------------------------
    def forward(self, uri: str | None = None, *, next_hop: str | None = None,
                transport: str | None = None, route: Sequence[str] = ()) -> None:
        """Add a branch to `uri` (default: the current Request-URI). Call again to fork.

        `route`: Route values (`<sip:p1@host;lr>`, first hop first) put on top of the
        branch's Route header fields; the branch is sent to the first of them.  A bare URI
        (`sip:p1@host;lr`) is put in angle brackets, so its `;lr` stays a URI parameter.
        """
        if isinstance(route, str):  # one value is a one-hop route, not its characters
            route = (route,)
        if route:
            for value in route:
                if not value.strip() or "\r" in value or "\n" in value or "\0" in value:
                    raise ValueError(f"bad Route value {value!r}")
            # Without brackets, `;lr` would parse as a header parameter: a strict router.
            route = tuple(v if "<" in v else f"<{v.strip()}>" for v in route)
        self.targets.append(Target(uri or self.request.uri, next_hop, transport, tuple(route)))

    def reply(self, status: int, reason: str | None = None,
              headers: Sequence[tuple[str, str]] = (), *, stateless: bool = False) -> None:
        """Answer the request from the proxy with a final response.

        `stateless=True` (OpenSIPS `sl_send_reply`, RFC 3261 §8.2.7) keeps no transaction:
        cheaper, and right for answers that cost nothing to give again, such as a 401/407
        challenge.  The answer's bytes are resent to a retransmission for T2 (4 s); a later
        one runs the routing script again.  It applies
        when `request_route` replies without awaiting anything; after an await the
        transaction already exists and the reply goes through it."""
        if not 200 <= status <= 699:
            raise ValueError(f"the proxy can only reply with a final status, not {status}")
        self.reply_status = status
        self.reply_reason = reason
        self.reply_headers = list(headers)
        self.reply_stateless = stateless

    def record_route(self) -> None:
        """Stay in the path of the dialog (RFC 3261 §16.6 step 4, double RR when needed)."""
        self.rr = True

    def set_failure_route(self, hook: Hook | None = None) -> None:
        """Call `hook(response, ctx)` (default: the module's `failure_route`) when every
        branch failed; it may `forward` again (serial forking) or `reply`."""
        self.failure_hook = hook or self.default_failure
        if self.failure_hook is None:
            raise ValueError("set_failure_route() needs a hook: the module has no failure_route")

    # -- per-call tracing (services/edge/tracer.py) -----------------------------------------------
    def trace(self, trace_id: str = "", scope: str = "d") -> int:
        """OpenSIPS `trace(trace_id, scope)`: capture this request's call -- ``d`` its
        dialog (default), ``t`` its transaction, ``m`` this message -- both directions, to
        the ``[edge] trace_ids`` destination named (the first when ""). 1 when traced, -1
        when tracing is off (MI ``trace off``); ValueError for an unknown id or scope."""
        from services.edge.tracer import route_trace

        return route_trace(self, trace_id, scope)

    # -- dispatcher to gateways (services/edge/dispatcher.py) -----------------------------------
    def dispatch(self, setid: int, alg: int = 0) -> str | None:
        """OpenSIPS `ds_select_dst(set, alg)` + `t_relay`: forwards to the destination of
        dispatcher set `setid` chosen by algorithm `alg` (its URI as next hop, the
        Request-URI kept), and returns that URI; None when the set has no active
        destination (decide something else then, e.g. `ctx.reply(503)`)."""
        from services.edge.dispatcher import route_dispatch

        return route_dispatch(self, setid, alg)

    def dispatch_next(self) -> str | None:
        """OpenSIPS `ds_next_dst` + `t_relay` (in `failure_route`): forwards to the next
        destination of the set; None when none is left."""
        from services.edge.dispatcher import route_dispatch_next

        return route_dispatch_next(self)

    def ds_mark_dst(self, state: str = "p") -> None:
        """OpenSIPS `ds_mark_dst(state)`: the destination tried last becomes Probing
        ("p": after `[edge] ds_probing_threshold` failures), Inactive ("i") or Active
        ("a")."""
        from services.edge.dispatcher import route_mark

        route_mark(self, state)

    # -- dialogs and CDRs (services/edge/dialog_tracking.py) -------------------------------------
    @property
    def dialog(self) -> RouteDialog:
        """The dialog this INVITE creates: timeout, profiles, sharing tag (OpenSIPS dialog)."""
        if self._dialog is None:
            from services.edge.dialog_tracking import RouteDialog

            self._dialog = RouteDialog(self)
        return self._dialog

    @property
    def acc(self) -> AccOptions:
        """The CDR of the dialog this INVITE creates: `ctx.acc.extra["account"] = ...`."""
        if self._acc is None:
            from services.edge.dialog_tracking import AccOptions

            self._acc = AccOptions()
        return self._acc

    @property
    def dialog_options(self) -> RouteDialog | None:
        return self._dialog

    @property
    def acc_options(self) -> AccOptions | None:
        return self._acc

    # -- calls out (OpenSIPS jsonrpc module) ----------------------------------------------------
    async def jsonrpc_request(self, dest: str, method: str, params: Any, *,
                              connect_timeout: float = 0.5, write_timeout: float = 0.5,
                              read_timeout: float = 0.5) -> JsonRpcOutcome:
        """Raw JSON-RPC 2.0 request over TCP to `dest` ("IP:port"); `await` it from an
        async hook. Never raises: branch on `outcome.code` (1 ok with `.value` the result,
        -1 internal error, -2 connect/timeout error, -3 server error with its error
        object), as OpenSIPS's `jsonrpc_request` return codes."""
        from shared.events.jsonrpc_route import jsonrpc_request

        return await jsonrpc_request(dest, method, params, connect_timeout=connect_timeout,
                                     write_timeout=write_timeout, read_timeout=read_timeout)

    async def jsonrpc_notification(self, dest: str, method: str, params: Any, *,
                                   connect_timeout: float = 0.5,
                                   write_timeout: float = 0.5) -> JsonRpcOutcome:
        """A JSON-RPC notification (no answer awaited); outcome codes as above."""
        from shared.events.jsonrpc_route import jsonrpc_notification

        return await jsonrpc_notification(dest, method, params,
                                          connect_timeout=connect_timeout,
                                          write_timeout=write_timeout)

    # -- SIPREC (services/edge/recording.py) -------------------------------------------------
    def record(self, srs: str | Sequence[str] = "", *, group: str = "", caller: str = "",
               callee: str = "", caller_name: str = "", callee_name: str = "",
               headers: Sequence[tuple[str, str]] = ()) -> None:
        """Record this call to an SRS (OpenSIPS `siprec_start_recording`): `srs` a URI or a
        failover list (comma-separated), default `[edge] siprec_srs`; it starts when the
        INVITE's 2xx went upstream, on the call's rtpengine instance."""
        from services.edge.recording import RecordRequest, record

        target = srs if isinstance(srs, str) else ",".join(srs)
        if not target:
            client = self.services.get("siprec")
            target = getattr(client, "default_srs", "") if client is not None else ""
        if not target:
            raise ValueError("ctx.record() needs an SRS ([edge] siprec_srs or srs=...)")
        record(self, RecordRequest(target, group, caller, callee, caller_name, callee_name,
                                   tuple((str(n), str(v)) for n, v in headers)))

    def stop_recording(self) -> None:
        """The call ends (a BYE): end its recording in the background, if it has one."""
        from services.edge.recording import call_ended

        call_ended(self)

    def update_recording(self) -> None:
        """A re-INVITE of a recorded call (hold / resume): once accepted, its recording
        follows it (re-INVITE to the SRS with the new metadata)."""
        from services.edge.recording import call_updated

        call_updated(self)

    def add_on_final(self, hook: Callable[[int], None]) -> None:
        """Also call `hook(status)` with the final status of this request (chained)."""
        previous = self.on_final
        if previous is None:
            self.on_final = hook
            return

        def both(status: int) -> None:
            try:
                previous(status)
            finally:
                hook(status)

        self.on_final = both

    def add_header(self, name: str, value: str) -> None:
        self.request.add_header(name, value)

    def remove_header(self, name: str) -> int:
        return self.request.remove_header(name)


__all__ = ["Hook", "RouteContext", "Target"]
