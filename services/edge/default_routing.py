"""The default routing module: a registrar-backed proxy that is never an open relay.

- In-dialog requests that came back on a Record-Route this mesh signed for their dialog
  and target (`ctx.record_routed`, services/edge/rr_signing.py) follow their route set, as
  does anything from a trusted source; an initial request whose only Route was ours (a
  phone's outbound proxy setting) is routed by its Request-URI like any other.  An
  untrusted request with further hops preloaded in its Route set, or with a To tag but no
  valid signature, is a relay: a digest answer (407) or 403, whatever its Route says.
- No registrar reachable while one belongs to the mesh (discovery, or `[edge] registrar`):
  REGISTER and requests for local users get 503 with Retry-After, not 404.
- REGISTER for a local domain (or the proxy's own address), when a registrar is known
  (`ctx.services["registrar"]`, found in discovery or `[edge].registrar`): the edge
  challenges it statelessly (401, `WWW-Authenticate`, realm = the To domain, RFC 3261
  §22.2 and §8.2.7) unless
  `[edge].register_auth` is off; the credentials' nonce and nonce-count are checked here
  and the registrar verifies the response against the subscriber's HA1 while it saves
  (SaveWithDigest, one round trip; the user must be the To user, else 403; an older
  registrar: the HA1 fetched with GetCredentials and checked here, then Save), and the
  edge answers with the registrar's status and headers (200 listing the bindings).
- Other requests for a local domain: a static route (`user@domain`, `user` or `domain`
  key in `[edge].static_routes`) wins; else the registrar's Lookup: one parallel branch per
  binding, highest q first, sent to the binding's `received` (NAT) when it has one; a
  binding with a Path (RFC 3327 §5.3) gets every Path value, in order, as a Route header
  field and goes to the first Path hop (which wins over `received`); 404 no such user,
  480 no binding (allowing the method).  Without a registrar, no static route means 404.
  A caller outside the trusted networks whose From is a local domain must authenticate
  (407, realm = the From domain): local users cannot be spoofed.
- Requests for any other domain are relayed only from a trusted source ([edge].trusted,
  loopback by default) or for an authenticated user: static `[edge].users` (realm
  `[edge].realm`) or a subscriber (realm = From domain) after a 407 challenge
  (RFC 3261 §22.3); otherwise 403.
- Federation (registrar cluster_mode federation-cachedb): the Lookup asks for branches to
  the other points of presence holding the AOR (OpenSIPS lookup flag g); the request
  then goes to that PoP's SIP address (and to the local bindings) with
  `X-SipMesh-Federated: 1`; one arriving with it from a trusted source gets only local
  branches there (no ping-pong between PoPs).
- NAT keep-alive for a TCP binding: the registrar's pinger sends its OPTIONS with
  `X-SipMesh-Keepalive: HOST:PORT` (a trusted source only); instead of forwarding it, the
  edge sends a double-CRLF ping on its open connection to HOST:PORT and answers 200 when
  the single-CRLF pong comes back within 2 s, else 408 (RFC 5626 §3.5.1); the phone never
  sees an OPTIONS.
- Dialog-creating INVITE/SUBSCRIBE/REFER are record-routed so the dialog stays on the edge.
- Presence (services/presence), when a presence service belongs to the mesh: PUBLISH and
  SUBSCRIBE whose Request-URI is a local domain or the edge itself (an in-dialog SUBSCRIBE
  targets the Contact the presence answer gave: this edge) are handed to it over gRPC and
  answered with its status and headers; from an untrusted source with a local From they
  must authenticate first (407, realm = the From domain; a refresh inside a subscription
  is not challenged). Its NOTIFYs leave through the edges' Uac API. 503 while no
  presence node answers.
- `[edge] media_anchor = true`: every call's media goes through rtpengine (offer, answer,
  delete with `[edge] media_flags`; services/edge/media_anchor.py).
- SIPREC (services/edge/recording.py): `[edge] siprec_srs` records every call routed
  here (started at its 2xx), and a BYE ends the recording of its call (without it the
  default routing records nothing and asks the recorder nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.edge import media_anchor, recording

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from services.edge.routing import RouteContext
    from shared.sip import Request, Response

_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
_UNCHALLENGED = frozenset({"ACK", "CANCEL"})
_PRESENCE_METHODS = frozenset({"PUBLISH", "SUBSCRIBE"})
_MEDIA_METHODS = frozenset({"INVITE", "ACK", "BYE", "UPDATE"})
FEDERATED = "X-SipMesh-Federated"
KEEPALIVE = "X-SipMesh-Keepalive"
KEEPALIVE_TIMEOUT = 2.0
RETRY_AFTER = "5"  # s, in every 503 that says the registrar is away (RFC 3261 §20.33)


def _keepalive(request: Request, ctx: RouteContext) -> Awaitable[None] | None:
    tcp = ctx.services.get("tcp")
    host, _, port = (request.get(KEEPALIVE) or "").strip().rpartition(":")
    if tcp is None or not host or not port.isdigit():
        ctx.reply(400, "Bad Keepalive Target")
        return None

    async def ping() -> None:
        alive = await tcp.crlf_ping(host.strip("[]"), int(port), KEEPALIVE_TIMEOUT)
        ctx.reply(200 if alive else 408, None if alive else "Keepalive Timeout")

    return ping()


def request_route(request: Request, ctx: RouteContext) -> Awaitable[None] | None:
    if request.method == "OPTIONS" and ctx.trusted and request.has(KEEPALIVE):
        return _keepalive(request, ctx)
    if request.method in _PRESENCE_METHODS and not request.has("Route"):
        presence = ctx.services.get("presence")
        uri = request.parsed_uri
        if presence is not None and presence.present and (
                ctx.is_local(uri) or ctx.is_myself(uri)):
            return _presence(request, ctx, presence)
    if request.method == "BYE" and recording.is_srs_bye(request, ctx):
        return recording.srs_bye(ctx)  # the SRS ends a recording session of ours
    media = media_anchor.policy(ctx) if request.method in _MEDIA_METHODS else None
    registrar = ctx.services.get("registrar")
    registrar_down = False
    if registrar is not None and not registrar.available:
        # A registrar is part of this mesh but none is reachable right now: its users are
        # not unknown (404), the service is unavailable (503 with Retry-After).
        registrar_down = bool(getattr(registrar, "expected", False))
        registrar = None
    # Asked only where it decides (an untrusted source): `record_routed` checks the Route
    # signatures (a MAC each) on first read, which a trusted source's requests skip.
    in_our_dialog = (request.to_tag is not None and not ctx.trusted
                     and ctx.record_routed)
    if request.method in ("BYE", "INVITE") and _records(ctx):
        if request.method == "BYE" and request.to_tag is not None:
            ctx.stop_recording()  # in the background; nothing if it was not recorded
        elif request.method == "INVITE" and request.to_tag is None:
            ctx.record()  # [edge] siprec_srs; starts only if the call is answered
        elif request.method == "INVITE":
            ctx.update_recording()  # hold / resume: the SRS gets new metadata
    if request.has("Route") and not (ctx.trusted or in_our_dialog):
        # An untrusted request with hops preloaded after ours (or instead of ours): it
        # would go wherever its Route says, whatever its Request-URI or To tag claim, so
        # it is a relay, authorised as any relay is (never an open relay through a Route).
        decided = _relay(request, ctx, registrar, registrar_down)
    elif ctx.loose_routed and (request.to_tag is not None or request.has("Route")) and (
            ctx.trusted or in_our_dialog):
        # In a dialog this mesh record-routed, or a trusted route set. (In dialog by its
        # To tag only, without a signature of ours, a request is routed by its
        # Request-URI below, as any request: a local user, or a relay needing
        # authorisation.)
        if media is not None and request.to_tag is not None:
            anchored = media_anchor.in_dialog(request, ctx, media)
            if anchored is not None:
                return anchored
        ctx.forward()
        return None
    else:
        decided = _route_initial(request, ctx, registrar, registrar_down)
    if media is not None:
        return media_anchor.initial(request, ctx, media, decided)
    return decided


def _records(ctx: RouteContext) -> bool:
    client = ctx.services.get("siprec")
    return client is not None and bool(getattr(client, "default_srs", ""))


def reply_route(response: Response, ctx: RouteContext) -> Awaitable[Any] | None:
    """Only media anchoring looks at responses (an 18x/2xx's SDP goes through rtpengine)."""
    return media_anchor.reply(response, ctx) if ctx.services.get("media") is not None else None


def _route_initial(request: Request, ctx: RouteContext, registrar: Any,
                   registrar_down: bool) -> Awaitable[None] | None:
    if request.method in _DIALOG_CREATING and request.to_tag is None:
        ctx.record_route()
    uri = request.parsed_uri
    if ctx.is_local(uri) or ctx.is_myself(uri):
        # The proxy's own addresses count as a local domain: forwarding a request for
        # sip:bob@<edge> to its Request-URI would only loop back (482).
        if request.method == "REGISTER" and registrar is not None:
            return _register(request, ctx, registrar)
        if request.method == "REGISTER" and registrar_down:
            ctx.reply(503, "Registrar Unavailable", [("Retry-After", RETRY_AFTER)])
            return None
        user = (uri.user or "").lower()
        host = uri.host.lower()
        routes = ctx.static_routes
        target = routes.get(f"{user}@{host}") or routes.get(user) or routes.get(host)
        if target is not None:
            ctx.forward(target)
        elif registrar is not None:
            return _to_local_user(request, ctx, registrar)
        elif registrar_down and request.method not in _UNCHALLENGED:
            ctx.reply(503, "Registrar Unavailable", [("Retry-After", RETRY_AFTER)])
        else:
            ctx.reply(404)
        return None
    if ctx.trusted:
        ctx.forward()
        return None
    return _relay(request, ctx, registrar, registrar_down)


def _relay(request: Request, ctx: RouteContext, registrar: Any,
           registrar_down: bool) -> Awaitable[None] | None:
    """A request from an untrusted source to somewhere else: only for a user who answers
    a digest challenge (static `[edge] users` or a subscriber, RFC 3261 §22.3)."""
    if ctx.authenticate() is not None:
        ctx.forward()
        return None
    if request.method in _UNCHALLENGED:
        ctx.reply(403, "Relaying Denied")  # an ACK is then dropped, a CANCEL gets 481
        return None
    if registrar is not None:
        return _relay_authenticated(request, ctx, registrar)
    if ctx.can_authenticate:
        ctx.challenge()  # 407: relaying is for trusted or authenticated sources only
        return None
    if registrar_down:
        ctx.reply(503, "Registrar Unavailable", [("Retry-After", RETRY_AFTER)])
        return None
    ctx.reply(403, "Relaying Denied")
    return None


def _ha1_source(registrar: Any, domain: str) -> Any:
    async def ha1_of(username: str, algorithm: str, fresh: bool) -> str | None:
        creds = await registrar.credentials(username, domain, fresh=fresh)
        return None if creds is None else creds.for_algorithm(algorithm)

    return ha1_of


async def _digest(request: Request, ctx: RouteContext, registrar: Any, domain: str,
                  *, www: bool) -> str | None:
    """The authenticated subscriber, or None after answering 401/407 (or 503)."""
    from services.edge.registrar_client import RegistrarUnavailable

    auth = ctx.services["auth"]
    header = "Authorization" if www else "Proxy-Authorization"
    try:
        user, stale = await auth.verify(request, header, domain, _ha1_source(registrar, domain))
    except RegistrarUnavailable:
        ctx.reply(503, "Registrar Unavailable", [("Retry-After", RETRY_AFTER)])
        return None
    if user is None:
        name = "WWW-Authenticate" if www else "Proxy-Authenticate"
        ctx.reply(401 if www else 407, headers=[
            (name, c) for c in auth.challenges(domain, stale, registrar.algorithms)])
        return None
    return str(user)


def _register(request: Request, ctx: RouteContext, registrar: Any) -> Awaitable[None] | None:
    if registrar.register_auth and not request.has("Authorization"):
        # The first REGISTER of every refresh carries no credentials: challenge it
        # statelessly (§8.2.7, as OpenSIPS's www_challenge does), keeping nothing.
        domain = request.to_addr.uri.host.lower()
        ctx.reply(401, headers=[("WWW-Authenticate", c) for c in ctx.services["auth"].challenges(
            domain, False, registrar.algorithms)], stateless=True)
        return None
    return _register_with_credentials(request, ctx, registrar)


async def _register_with_credentials(request: Request, ctx: RouteContext,
                                     registrar: Any) -> None:
    from services.edge.registrar_client import DigestOnSaveUnsupported, RegistrarUnavailable

    to = request.to_addr.uri
    itf = ctx.source.interface
    socket = f"{itf.transport}:{itf.host_in_uri}:{itf.port}"
    if registrar.register_auth:
        domain = to.host.lower()
        if getattr(registrar, "digest_on_save", False):
            # The registrar checks the response against the HA1 it holds while it saves
            # (one round trip); the nonce and its count are checked here (auth.claim).
            auth = ctx.services["auth"]
            claim = auth.claim(request, "Authorization", domain)
            # A nonce displaced from its slot ("stale") goes the old way below: stale=true
            # is said only for a response found right (RFC 7616 §3.3).
            if claim is not None and claim.verdict != "stale":
                if claim.verdict != "ok":  # a replayed or unusable nonce-count
                    _www_challenge(ctx, auth, domain, registrar, False)
                    return
                try:
                    status, reason, headers, rejected = await registrar.save_with_digest(
                        request.serialize(), ctx.source.host, ctx.source.port,
                        itf.transport, socket, claim.creds)
                except DigestOnSaveUnsupported:
                    auth.release(claim)  # nothing was done: checked below, the old way
                except RegistrarUnavailable:
                    ctx.reply(503, "Registrar Unavailable", [("Retry-After", RETRY_AFTER)])
                    return
                else:
                    if rejected:  # wrong password or no such subscriber
                        auth.release(claim)
                        _www_challenge(ctx, auth, domain, registrar, False)
                    else:
                        ctx.reply(status, reason or None, headers)
                    return
        user = await _digest(request, ctx, registrar, domain, www=True)
        if user is None:
            return
        if user != to.user:
            ctx.reply(403, "Forbidden: credentials are not for the To user")
            return
    try:
        status, reason, headers = await registrar.save(
            request.serialize(), ctx.source.host, ctx.source.port, itf.transport, socket)
    except RegistrarUnavailable:
        ctx.reply(503, "Registrar Unavailable", [("Retry-After", RETRY_AFTER)])
        return
    ctx.reply(status, reason or None, headers)


def _www_challenge(ctx: RouteContext, auth: Any, domain: str, registrar: Any,
                   stale: bool) -> None:
    ctx.reply(401, headers=[("WWW-Authenticate", c)
                            for c in auth.challenges(domain, stale, registrar.algorithms)])


async def _to_local_user(request: Request, ctx: RouteContext, registrar: Any) -> None:
    from services.edge.registrar_client import RegistrarUnavailable

    method = request.method
    if not ctx.trusted and method not in _UNCHALLENGED and request.to_tag is None:
        caller = request.from_addr.uri
        if ctx.is_local(caller) or ctx.is_myself(caller):
            user = await _digest(request, ctx, registrar, caller.host.lower(), www=False)
            if user is None:
                return
            if user != caller.user:
                ctx.reply(403, "Forbidden: credentials are not for the From user")
                return
            ctx.services["auth"].consume(request, caller.host.lower())
    uri = request.parsed_uri
    if not uri.user:
        ctx.reply(404)
        return
    from_pop = ctx.trusted and request.has(FEDERATED)  # forwarded by another PoP already
    try:
        status, branches = await registrar.lookup(f"{uri.user}@{uri.host.lower()}", method,
                                                  federated=not from_pop)
    except RegistrarUnavailable:
        ctx.reply(503, "Registrar Unavailable", [("Retry-After", RETRY_AFTER)])
        return
    if status != 200 or not branches:
        ctx.reply(status if status in (404, 480) else 480)
        return
    if from_pop:
        ctx.remove_header(FEDERATED)  # not for the phones
    elif any(b.federated for b in branches):
        ctx.add_header(FEDERATED, "1")
    for branch in branches:
        # RFC 3327 §5.3: the Request-URI is the contact and the Path values, in order, are
        # the Route set; the branch goes to the first Path hop (which also wins over the
        # NAT `received` address: that is the outbound proxy's).
        ctx.forward(branch.uri, next_hop=branch.next_hop or None, route=branch.path)


async def _relay_authenticated(request: Request, ctx: RouteContext, registrar: Any) -> None:
    caller = request.from_addr.uri
    domain = caller.host.lower()
    user = await _digest(request, ctx, registrar, domain, www=False)
    if user is None:
        return
    if user != caller.user:
        ctx.reply(403, "Forbidden: credentials are not for the From user")
        return
    ctx.services["auth"].consume(request, domain)
    ctx.forward()


async def _presence(request: Request, ctx: RouteContext, presence: Any) -> None:
    """PUBLISH/SUBSCRIBE to the presence service (OpenSIPS handle_publish/handle_subscribe)."""
    from services.edge.core import local_to_tag
    from services.edge.presence_client import PresenceUnavailable

    registrar = ctx.services.get("registrar")
    caller = request.from_addr.uri
    if not ctx.trusted and request.to_tag is None and (
            ctx.is_local(caller) or ctx.is_myself(caller)):
        if registrar is None or not registrar.available:
            ctx.reply(503, "Registrar Unavailable", [("Retry-After", RETRY_AFTER)])
            return
        user = await _digest(request, ctx, registrar, caller.host.lower(), www=False)
        if user is None:
            return
        if user != caller.user:
            ctx.reply(403, "Forbidden: credentials are not for the From user")
            return
        ctx.services["auth"].consume(request, caller.host.lower())
    itf = ctx.source.interface
    host = f"[{ctx.source.host}]" if ":" in ctx.source.host else ctx.source.host
    try:
        status, reason, headers = await presence.handle(
            request.serialize(), source=f"sip:{host}:{ctx.source.port};transport={itf.transport}",
            local_contact=f"sip:{itf.host_in_uri}:{itf.port};transport={itf.transport}",
            to_tag=local_to_tag(request) or "")
    except PresenceUnavailable:
        ctx.reply(503, "Presence Unavailable", [("Retry-After", RETRY_AFTER)])
        return
    ctx.reply(status, reason or None, headers)
