"""The default routing module: never an open relay.

- In-dialog requests that carried our Route (loose routing, §16.4) follow their route set.
- Requests for a configured local domain, or for the proxy's own address, go to their
  static route (`user@domain`, `user` or `domain` key in [edge].static_routes); no route:
  404.  (The registrar lookup replaces the
  static table once the registrar service exists.)
- Requests for any other domain are forwarded to their Request-URI only when the source is
  trusted ([edge].trusted, loopback by default) or authenticated with proxy digest
  credentials of a configured user ([edge].users, 407 challenge, RFC 3261 §22.3);
  otherwise 403.
- Dialog-creating INVITE/SUBSCRIBE/REFER are record-routed so the dialog stays on the edge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.edge.routing import RouteContext
    from shared.sip import Request

_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


def request_route(request: Request, ctx: RouteContext) -> None:
    if ctx.loose_routed:
        ctx.forward()
        return
    if request.method in _DIALOG_CREATING and request.to_tag is None:
        ctx.record_route()
    uri = request.parsed_uri
    if ctx.is_local(uri) or ctx.is_myself(uri):
        # The proxy's own addresses count as a local domain: forwarding a request for
        # sip:bob@<edge> to its Request-URI would only loop back (482).
        user = (uri.user or "").lower()
        host = uri.host.lower()
        routes = ctx.static_routes
        target = routes.get(f"{user}@{host}") or routes.get(user) or routes.get(host)
        if target is None:
            ctx.reply(404)
        else:
            ctx.forward(target)
        return
    if ctx.trusted or ctx.authenticate() is not None:
        ctx.forward()
        return
    if ctx.can_authenticate and request.method not in ("ACK", "CANCEL"):
        ctx.challenge()  # 407: relaying is for trusted or authenticated sources only
        return
    ctx.reply(403, "Relaying Denied")
