"""The stateful proxy core of RFC 3261 §16, sans-IO.

Theory of operation.  `ProxyCore.receive(data, source, now)` takes one datagram (or one
framed TCP message) and returns what to do: `Send` (bytes to a `Destination`) and, when a
routing hook is a coroutine, `Await` (the adapter awaits it, then calls its `resume(now)`
and carries out what that returns).  Timers of the transaction layer and Timer C of the
proxy share one `next_deadline()` / `handle_timer(now)` pair.  No sockets, no clock.

Requests (§16.3 - §16.6):
  1. received/rport on the top Via (§18.2.1, RFC 3581);
  2. ACKs and retransmissions go to their server transaction (§17.2.3) and stop there;
  3. CANCEL (§16.10, §9.2): 200 on its own transaction, CANCEL to every pending branch,
     the INVITE then ends with 487 (or whatever the branches answer); a CANCEL matching no
     INVITE is routed and forwarded statelessly (481 when routing refuses it);
  4. validation (§16.3): URI scheme (416), Max-Forwards (483; an OPTIONS with
     Max-Forwards 0 or addressed to the proxy is answered here), loop detection (482),
     Proxy-Require (420 + Unsupported);
  5. route preprocessing (§16.4): a Request-URI we record-routed (a strict router upstream)
     is replaced by the last Route; our own Route values on top are removed;
  6. the routing hook decides: forward to one or more targets (parallel forking), reply,
     record-route, arm a failure route; nothing decided means 503;
  7. each target gets a copy (§16.6): Request-URI, Max-Forwards - 1, Record-Route (twice
     when the outbound interface differs from the inbound one, RFC 5658), strict-router
     fix-up (§16.6 step 6), our Via with a branch `z9hG4bK<loop hash>.<n>` and a client
     transaction; INVITE branches get Timer C.

Responses (§16.7): the top Via must be ours (§18.1.2), else dropped.  A response with no
client transaction is forwarded statelessly to the next Via (never to a broadcast
address).  Otherwise it joins the response context of its server transaction: 1xx (not
100) and 2xx are relayed at once, a 2xx or 6xx cancels the other pending branches, and
when every branch is final the best response (§16.7 step 6, challenges aggregated,
503 turned into 500) is sent - or the failure route runs first and may fork again.
Timeouts count as 408, transport failures as 503 (§16.7 step 2, §16.9).

Anycast (services/edge/anycast.py): with an `anycast` core, messages on a listener marked
`;anycast` that belong to another node's transaction become `ClusterSend` outputs (the
adapter carries them over the cluster, and the owner feeds them to `receive(...,
origin=node)`); our Via on requests forwarded out of such a listener carries `;cid=<node>`.

Dialogs: with a `tracker` (services/edge/dialog_tracking.py) the core tells it what it
forwards (`_after_route`, `_forward_stateless`) and relays for an INVITE (`_relay`,
`_reply_context`); it never waits on it. Requests of other services (the Uac API,
services/edge/uac.py) go through `uac_request`, and `cancel_invite` cancels a pending
INVITE by Call-ID and From tag as its caller's CANCEL would.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from services.edge import rr_signing, validation
from services.edge.addresses import (
    Destination,
    Interface,
    Source,
    address_family,
    is_broadcast,
    sendable,
)
from services.edge.anycast import (
    ANNOUNCE,
    AUTO_CANCEL,
    REPLY,
    REQUEST,
    AnycastCore,
    ClusterSend,
    Route,
)
from services.edge.auth import ProxyAuthenticator
from services.edge.best_response import best_response, is_challenge
from services.edge.context import Branch, ResponseContext
from services.edge.counters import EdgeCounters
from services.edge.keepalive import is_keepalive
from services.edge.register_challenge import RegisterChallenger
from services.edge.route_context import RouteContext, Target
from services.edge.routing import LoadedRouter, TrustedNetworks, is_awaitable
from services.edge.stateless import RecentAnswers, answer_malformed, looks_like_response
from services.edge.uac_core import UacOwner
from services.edge.validation import SUPPORTED_SCHEMES
from shared.sip import (
    Request,
    Response,
    SipParseError,
    Uri,
    ValidatedLines,
    Via,
    make_response,
    parse_message,
    parse_name_addr,
    parse_uri,
)
from shared.transaction import (
    ClientTransaction,
    ResponseReceived,
    ServerTransaction,
    Terminated,
    TimedOut,
    TimerSettings,
    TransactionEvent,
    TransactionLayer,
    Transmit,
    TransportFailed,
    sent_by,
    server_key,
)
from shared.transaction.key import ServerKey
from shared.transaction.machine import State

_VOUCHED = frozenset({"via", "record-route"})  # lines of a forwarded request we wrote
_OWN_VIAS = 16_384  # at most this many of our Vias remembered (ProxyCore._own_vias)


def local_to_tag(request: Request) -> str | None:
    """The To tag of the proxy's own answer to `request` (None when it has one): derived
    from the request, so a retransmission gets the same tag. The presence service takes it
    as its side's tag of the subscription dialog (services/edge/default_routing.py)."""
    if request.to_tag is not None:
        return None
    seed = f"{request.call_id}|{request.from_tag}|{request.cseq.number}"
    return hashlib.md5(seed.encode("utf-8", "surrogateescape")).hexdigest()[:12]


@dataclass(slots=True, init=False, unsafe_hash=True)
class Send:
    """Send `data` to `dest`; `request` tells the adapter to use the worker's request socket.

    `txn` is the transaction sending it: when the socket refuses this send, the adapter
    hands it back through `ProxyCore.send_failed`, which fails that transaction only."""

    data: bytes
    dest: Destination
    request: bool = False
    txn: ClientTransaction | ServerTransaction | None = field(
        default=None, compare=False, repr=False)

    def __init__(self, data: bytes, dest: Destination, request: bool = False,
                 txn: ClientTransaction | ServerTransaction | None = None) -> None:
        # Written out and not frozen (compared and hashed as before; nothing mutates it):
        # a frozen dataclass's generated __init__ is interpreted Python setting each field
        # with object.__setattr__, even in the compiled core, and one is built per message sent.
        self.data = data
        self.dest = dest
        self.request = request
        self.txn = txn


@dataclass(frozen=True, slots=True)
class Await:
    """A routing hook returned an awaitable: await it, then run `resume(now)`."""

    awaitable: Awaitable[Any]
    resume: Callable[[float], list[Output]]
    call_id: str


Output = Send | Await | ClusterSend
Logger = Callable[..., None]


def _no_log(*_args: Any, **_kwargs: Any) -> None:
    return None


class ProxyCore:
    """One edge process's proxy: transactions, response contexts, routing."""

    def __init__(
        self,
        interfaces: Sequence[Interface],
        router: LoadedRouter,
        *,
        settings: TimerSettings | None = None,
        local_domains: Iterable[str] = (),
        static_routes: Mapping[str, str] | None = None,
        trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        default_transport: str = "inbound",
        services: Mapping[str, Any] | None = None,
        counters: EdgeCounters | None = None,
        log: Logger | None = None,
        trace: Logger | None = None,
        auth: ProxyAuthenticator | None = None,
        worker: int = 0,
        tracker: Any = None,
        rr_signer: rr_signing.RecordRouteSigner | None = None,
        anycast: AnycastCore | None = None,
    ) -> None:
        if not interfaces:
            raise ValueError("the proxy needs at least one interface")
        self.interfaces = list(interfaces)
        self.router = router
        self.settings = settings or TimerSettings()
        self.layer = TransactionLayer(self.settings)
        self.local_domains = frozenset(d.lower() for d in local_domains)
        self.static_routes = dict(static_routes or {})
        self.trusted = TrustedNetworks(trusted)
        self.default_transport = default_transport
        self.services = dict(services or {})
        self.counters = counters or EdgeCounters()
        self.auth = auth
        # services/edge/dialog_tracking.DialogTracker: told what is forwarded and relayed
        # for dialogs (the dialog service); None when no dialog tracking runs.
        self.tracker = tracker
        self.log = log or _no_log  # problems worth a warning
        self.trace = trace  # per-message debug lines; None keeps the hot path quiet
        # Told (method, final status, `now` the request arrived) when a stateful request's
        # final response leaves: the adapter's transaction time histogram.
        self.on_transaction: Callable[[str, int, float], None] | None = None
        self._branch_ids = count(1)
        self._worker = f"{worker:x}"
        # Timer C: the heap holds (deadline, seq) only and `_timer_c_branches` the armed
        # ones, so a stopped Timer C (3 minutes by default) does not keep its branch, the
        # response context and their messages alive until the stale entry surfaces.
        self._timer_c: list[tuple[float, int]] = []
        self._timer_c_branches: dict[int, Branch] = {}
        self._seq = count()
        self._answered: RecentAnswers[ServerKey, Send] = RecentAnswers(self.settings.t2)
        # Graceful drain (SIGTERM): no new transaction over UDP, running ones finish.
        self.draining = False
        self.drained_requests = 0  # new requests left to a retransmission meanwhile
        # Our Record-Route carries a MAC of the dialog (rr_signing.py); without a configured
        # key one is drawn per process (tests, an edge of its own).
        self.rr_signer = rr_signer or rr_signing.RecordRouteSigner(os.urandom(32))
        # Header lines that passed validation lately: a dialog's messages repeat most of
        # their lines, which are then not parsed again (shared.sip.ValidatedLines).
        self._known = ValidatedLines()
        # Anycast listeners (anycast.py): the decisions, and while `receive` runs, the node
        # a replicated message came from (None: from the network) / whether to consult them.
        self.anycast = anycast
        self._origin: int | None = None
        self._anycast_on = True
        self._released = False  # processing an INVITE whose anycast hold ended
        self._refresh_addresses()
        # The default script's 401 to a REGISTER without credentials, on its own short
        # path (register_challenge.py); used while `router` runs the default script.
        self._challenger = RegisterChallenger(self.services, self.local_domains,
                                              self._is_myself)

    def _refresh_addresses(self) -> None:
        # (host, port) pairs that mean "this proxy": listening ports and Via ports.
        ours: set[tuple[str, int]] = set()
        for itf in self.interfaces:
            hosts = {itf.host, itf.advertise, *itf.aliases} - {""}
            for host in hosts:
                ours.add((host.lower(), itf.port))
                ours.add((host.lower(), itf.sent_by_port))
        self._ours = ours
        # Our Vias in branches still open, by the raw line written (`_fork`): a response
        # whose top Via line is one of them is ours without a parse (`_on_response`).
        self._own_vias: dict[bytes, Via] = {}
        # Our Record-Route values in responses are found by the text we wrote.
        prefixes = tuple(itf.record_route("")[:-1] for itf in self.interfaces)
        self._resign = rr_signing.ResponseResigner(self.rr_signer, prefixes)
        # ... and in the Route of in-dialog requests (`_own_route_signature`): the prefixes
        # whose URI names this proxy, as the parse of a whole value would find.
        own: list[str] = []
        for prefix in prefixes:
            try:
                if prefix not in own and self._is_myself(
                        parse_name_addr(prefix + "0>", "Route").uri):
                    own.append(prefix)
            except SipParseError:
                pass
        self._own_route_prefixes = tuple(own)

    def set_interfaces(self, interfaces: Sequence[Interface]) -> None:
        """Adopt the bound interfaces (ephemeral ports, private Via ports) after start-up."""
        self.interfaces = list(interfaces)
        self._refresh_addresses()

    # =========================================================================================
    # entry points
    def receive(self, data: bytes, source: Source, now: float, *,
                origin: int | None = None, anycast: bool = True) -> list[Output]:
        """One message from the network; `origin`: the cluster node that handed it to us
        (anycast.py: processed here as if it had arrived here, never handed on again);
        `anycast=False`: the owner could not be reached, handle it here in any case."""
        if origin is not None or not anycast:
            self._origin, self._anycast_on = origin, anycast
            try:
                return self._receive(data, source, now)
            finally:
                self._origin, self._anycast_on = None, True
        return self._receive(data, source, now)

    def _receive(self, data: bytes, source: Source, now: float) -> list[Output]:
        if len(data) <= 4 and is_keepalive(data):
            # RFC 5626 §3.5.1/§4.4.1: a CRLF (or an empty datagram) keeps a NAT binding
            # open; it is no message, malformed or otherwise.
            self.counters.keepalives.value += 1
            return []
        try:
            message = parse_message(data)
        except SipParseError as err:
            return self._malformed(data, source, err)
        out: list[Output] = []
        try:
            if isinstance(message, Response):
                self.counters.rcv_replies.value += 1
                self._on_response(message, source, now, out)
            else:
                self.counters.rcv_requests.value += 1
                self.counters.request_in(message.method)
                self._on_request(message, source, now, out)
        except SipParseError as err:
            # A header the parser reads lazily (Via, Route, URI) turned out malformed.
            self.counters.bad_msg_hdr.value += 1
            if isinstance(message, Request) and message.method != "ACK" and err.status:
                self._reply_stateless(message, source, err.status, err.reason, out)
            self.log("sip.malformed_header", detail=err.detail, call_id=message.call_id)
        return out

    def next_deadline(self) -> float | None:
        deadline = self.layer.next_deadline()
        heap = self._timer_c
        armed = self._timer_c_branches
        while heap and heap[0][1] not in armed:
            heapq.heappop(heap)  # stale: reset or stopped
        if heap and (deadline is None or heap[0][0] < deadline):
            deadline = heap[0][0]
        release = self.anycast.next_release() if self.anycast is not None else None
        if release is not None and (deadline is None or release < deadline):
            return release
        return deadline

    def handle_timer(self, now: float) -> list[Output]:
        out: list[Output] = []
        self._run_events(self.layer.handle_timer(now), now, out)
        heap = self._timer_c
        while heap and heap[0][0] <= now:
            deadline, seq = heapq.heappop(heap)
            branch = self._timer_c_branches.pop(seq, None)
            if branch is not None and branch.timer_c == deadline:
                branch.timer_c = None
                self._on_timer_c(branch, now, out)
        if self.anycast is not None and self.anycast.next_release() is not None:
            self._release_held(self.anycast, now, out)
        return out

    def _release_held(self, anycast: AnycastCore, now: float, out: list[Output]) -> None:
        """Anycast holds that ended (anycast.py, claim and hold): each INVITE processed
        here as it arrived (never held again), or sent to the claimant that won."""
        for (data, source), owner in anycast.release(now):
            if owner is not None:
                anycast.counters.requests_out += 1
                anycast.counters.replicated_out += 1
                itf = source.interface
                out.append(ClusterSend(REQUEST, owner, data, (source.host, source.port),
                                       f"{itf.transport}:{itf.host_in_uri}:{itf.port}"))
                continue
            self._released = True
            try:
                out += self.receive(data, source, now, anycast=False)
            finally:
                self._released = False

    def transport_failed(self, dest: Destination, now: float) -> list[Output]:
        """The adapter could not deliver to `dest`: fail the client transactions there."""
        out: list[Output] = []
        for txn in [t for t in self.layer.clients.values() if t.destination == dest]:
            self._run_events(self.layer.transport_error(txn, now), now, out)
        return out

    def send_failed(self, send: Send, now: float) -> list[Output]:
        """The socket refused `send` (§17.1.4, §18.4): its transaction fails, no other."""
        out: list[Output] = []
        txn = send.txn
        if txn is None or txn.state is State.TERMINATED:
            return out
        if isinstance(txn, ClientTransaction):
            if self.layer.clients.get(txn.key) is not txn:
                return out
        elif self.layer.servers.get(txn.key) is not txn:
            return out
        self._run_events(self.layer.transport_error(txn, now), now, out)
        return out

    @property
    def transactions(self) -> int:
        return len(self.layer)

    @property
    def pending(self) -> int:
        """Transactions still waiting for a final response (what a graceful stop drains)."""
        waiting = (State.CALLING, State.TRYING, State.PROCEEDING)
        layer = self.layer
        return (sum(1 for t in layer.servers.values() if t.state in waiting)
                + sum(1 for t in layer.clients.values() if t.state in waiting))

    # =========================================================================================
    # requests of our own (the Uac API, services/edge/uac.py)
    def uac_request(self, request: Request, target: Target, owner: UacOwner | None,
                    now: float) -> list[Output]:
        """Sends `request` (a UAC's, no Via yet) through a client transaction owned by
        `owner`, to its first Route hop, else `target.next_hop`, else its Request-URI
        (§8.1.2); without an owner it goes statelessly (the ACK of a 2xx). The owner is
        told the final response or the failure (408 timeout, 503 unreachable)."""
        try:
            next_hop = self._next_hop(request, target, self.interfaces[0].transport)
        except SipParseError:
            next_hop = None
        itf = self._interface_for(next_hop[1], self.interfaces[0]) if next_hop else None
        if next_hop is None or itf is None:
            if owner is not None:
                owner.on_failure(503)
            return []
        hop_uri, transport = next_hop
        branch_id = f"z9hG4bK{self._worker}u{next(self._branch_ids):x}" \
            f"{hashlib.md5(request.call_id.encode()).hexdigest()[:8]}"
        cid = self.anycast.via_suffix if itf.anycast and self.anycast else ""
        request.add_header("Via", f"SIP/2.0/{transport.upper()} {itf.advertised_in_uri}:"
                                  f"{itf.sent_by_port};branch={branch_id}{cid}")
        default_port = 5061 if hop_uri.scheme == "sips" else 5060
        dest = Destination(transport, hop_uri.host.strip("[]"), hop_uri.port or default_port,
                           interface=itf)
        data = request.serialize()
        self.counters.fwd_requests.value += 1
        if owner is None:
            return [Send(data, dest, request=True)]
        out: list[Output] = []
        _txn, events = self.layer.create_client(request, data, dest, dest.reliable, now,
                                                owner=owner)
        self._run_events(events, now, out)
        return out

    def cancel_invite(self, call_id: str, from_tag: str, now: float) -> tuple[bool, list[Output]]:
        """Cancels the pending INVITE of a dialog as if its caller had sent a CANCEL
        (§16.10): the branches are cancelled and the caller gets 487. (found, outputs)"""
        out: list[Output] = []
        for server in list(self.layer.servers.values()):
            request = server.request
            context = server.owner
            if (not isinstance(request, Request) or request.method != "INVITE"
                    or request.call_id != call_id or request.from_tag != from_tag
                    or not isinstance(context, ResponseContext) or context.final_sent):
                continue
            context.cancelled = True
            for branch in context.branches:
                self._cancel_branch(branch, now, out)
            self._check_complete(context, now, out)
            return True, out
        return False, out

    # =========================================================================================
    # malformed input
    def _malformed(self, data: bytes, source: Source, err: SipParseError) -> list[Output]:
        self.counters.bad_msg_hdr.value += 1
        if looks_like_response(data) or err.status is None:
            self.counters.drop_replies.value += looks_like_response(data)
            self.log("sip.dropped", reason=str(err), peer=f"{source.host}:{source.port}")
            return []
        answer = answer_malformed(data, err.status, err.reason)
        self.log("sip.malformed", reason=str(err), peer=f"{source.host}:{source.port}",
                 answered=answer is not None)
        if answer is None:
            return []
        out: list[Output] = []
        self._send_answer(answer, err.status, source, None, out)
        return out

    # =========================================================================================
    # requests
    def _on_request(self, request: Request, source: Source, now: float,
                    out: list[Output]) -> None:
        via = request.top_via  # raises SipParseError(400) when missing/malformed
        self._stamp_received(request, source)
        method = request.method

        key = server_key(request)
        server = self.layer.find_server(request, key)
        if server is not None and not (method == "ACK" and server.state is State.ACCEPTED):
            # A retransmission, or the ACK of a non-2xx response (§17.2.1, §17.2.3).
            self._run_events(self.layer.absorb(server, request, now), now, out)
            return
        if server is None and self._answered and self._answer_again(key, method, now, out):
            return
        if self.draining and not source.reliable and method not in ("ACK", "CANCEL"):
            # Draining: a new transaction is not started here. Over UDP its client
            # retransmits (§17.1.1.2 Timer A, §17.1.2.2 Timer E) and the retransmission
            # reaches the instance that replaces this one on the same address; ACK and
            # CANCEL belong to what is still running (§17.1.1.3, §9.2) and go on.
            self.drained_requests += 1
            return
        if (server is None and self.anycast is not None and source.interface.anycast
                and self._anycast_on and self._anycast_request(request, key, source, now, out)):
            return
        if method == "REGISTER" and self.router.request_route is self._challenger.hook:
            answer = self._challenger.answer(request, self._ours, local_to_tag,
                                             self._known)
            if answer is not None:
                self._answered.remember(key, self._send_answer(answer, 401, source, via, out),
                                        now)
                return
        # Whatever `sipmesh parse` refuses is answered here with its status (a SipParseError
        # reaches `receive`), never routed or half-processed; lines a dialog repeats are
        # remembered and not parsed twice (shared.sip.ValidatedLines).
        self._known.vouch_top_via(request)  # parsed (and maybe rewritten) above already
        request.validate(self._known)
        if method == "CANCEL" and self._on_cancel(request, source, now, out):
            return

        # §16.3 request validation (services/edge/validation.py).
        refusal, loop_hash = validation.check(request, self._is_myself, self._ours)
        if refusal is not None:
            if refusal.bad_uri:
                self.counters.bad_URIs_rcvd.value += 1
            if method == "ACK":
                self.counters.drop_requests.value += 1  # an ACK is never answered
            else:
                self._reply_new(request, source, refusal.status, now, out,
                                headers=refusal.headers)
            return

        loose, dialog_check = self._preprocess_routes(request)
        ctx = RouteContext(
            request, source, loose_routed=loose, local_domains=self.local_domains,
            static_routes=self.static_routes, trusted=self.trusted,
            is_myself=self._is_myself, services=self.services, auth=self.auth,
            dialog_check=dialog_check,
        )
        ctx.default_failure = self.router.failure_route
        if self.anycast is not None and source.interface.anycast:
            ctx.anycast = "replicated" if self._origin is not None else "anycast"

        if method == "ACK" or method == "CANCEL":
            # An ACK for a 2xx is its own transaction, and a CANCEL without a response context
            # may be for a request forwarded statelessly: both are routed and forwarded
            # statelessly (§16.11, §16.10).
            self._route(ctx, now, out, lambda n: self._forward_stateless(ctx, loop_hash, n))
            return

        # The routing hook runs before the server transaction exists, so that a reply it
        # asks to send statelessly (§8.2.7: a challenge, typically) keeps no transaction for
        # Timer J, only its bytes for T2 (see `stateless.RecentAnswers`).
        # An awaitable it returns has not started yet: the transaction is in place before
        # any retransmission can arrive.
        result = self._request_route(ctx)
        if ctx.reply_stateless and ctx.reply_status is not None and result is None:
            sent = self._reply_stateless(request, source, ctx.reply_status, ctx.reply_reason,
                                         out, headers=ctx.reply_headers, via=via)
            if sent is not None:
                self._answered.remember(key, sent, now)
            return
        server, events = self.layer.create_server(
            request, self._reply_destination(source, via), source.reliable, now)
        if self.anycast is not None and source.interface.anycast and not self._released:
            # Announce the key: a retransmission landing on another node comes here (a
            # held INVITE announced it when its hold began).
            self.anycast.counters.keys_announced += 1
            out.append(ClusterSend(ANNOUNCE, None, b"", keys=(key,)))
        context = ResponseContext(server, request, source, ctx)
        context.started = now
        server.owner = context
        self._run_events(events, now, out)
        self._continue(ctx, result, now, out,
                       lambda n: self._after_route(context, loop_hash, n))

    def _request_route(self, ctx: RouteContext) -> object:
        """Run request_route; a routing script bug answers 500 instead of raising."""
        try:
            return self.router.request_route(ctx.request, ctx)
        except SipParseError:
            raise  # a header read on demand is malformed: `receive` answers the RFC's 400
        except Exception as exc:  # a routing script bug must not take the proxy down
            self.log("route.error", hook="request_route", error=repr(exc),
                     call_id=ctx.request.call_id)
            ctx.targets.clear()
            ctx.reply(500, "Routing Error")
            return None

    def _route(self, ctx: RouteContext, now: float, out: list[Output],
               then: Callable[[float], list[Output]]) -> None:
        """Run request_route; continue at once, or after the awaitable it returned."""
        self._continue(ctx, self._request_route(ctx), now, out, then)

    @staticmethod
    def _continue(ctx: RouteContext, result: object, now: float, out: list[Output],
                  then: Callable[[float], list[Output]]) -> None:
        # `is not None` first: a synchronous hook returns None, and is_awaitable is an
        # interpreted call (services/edge/routing.py) with inspect's checks behind it.
        if result is not None and is_awaitable(result):
            out.append(Await(result, then, ctx.request.call_id))  # type: ignore[arg-type]
            return
        out.extend(then(now))

    def _after_route(self, context: ResponseContext, loop_hash: str, now: float) -> list[Output]:
        out: list[Output] = []
        ctx = context.ctx
        if context.final_sent or context.server.state is State.TERMINATED:
            return out
        if ctx.reply_status is not None:
            self._reply_context(context, ctx.reply_status, ctx.reply_reason, now, out,
                                headers=ctx.reply_headers)
            if context.final_sent:
                # Answered here, no branch: the transaction only has to resend its last
                # response until Timer J/H; let the context go now rather than keep it (and
                # the route context) alive for 32 s of every REGISTER.
                context.server.owner = None
            return out
        if not ctx.targets:
            self._reply_context(context, 503, "No Route", now, out)
            return out
        targets, ctx.targets = ctx.targets, []
        if self._tracking():
            self.tracker.forwarded(ctx, targets)
        for target in targets:
            self._fork(context, target, loop_hash, now, out)
        self._check_complete(context, now, out)
        return out

    def _tracking(self) -> bool:
        """Whether the tracker wants `forwarded`: the test `DialogTracker.forwarded` starts
        with, read here as two attributes.  Without a dialog service (the standalone edge
        `make bench` runs: tracking enabled, none known) the call was an interpreted frame
        and a property per forwarded request for nothing (eighth round's profile)."""
        tracker = self.tracker
        return tracker is not None and tracker.enabled and tracker.client.available

    def _forward_stateless(self, ctx: RouteContext, loop_hash: str, now: float
                           ) -> list[Output]:
        out: list[Output] = []
        if ctx.replicate and self.anycast is not None:
            # ctx.anycast_replicate() (OpenSIPS t_anycast_replicate): every node looks for
            # the transaction, only its owner acts; nothing is forwarded from here.
            self.anycast.counters.replicate_calls += 1
            self.anycast.counters.requests_out += 1
            self.anycast.counters.replicated_out += 1
            out.append(self._cluster_send(REQUEST, None, ctx.request, ctx.source))
            return out
        if ctx.reply_status is not None or not ctx.targets:
            if ctx.request.method == "CANCEL":  # an ACK is never answered; a CANCEL is
                self._reply_stateless(ctx.request, ctx.source, 481,
                                      "Call/Transaction Does Not Exist", out)
            else:
                self.counters.drop_requests.value += 1
            return out
        target = ctx.targets[0]
        # §16.11: a stateless branch must be the same for retransmissions of the request.
        branch = "z9hG4bK" + loop_hash + ".a" + hashlib.md5(
            _raw(ctx.request.top_via.branch or ctx.request.call_id)).hexdigest()[:10]
        built = self._build_branch_request(ctx, ctx.request, target, branch)
        if built is None:
            self.counters.drop_requests.value += 1
            return out
        fwd, dest = built
        self.counters.fwd_requests.value += 1
        if self._tracking():
            self.tracker.forwarded(ctx, [target])
        out.append(Send(fwd.serialize(), dest, request=True))
        return out

    # -- anycast (anycast.py) ---------------------------------------------------------------
    def _anycast_request(self, request: Request, key: ServerKey, source: Source, now: float,
                         out: list[Output]) -> bool:
        """A request on an anycast listener matching no local transaction: True when it
        went to its owner (or every node), or is a replicated one that is not ours."""
        anycast = self.anycast
        assert anycast is not None
        method = request.method
        lookup = key
        if method == "CANCEL":
            if self.layer.find_cancelled(request) is not None:
                return False  # our INVITE: §16.10 here
            lookup = server_key(request, "INVITE")
        route, node = anycast.route_request(method, lookup, self._origin is not None, now)
        counters = anycast.counters
        if route is Route.LOCAL:
            if not anycast.holds(method, self._origin is not None):
                return False
            # Claim and hold (anycast.py): announce the key now, decide at the release.
            if anycast.hold_request(key, (request.serialize(), source), now):
                out.append(ClusterSend(ANNOUNCE, None, b"", keys=(key,)))
            return True
        if route is Route.DROP:
            counters.dropped_not_owner += 1
            return True
        counters.requests_out += 1
        counters.replicated_out += 1
        if route is Route.BROADCAST:
            counters.auto_cancel_out += 1
            out.append(self._cluster_send(AUTO_CANCEL, None, request, source))
        else:
            out.append(self._cluster_send(REQUEST, node, request, source))
        return True

    @staticmethod
    def _cluster_send(kind: int, node: int | None, message: Request | Response,
                      source: Source) -> ClusterSend:
        itf = source.interface
        return ClusterSend(kind, node, message.serialize(), (source.host, source.port),
                           f"{itf.transport}:{itf.host_in_uri}:{itf.port}", message.call_id)

    def anycast_listener(self, name: str) -> Interface | None:
        """Our anycast interface called `name` (`udp:host:port`), where a replicated
        message is re-injected (it exists on every node of the cluster)."""
        for itf in self.interfaces:
            if itf.anycast and f"{itf.transport}:{itf.host_in_uri}:{itf.port}" == name:
                return itf
        return None

    def replicated(self, item: ClusterSend, origin: int, now: float) -> list[Output]:
        """A message another node handed to us (capability tm-repl)."""
        anycast = self.anycast
        itf = self.anycast_listener(item.listener)
        if anycast is None or itf is None:
            self.counters.drop_requests.value += 1
            return []
        counters = anycast.counters
        counters.replicated_in += 1
        if item.kind == REPLY:
            counters.replies_in += 1
        else:
            counters.requests_in += 1
        source = Source(itf, item.source[0], item.source[1])
        return self.receive(item.data, source, now, origin=origin)

    def replication_failed(self, item: ClusterSend, now: float) -> list[Output]:
        """The cluster could not take `item` to its owner: handle it here after all - a
        reply is forwarded by its Via (§16.11), a request processed as a local one."""
        anycast = self.anycast
        itf = self.anycast_listener(item.listener)
        if anycast is None or itf is None or item.kind == ANNOUNCE:
            return []
        anycast.counters.replication_failed += 1
        if item.kind == REPLY:
            anycast.counters.owner_down_stateless += 1  # no transaction here: by its Via
        source = Source(itf, item.source[0], item.source[1])
        return self.receive(item.data, source, now, anycast=False)

    # -- CANCEL (§16.10, §9.2) -----------------------------------------------------------------
    def _on_cancel(self, cancel: Request, source: Source, now: float, out: list[Output]) -> bool:
        """§16.10 with a response context; False when there is none (forward statelessly)."""
        invite = self.layer.find_cancelled(cancel)
        if invite is None:
            return False
        server, events = self.layer.create_server(
            cancel, self._reply_destination(source, cancel.top_via), source.reliable, now)
        self._run_events(events, now, out)
        self._respond(server, make_response(cancel, 200, to_tag=self._tag(cancel)), now, out)
        context: ResponseContext | None = invite.owner
        if context is None or context.final_sent:
            return True
        context.cancelled = True
        for branch in context.branches:
            self._cancel_branch(branch, now, out)
        self._check_complete(context, now, out)
        return True

    def _cancel_branch(self, branch: Branch, now: float, out: list[Output]) -> None:
        if branch.cancelled or branch.done or branch.txn is None:
            return
        if not branch.got_provisional:
            branch.cancel_pending = True  # §9.1: wait for a provisional response
            return
        request = branch.txn.request
        if request is None:  # its final response arrived: nothing left to cancel
            return
        branch.cancelled = True
        headers: list[tuple[str, str]] = [("Via", str(request.top_via))]
        headers.extend(("Route", r) for r in request.get_all("Route"))
        headers += [
            ("Max-Forwards", "70"),
            ("From", request.get("From") or ""),
            ("To", request.get("To") or ""),
            ("Call-ID", request.call_id),
            ("CSeq", f"{request.cseq.number} CANCEL"),
        ]
        cancel = Request("CANCEL", request.uri, headers)
        data = cancel.serialize()
        _txn, events = self.layer.create_client(
            cancel, data, branch.txn.destination, branch.txn.reliable, now, owner=None)
        self.counters.fwd_requests.value += 1
        self._run_events(events, now, out)

    # -- forking (§16.6) ---------------------------------------------------------------------------
    def _fork(self, context: ResponseContext, target: Target, loop_hash: str, now: float,
              out: list[Output]) -> None:
        branch = Branch(context, target)
        context.branches.append(branch)
        branch_id = f"z9hG4bK{loop_hash}.{self._worker}{next(self._branch_ids):x}"
        built = self._build_branch_request(context.ctx, context.request, target, branch_id)
        if built is None:
            # Nothing can carry this branch: it fails with 477, as OpenSIPS and Kamailio
            # answer a failed send (RFC 3261 §16.9 would say 503, which §16.7 step 6 then
            # turns into a misleading 500 for the caller).
            self._branch_final(branch, self._synthetic(context, 477, "Send Failed"), now, out)
            return
        request, dest = built
        # Its Vias and Record-Routes come back in every response: known valid already.
        self._known.vouch(request, _VOUCHED)
        line = request.top_via_line()
        if line is not None:
            own = self._own_vias
            if len(own) >= _OWN_VIAS:
                own.clear()  # bounded (branches never released); a miss is only a parse
            own[line] = request.top_via
            branch.via_line = line
        txn, events = self.layer.create_client(
            request, request.serialize(), dest, dest.reliable, now, owner=branch)
        branch.txn = txn
        self.counters.fwd_requests.value += 1
        if context.is_invite:
            self._arm_timer_c(branch, now)
        if self.trace is not None:
            self.trace("sip.forward", call_id=request.call_id, branch=branch_id,
                       method=request.method, to=f"{dest.transport}:{dest.host}:{dest.port}")
        self._run_events(events, now, out)

    def _build_branch_request(
        self, ctx: RouteContext, base: Request, target: Target, branch_id: str
    ) -> tuple[Request, Destination] | None:
        """§16.6: the request for one branch and where to send it (None: nothing can carry
        it).  Built in one pass from the received request (`Request.forwarded`); a preloaded
        route set, a strict router as next hop, an odd Max-Forwards or Request-URI take
        `_build_edited`, the same steps as edits of a copy, with the same result."""
        uri = target.uri
        mf = base.max_forwards
        if target.route or (mf is not None and mf < 1) or (
                uri != base.uri and (not uri or any(ch in uri for ch in " \t\r\n"))):
            return self._build_edited(ctx, base, target, branch_id)
        try:
            first = base.get("Route")
            if first:
                hop = parse_name_addr(first, "Route").uri
                if not hop.lr:  # §16.6 step 6: a strict router rewrites the request
                    return self._build_edited(ctx, base, target, branch_id)
            elif target.next_hop:
                hop = parse_uri(target.next_hop)
            elif uri == base.uri:
                hop = base.parsed_uri
            else:
                hop = parse_uri(uri, "Request-URI")
        except SipParseError:
            return None
        next_hop = self._hop_transport(hop, target, ctx.source.interface.transport)
        if next_hop is None:
            return None
        return self._finish_branch(ctx, base, None, target, branch_id, next_hop)

    def _build_edited(
        self, ctx: RouteContext, base: Request, target: Target, branch_id: str
    ) -> tuple[Request, Destination] | None:
        """`_build_branch_request` as edits of a copy: every case, the one-pass build's
        reference (tests compare the two)."""
        request = base.copy()
        if target.uri != request.uri:
            request.set_uri(target.uri)  # §16.6 step 2
        mf = request.max_forwards  # §16.6 step 3
        if mf is None:
            request.add_header("Max-Forwards", "70", first=False)
        else:
            # Rewritten in place: one header line replaced, the others shared with `base`.
            request.set_header("Max-Forwards", str(mf - 1))
        # A preloaded route set (RFC 3327 §5.3: the binding's Path) goes on top, in order,
        # so the branch is sent to its first hop as any Route (§16.6 steps 6-7).
        for value in reversed(target.route):
            request.add_header("Route", value)
        try:
            next_hop = self._next_hop(request, target, ctx.source.interface.transport)
        except SipParseError:
            return None
        if next_hop is None:
            return None
        return self._finish_branch(ctx, base, request, target, branch_id, next_hop)

    def _finish_branch(
        self, ctx: RouteContext, base: Request, edited: Request | None, target: Target,
        branch_id: str, next_hop: tuple[Uri, str]
    ) -> tuple[Request, Destination] | None:
        """§16.6 steps 4 and 8 and the destination: Record-Route, our Via, onto `edited`
        (a copy already edited) or, when None, built in one pass from `base`."""
        hop_uri, transport = next_hop
        default_port = 5061 if hop_uri.scheme == "sips" else 5060
        # An explicit port 0 stays 0 (and is refused below), it is no default port.
        port = default_port if hop_uri.port is None else hop_uri.port
        host = hop_uri.host.strip("[]")
        outbound = self._interface_for(transport, ctx.source.interface, host)
        if outbound is None or not sendable(host, port, outbound):
            # No socket of ours can reach it (port 0, an IPv6 target on IPv4 sockets only):
            # the branch fails here, as a send error would (§16.9), and nothing is sent.
            return None
        rrs: tuple[str, ...] = ()
        if ctx.rr:  # §16.6 step 4; RFC 5658 double Record-Route when the interface changes
            signature = self._rr_signature(base)
            inbound = ctx.source.interface
            # `is not` first: Interface's generated __eq__ is interpreted Python.
            if inbound is not outbound and inbound != outbound:
                rrs = (outbound.record_route(signature), inbound.record_route(signature))
            else:
                rrs = (outbound.record_route(signature),)
                if not base.has("Record-Route"):  # the callee's route set: this value
                    self._expect_route(rrs[0])
        # §16.6 step 8: our Via on top; out of an anycast listener it names its owner.
        cid = ((self.anycast.param, str(self.anycast.node_id))
               if outbound.anycast and self.anycast else None)
        via_transport = transport.upper()
        request = edited
        if request is None:
            request = base.forwarded(target.uri, rrs, via_transport,
                                     outbound.advertised_in_uri, outbound.sent_by_port,
                                     branch_id, cid)
            if request is None:  # several Max-Forwards lines: edit a copy instead
                return self._build_edited(ctx, base, target, branch_id)
        else:
            for value in reversed(rrs):
                request.add_header("Record-Route", value)
            request.push_via(via_transport, outbound.advertised_in_uri,
                             outbound.sent_by_port, branch_id, cid)
        return request, Destination(transport, host, port, interface=outbound)

    def _rr_signature(self, request: Request) -> str:
        """The `sg` of our Record-Route in `request`: its dialog and the caller's Contact,
        where the callee's in-dialog requests will go (rr_signing.py)."""
        return self._resign.sign(request)

    def _next_hop(self, request: Request, target: Target,
                  inbound: str) -> tuple[Uri, str] | None:
        """§16.6 steps 6-7: the URI to send to and its transport."""
        first = request.get("Route")
        if first:
            top = parse_name_addr(first, "Route").uri
            if not top.lr:
                # §16.6 step 6: the next hop is a strict router; it expects its URI as the
                # Request-URI and the real Request-URI as the last Route.
                request.pop_first_value("Route")
                request.add_header("Route", f"<{request.uri}>", first=False)
                request.set_uri(str(top))
            hop = top
        elif target.next_hop:
            hop = parse_uri(target.next_hop)
        else:
            hop = request.parsed_uri
        return self._hop_transport(hop, target, inbound)

    def _hop_transport(self, hop: Uri, target: Target, inbound: str) -> tuple[Uri, str] | None:
        """§16.6 step 7: the transport to `hop` (None: not a URI this proxy sends to)."""
        if hop.scheme not in SUPPORTED_SCHEMES or not hop.host:
            return None
        transport = target.transport or hop.transport
        if transport is None:
            if hop.scheme == "sips":
                transport = "tcp"  # TLS is not offered here; sips still needs a stream
            elif self.default_transport == "inbound":
                transport = inbound
            else:
                transport = self.default_transport
        return hop, transport.lower()

    def _interface_for(self, transport: str, inbound: Interface,
                       host: str = "") -> Interface | None:
        """The socket to send from: the inbound one when it fits, else one of `transport`
        on the same address, else any of `transport` - of the destination's family."""
        family = address_family(host) if host else 0
        if inbound.transport == transport and (
                not family or address_family(inbound.host) == family):
            return inbound
        fitting = [i for i in self.interfaces if i.transport == transport and (
            not family or address_family(i.host) == family)]
        for itf in fitting:
            if itf.host == inbound.host:
                return itf
        if fitting:
            return fitting[0]
        for itf in self.interfaces:  # none of that family: `sendable` refuses it next
            if itf.transport == transport:
                return itf
        return None

    # -- responses (§16.7) ----------------------------------------------------------------------
    def _on_response(self, response: Response, source: Source, now: float,
                     out: list[Output]) -> None:
        via = response.known_top_via(self._own_vias)
        if via is None:
            via = response.top_via
            if sent_by(via) not in self._ours:
                self.counters.drop_replies.value += 1  # §18.1.2: not sent by us
                return
        response.validate(self._known)  # a malformed response is dropped (§18.1.2)
        anycast = self.anycast
        if anycast is not None and source.interface.anycast and self._anycast_on:
            route, node = anycast.route_reply(via.params.get(anycast.param),
                                              self._origin is not None)
            if route is Route.OWNER:
                # OpenSIPS TM_CLUSTER_REPLY: the owner processes it as if it came there.
                anycast.counters.replies_out += 1
                anycast.counters.replicated_out += 1
                out.append(self._cluster_send(REPLY, node, response, source))
                return
            if route is Route.STATELESS:
                # The owner is Down (OpenSIPS drops it): §16.11, forward it by its Via.
                anycast.counters.owner_down_stateless += 1
                self.log("anycast.owner_down", owner=node, call_id=response.call_id,
                         status=response.status)
                self.counters.reply_in(response.status)
                self._forward_stateless_response(response, out)
                return
        self.counters.reply_in(response.status)
        events = self.layer.receive_response(response, now)
        if events is None:
            if self._origin is not None and response.status < 200 and anycast is not None:
                # A provisional that crossed the cluster and was overtaken by the final
                # response (which reached this owner directly, or over a faster link): its
                # transaction is over, and relayed now it would reach the caller after the
                # final one. Anycast reorders what one path would not; dropped, counted.
                anycast.counters.late_provisional += 1
                return
            self._forward_stateless_response(response, out)
            return
        self._run_events(events, now, out)

    def _forward_stateless_response(self, response: Response, out: list[Output]) -> None:
        # §16.7: no matching transaction - e.g. a retransmitted 2xx after the INVITE
        # transaction ended.  100 Trying is hop-by-hop and never forwarded.
        if response.status == 100:
            return
        response.pop_first_value("Via")
        if not response.get("Via"):
            self.counters.drop_replies.value += 1
            return
        dest = self._via_destination(response)
        if dest is None:
            self.counters.drop_replies.value += 1
            return
        if response.status < 300:  # a 2xx retransmission: sign as its first copy was
            self._resign(response)
        self.counters.fwd_replies.value += 1
        self.counters.reply_out(response.status)
        out.append(Send(response.serialize(), dest))

    def _on_branch_response(self, branch: Branch, response: Response, now: float,
                            out: list[Output]) -> None:
        context = branch.context
        status = response.status
        if status < 200:
            branch.got_provisional = True
            if status > 100 and branch.timer_c is not None:
                self._arm_timer_c(branch, now)  # §16.7 step 2: reset Timer C
            if branch.cancel_pending:
                branch.cancel_pending = False
                self._cancel_branch(branch, now, out)
                return
            if status == 100 or context.final_sent or branch.done:
                return

            def relay(n: float, o: list[Output]) -> None:
                if not context.final_sent:
                    self._relay(context, response, n, o, branch=branch)  # §16.7 step 5: at once

            self._after_reply_route(response, context, relay, now, out)
            return
        if branch.done:
            if 200 <= status < 300 and context.is_invite:
                # A late 2xx after Timer C or a CANCEL still has to reach the caller.
                self._after_reply_route(
                    response, context,
                    lambda n, o: self._relay(context, response, n, o, branch=branch), now, out)
            return
        self._stop_timer_c(branch)
        branch.final_status = status
        branch.response = response

        def decide(n: float, o: list[Output]) -> None:
            if status < 300:
                # §16.7 step 5: 2xx are forwarded at once, even after another 2xx.
                self._relay(context, response, n, o, branch=branch)
                if context.is_invite:
                    for other in context.branches:
                        if other is not branch:
                            self._cancel_branch(other, n, o)
                return
            if status >= 600 and context.is_invite:
                for other in context.branches:  # §16.7 step 5: 6xx ends the search
                    if other is not branch:
                        self._cancel_branch(other, n, o)
            self._check_complete(context, n, o)

        self._after_reply_route(response, context, decide, now, out)

    def _after_reply_route(self, response: Response, context: ResponseContext,
                           then: Callable[[float, list[Output]], None], now: float,
                           out: list[Output]) -> None:
        """Run reply_route, then `then` (relay, cancel, choose): at once, or, when the hook
        returned an awaitable (an SDP rewritten by rtpengine), once it is done.  Responses
        of one transaction go on in arrival order whatever order their hooks finish in: a
        183 waiting for its SDP is not overtaken by the 200 behind it."""
        result = self._reply_route(response, context)
        gate = context.reply_gate
        if result is None and not gate:
            then(now, out)
            return
        if gate is None:
            gate = context.reply_gate = deque()
        entry: list[Any] = [result is None, then]
        gate.append(entry)
        if result is None:
            return  # behind a response still waiting for its hook

        def resume(n: float) -> list[Output]:
            entry[0] = True
            o: list[Output] = []
            while gate and gate[0][0]:
                gate.popleft()[1](n, o)
            return o

        out.append(Await(result, resume, context.request.call_id))

    def _branch_final(self, branch: Branch, response: Response, now: float,
                      out: list[Output]) -> None:
        """A branch ended without a real final response (timeout, transport error)."""
        if branch.done:
            return
        self._stop_timer_c(branch)
        branch.final_status = response.status
        branch.response = response
        self._check_complete(branch.context, now, out)

    def _check_complete(self, context: ResponseContext, now: float, out: list[Output]) -> None:
        """§16.7 steps 4-6: when every branch is final, choose and send the best response."""
        if context.final_sent or not context.branches:
            return
        if any(not b.done for b in context.branches):
            return
        finals = [b.response for b in context.branches if b.response is not None]
        if any(r.status < 300 for r in finals):
            return  # the 2xx went out already
        best = best_response(finals)
        ctx = context.ctx
        hook = ctx.failure_hook
        if hook is not None and not context.cancelled and best.status < 600:
            ctx.failure_hook = None  # armed once; the hook may arm it again
            if self._run_failure_route(context, hook, best, now, out):
                return
        if context.cancelled and best.status < 600:
            best = self._synthetic(context, 487)
        self._send_best(context, best, finals, now, out)

    def _run_failure_route(self, context: ResponseContext, hook: Callable[..., Any],
                           best: Response, now: float, out: list[Output]) -> bool:
        ctx = context.ctx
        try:
            result = hook(best, ctx)
        except Exception as exc:
            self.log("route.error", hook="failure_route", error=repr(exc),
                     call_id=context.request.call_id)
            return False
        loop_hash = validation.loop_hash(context.request)

        def resume(n: float) -> list[Output]:
            o: list[Output] = []
            if context.final_sent:
                return o
            if ctx.reply_status is not None:
                self._reply_context(context, ctx.reply_status, ctx.reply_reason, n, o,
                                    headers=ctx.reply_headers)
                ctx.reply_status = None
                return o
            if ctx.targets:
                targets, ctx.targets = ctx.targets, []
                for target in targets:
                    self._fork(context, target, loop_hash, n, o)
                self._check_complete(context, n, o)
                return o
            finals = [b.response for b in context.branches if b.response is not None]
            self._send_best(context, best_response(finals), finals, n, o)
            return o

        if result is not None and is_awaitable(result):
            out.append(Await(result, resume, context.request.call_id))
            return True
        out.extend(resume(now))
        return True

    def _send_best(self, context: ResponseContext, best: Response, finals: list[Response],
                   now: float, out: list[Output]) -> None:
        if best.status == 503:
            # §16.7 step 6: a 503 would make the caller avoid this proxy; send 500 instead.
            best = self._synthetic(context, 500)
        elif is_challenge(best.status):
            # §16.7 step 7: aggregate every challenge into the one 401/407 sent upstream.
            best = best.copy()
            for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                values = [v for r in finals if is_challenge(r.status) for v in r.get_all(name)]
                if values:
                    best.remove_header(name)
                    for value in values:
                        best.add_header(name, value, first=False)
        self._relay(context, best, now, out, received=best.get("Via") != context.request.get("Via"))

    def _relay(self, context: ResponseContext, response: Response, now: float,
               out: list[Output], *, received: bool = True,
               branch: Branch | None = None) -> None:
        """Send `response` upstream through the server transaction (§16.7 steps 8-9).

        `received` responses carry our Via on top, which goes (§16.7 step 9); responses we
        made from the upstream request (408, 487, 500) have the caller's Vias already.
        """
        if received:
            # Our own Via line, as written for this branch, goes without being decoded.
            if branch is None or not branch.via_line or not response.drop_top_via_line(
                    branch.via_line):
                response.pop_first_value("Via")
            if 100 < response.status < 300 and context.ctx.rr and not context.ctx.trusted:
                # The caller's route set, signed for the callee's Contact (rr_signing.py);
                # a trusted caller's in-dialog requests are followed without it.
                resigned = self._resign(response)
                if resigned is not None and "," not in resigned:
                    self._expect_route(resigned)
        if response.status >= 200:
            if context.final_sent and response.status >= 300:
                return
            context.final_sent = True
            self._finished(context, response.status)
        if (self.tracker is not None and context.is_invite
                and context.ctx.dialog_options is not None):  # `relayed`'s own first test
            txn = branch.txn if branch is not None else None
            self.tracker.relayed(context.ctx, response, txn.destination if txn else None)
        server = context.server
        if server.state is State.TERMINATED or (
                response.status < 300 and server.state in (State.COMPLETED, State.CONFIRMED)):
            # A 2xx always reaches the caller (§16.7 step 5), even when the transaction
            # already ended or answered 408/487 (Timer C, CANCEL): send it directly.
            self.counters.fwd_replies.value += 1
            self.counters.reply_out(response.status)
            out.append(Send(response.serialize(), server.destination))
            return
        self.counters.fwd_replies.value += 1
        self._respond(server, response, now, out)

    def _reply_route(self, response: Response, context: ResponseContext
                     ) -> Awaitable[Any] | None:
        """Run reply_route; its awaitable, or None (a hook that raised counts as done)."""
        hook = self.router.reply_route
        if hook is None:
            return None
        try:
            result = hook(response, context.ctx)
        except Exception as exc:
            self.log("route.error", hook="reply_route", error=repr(exc),
                     call_id=context.request.call_id)
            return None
        return result if result is not None and is_awaitable(result) else None

    def _finished(self, context: ResponseContext, status: int) -> None:
        """The request's final response is on its way: tell the route context once."""
        if self.on_transaction is not None and context.started >= 0:
            self.on_transaction(context.request.method, status, context.started)
            context.started = -1.0  # once per request, however many 2xx a fork relays
        hook = context.ctx.on_final
        if hook is None:
            return
        context.ctx.on_final = None
        try:
            hook(status)
        except Exception as exc:
            self.log("route.error", hook="on_final", error=repr(exc),
                     call_id=context.request.call_id)

    # -- Timer C (§16.6 step 11, §16.8) -----------------------------------------------------------
    def _arm_timer_c(self, branch: Branch, now: float) -> None:
        deadline = now + self.settings.timer_c
        self._timer_c_branches.pop(branch.timer_c_seq, None)  # a reset replaces the entry
        seq = next(self._seq)
        branch.timer_c = deadline
        branch.timer_c_seq = seq
        self._timer_c_branches[seq] = branch
        heapq.heappush(self._timer_c, (deadline, seq))

    def _stop_timer_c(self, branch: Branch) -> None:
        branch.timer_c = None
        self._timer_c_branches.pop(branch.timer_c_seq, None)

    def _on_timer_c(self, branch: Branch, now: float, out: list[Output]) -> None:
        # §16.8: with a provisional response, CANCEL the branch; the caller gets 408 now.
        if branch.done:
            return
        self.log("sip.timer_c", call_id=branch.context.request.call_id)
        self._cancel_branch(branch, now, out)
        self._branch_final(branch, self._synthetic(branch.context, 408), now, out)

    # -- transaction events ---------------------------------------------------------------
    def _run_events(self, events: list[TransactionEvent], now: float, out: list[Output]) -> None:
        for event in events:
            if isinstance(event, Transmit):
                self.counters.retransmissions.value += event.retransmission
                dest: Destination = event.destination
                out.append(Send(event.data, dest, event.data[:4] != b"SIP/", event.transaction))
            elif isinstance(event, ResponseReceived):
                branch = event.transaction.owner
                if isinstance(branch, Branch):
                    self._on_branch_response(branch, event.response, now, out)
                    if event.response.status >= 200:
                        self._release(event.transaction)
                elif isinstance(branch, UacOwner):  # a request of the Uac API (uac.py)
                    out.extend(branch.on_response(event.response, now))
            elif isinstance(event, TimedOut | TransportFailed):
                txn = event.transaction
                status = 408 if isinstance(event, TimedOut) else 503
                if isinstance(txn, ClientTransaction) and isinstance(txn.owner, Branch):
                    branch = txn.owner
                    self._branch_final(branch, self._synthetic(branch.context, status), now, out)
                elif isinstance(txn, ClientTransaction) and isinstance(txn.owner, UacOwner):
                    txn.owner.on_failure(status)
                elif isinstance(txn, ServerTransaction):
                    self.log("sip.server_timeout", call_id=txn.request.call_id)
            elif isinstance(event, Terminated):
                self._release(event.transaction)

    def _release(self, txn: ClientTransaction | ServerTransaction) -> None:
        """Break the reference cycles of a finished response context.

        Context <-> branches, server transaction <-> context and client transaction <->
        branch point at each other; once nothing can reach the context any more, the
        links go so reference counting frees it all at once.  Left to the cyclic garbage
        collector, thousands of finished calls would be promoted to its oldest generation
        and rescanned in long full collections (measured: the largest single cost of a
        loaded edge).

        Nothing reaches it once its final response went upstream (or its server
        transaction ended) and no branch can pass a response up: each one's client
        transaction has its final (Completed absorbs what follows, §17.1.1.2, §17.1.2.2)
        or ended, no Timer C runs and no response waits for an async reply_route.  That
        is at the final response, not when the transactions end (Timers J, L, K, D: up
        to 32 s later): the request, its route context and the responses go 32 s sooner.
        What still comes is answered without the context: a retransmitted request by
        its server transaction, a CANCEL with 200 and nothing to cancel (§9.2), a 2xx
        retransmission statelessly (§16.7, the INVITE's client transaction ended).
        """
        owner = txn.owner
        if owner is None:
            return
        context = owner.context if isinstance(owner, Branch) else owner
        if not isinstance(context, ResponseContext):
            return
        if context.server.state is not State.TERMINATED and (
                not context.final_sent or context.reply_gate):
            return
        for branch in context.branches:
            if branch.timer_c is not None or (
                    branch.txn is not None and branch.txn.state is not State.TERMINATED
                    and branch.txn.state is not State.COMPLETED):
                return
        context.server.owner = None
        own = self._own_vias
        for branch in context.branches:
            if branch.txn is not None:
                branch.txn.owner = None
            if branch.via_line:
                own.pop(branch.via_line, None)
        context.branches = []

    # -- replies of our own ------------------------------------------------------------------------
    # Every reply of the proxy's own leaves one of two ways: `_respond`, through a server
    # transaction (§17.2: retransmitted, its ACK absorbed), or `_send_answer`, stateless
    # (§8.2.7).  The helpers below only build the response for one or the other.
    def _synthetic(self, context: ResponseContext, status: int,
                   reason: str | None = None) -> Response:
        return make_response(context.request, status, reason, to_tag=self._tag(context.request))

    def _reply_new(self, request: Request, source: Source, status: int, now: float,
                   out: list[Output], *, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer a request on a fresh server transaction (so its ACK is absorbed)."""
        server, events = self.layer.create_server(
            request, self._reply_destination(source, request.top_via), source.reliable, now,
            send_trying=False)
        self._run_events(events, now, out)
        response = make_response(request, status, to_tag=self._tag(request), headers=headers)
        self._respond(server, response, now, out)

    def _reply_context(self, context: ResponseContext, status: int, reason: str | None,
                       now: float, out: list[Output], *,
                       headers: Iterable[tuple[str, str]] = ()) -> None:
        response = make_response(context.request, status, reason,
                                 to_tag=self._tag(context.request), headers=headers)
        context.final_sent = status >= 200
        if context.final_sent:
            self._finished(context, status)
        if (self.tracker is not None and context.is_invite
                and context.ctx.dialog_options is not None):
            self.tracker.relayed(context.ctx, response)
        self._respond(context.server, response, now, out)

    def _respond(self, server: ServerTransaction, response: Response, now: float,
                 out: list[Output]) -> None:
        self.counters.reply_out(response.status)
        self._run_events(self.layer.respond(server, response, now), now, out)

    def _reply_stateless(self, request: Request, source: Source, status: int,
                         reason: str | None, out: list[Output], *,
                         headers: Iterable[tuple[str, str]] = (),
                         via: Any = None) -> Send | None:
        """Answer without a transaction (§8.2.7).  The To tag is derived from the request,
        so a retransmission gets the same tag.  Without `via` (the request's may be
        malformed) the answer goes back to the source address."""
        try:
            response = make_response(request, status, reason, to_tag=self._tag(request),
                                     headers=headers)
            data = response.serialize()
        except SipParseError:
            data = answer_malformed(request.serialize(), status, reason or "") or b""
        if not data:
            return None
        return self._send_answer(data, status, source, via, out)

    def _send_answer(self, data: bytes, status: int, source: Source, via: Any,
                     out: list[Output]) -> Send:
        """The one way a stateless answer leaves (§8.2.7, §18.2.2: to the top Via's
        sent-by, or without `via` to the source); stateful ones go through `_respond`."""
        self.counters.reply_out(status)
        sent = Send(data, self._reply_destination(source, via))
        out.append(sent)
        return sent

    def _answer_again(self, key: ServerKey, method: str, now: float,
                      out: list[Output]) -> bool:
        """A retransmission (or the ACK) of a request answered statelessly less than T2 ago
        gets the same bytes (the ACK nothing): `stateless.RecentAnswers`."""
        sent = self._answered.again(key, now)
        if sent is None:
            return False
        self.layer.absorbed += 1
        if method != "ACK":
            out.append(sent)
        return True

    @staticmethod
    def _tag(request: Request) -> str | None:
        return local_to_tag(request)

    # -- addresses --------------------------------------------------------------------------------
    def _is_myself(self, uri: Uri) -> bool:
        if not uri.host:
            return False
        port = (5061 if uri.scheme == "sips" else 5060) if uri.port is None else uri.port
        return (uri.host.strip("[]").lower(), port) in self._ours

    def _stamp_received(self, request: Request, source: Source) -> None:
        """§18.2.1 `received`, RFC 3581 `rport`: note where the request really came from."""
        via = request.top_via
        want_rport = via.has_rport
        if via.host.strip("[]") == source.host and not want_rport:
            return
        via.params["received"] = source.host
        if want_rport:
            via.params["rport"] = str(source.port)
        request.pop_first_value("Via")
        request.add_header("Via", str(via))

    def _reply_destination(self, source: Source, via: Any) -> Destination:
        """§18.2.2 (and RFC 3581 §4): where responses to a request from `source` go."""
        itf = source.interface
        if source.reliable:
            # The connection the request came on; should it be gone, §18.2.2 says to open
            # one to the source address and the sent-by port.
            port = sent_by(via)[1] if via is not None else source.port
            return Destination(itf.transport, source.host, port or source.port, itf,
                               source.conn)
        if via is None or via.has_rport:
            return Destination("udp", source.host, source.port, itf)
        _host, port = sent_by(via)
        # A sent-by port of 0 can receive nothing: answer where the request came from.
        return Destination("udp", source.host, port or source.port, itf)

    def _via_destination(self, response: Response) -> Destination | None:
        via = response.top_via
        host = via.received or via.host
        if is_broadcast(host) or is_broadcast(via.host) or (via.maddr and is_broadcast(via.maddr)):
            return None
        port = via.rport or sent_by(via)[1]
        transport = via.transport.lower()
        host = host.strip("[]")
        itf = self._interface_for(transport, self.interfaces[0], host)
        if itf is None or not sendable(host, port, itf):
            return None
        return Destination(transport, host, port, itf)

    # -- §16.4 route preprocessing ---------------------------------------------------------------
    def _preprocess_routes(
            self, request: Request) -> tuple[bool, Callable[[], bool] | None]:
        """§16.4: (loose-routed by our Route, the check that the request is in a dialog
        this mesh record-routed, or None when it carries no signature of ours to check).

        Only a Request-URI carrying our Record-Route signature came from a strict router
        (a phone whose outbound proxy is this edge sends `INVITE sip:bob@<edge>` with our
        address in a Route, and must keep its user part); its real Request-URI is the last
        Route.  Our own values on top of the Route set are removed in one edit, however
        many there are (a route bomb costs linear work, and `validate` bounds the count).
        The signatures seen decide whether an in-dialog request belongs to a dialog this
        mesh record-routed (rr_signing.py).  The check runs when the routing first asks
        (`RouteContext.record_routed`): the default script does not ask for a trusted
        source's requests, which then cost no MAC.  Its inputs are taken now, so a script
        that rewrites the request first does not change the answer.
        """
        signatures: list[str] = []
        uri = request.parsed_uri
        routes = request.get_all("Route")
        changed = False
        if routes and rr_signing.PARAM in uri.params and self._is_myself(uri):
            signatures.append(uri.params[rr_signing.PARAM] or "")
            request.set_uri(str(parse_name_addr(routes[-1], "Route").uri))
            routes = routes[:-1]
            changed = True
        ours = 0
        for value in routes:
            signature = self._own_route_signature(value)
            if signature is None:
                top = parse_name_addr(value, "Route").uri
                if not self._is_myself(top):
                    break
                signature = top.params.get(rr_signing.PARAM)
            if signature:
                signatures.append(signature)
            ours += 1  # double Record-Route leaves two of ours on top
        if ours or changed:
            rest = routes[ours:]
            request.remove_header("Route")
            if rest:
                request.add_header("Route", ", ".join(rest))
        check: Callable[[], bool] | None = None
        if signatures and request.to_tag is not None:
            uri = request.parsed_uri
            target = rr_signing.target_of(uri.host, uri.port, uri.scheme)
            tags = (request.from_tag, request.to_tag)
            signer = self.rr_signer
            call_id = request.call_id

            def verify() -> bool:
                for sig in signatures:  # a loop, not any(generator): no generator object
                    if signer.verify(sig, call_id, tags, target):
                        return True
                return False
            check = verify
        return ours > 0 or changed, check

    def _expect_route(self, value: str) -> None:
        """Our Record-Route `value` is a dialog's whole route set: its in-dialog requests
        will carry `Route: <value>` (RFC 3261 §12.1.1, §12.1.2; UAs copy it unchanged), a
        line `validate` would parse in the first of them.  Remembered as valid beforehand
        (`ValidatedLines`, bounded): a value `_own_route_signature` recognises parses, by
        the check its prefixes passed.  Another spelling is parsed when it comes."""
        if self._own_route_signature(value) is not None:
            self._known.remember(_raw("Route: " + value), 1)

    def _own_route_signature(self, value: str) -> str | None:
        """The `sg` of a Route value that is one of our Record-Route values as this edge
        wrote it (`Interface.record_route`: `<sip:HOST:PORT...;lr;sg=SIG>`, SIG letters
        and digits), which UAs copy unchanged into their route set (RFC 3261 §12.1): what
        parsing the value would find, without the parse.  None for any other value (and
        for another spelling of ours), which is then parsed."""
        if not value.endswith(">"):
            return None
        for prefix in self._own_route_prefixes:
            if value.startswith(prefix):
                signature = value[len(prefix):-1]
                if signature and signature.isascii() and signature.isalnum():
                    return signature
                return None
        return None


def _raw(text: str) -> bytes:
    """Header text back to the bytes received (values are decoded with surrogateescape):
    what a digest or a hash covers, and never an error on bytes that are not UTF-8."""
    return text.encode("utf-8", "surrogateescape")
