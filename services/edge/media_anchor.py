"""Media anchoring for the default routing (`[edge] media_anchor = true`).

What OpenSIPS scripts do with `rtpengine_manage()` around the usual routing, with
`[edge] media_flags` (default `replace-origin replace-session-connection ICE=remove`) in
set `[edge] media_set`:

* an initial INVITE with SDP that the routing forwards: `offer` before the branches go out
  (a request answered by the routing itself, 401/404/..., is not anchored);
* its 18x/2xx with SDP: `answer` (reply route); a failure, a CANCEL, Timer C: the
  session is deleted when the final response goes upstream (services/edge/media.py);
* an INVITE without SDP (late offer): the 2xx's SDP is the offer, the ACK's the answer;
* in dialog: a re-INVITE/UPDATE with SDP is a new offer (answered in its 2xx), an ACK with
  SDP an answer, a BYE deletes the session first and keeps its statistics on
  `ctx.media.stats` / `ctx.media.acc_extra` (for the call's record) before it is
  forwarded.

When the broker fails, the call goes on with its SDP untouched (a warning is logged), as
an OpenSIPS script that ignores rtpengine's return code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from services.edge.routing import RouteContext
    from shared.sip import Message, Request, Response

_OFFER_METHODS = frozenset({"INVITE", "UPDATE"})


class HasServices(Protocol):
    """What `policy` reads of a request's context: any object with `services` will do
    (compiled, a parameter typed `RouteContext` would refuse anything else)."""

    @property
    def services(self) -> Mapping[str, Any]: ...


def policy(ctx: HasServices) -> Any:
    """The media client when the default routing anchors media, else None."""
    client = ctx.services.get("media")
    if client is None or not getattr(client, "anchor", False):
        return None
    # A broker known before and none right now (one restarting): anchor anyway, the
    # client waits for the next broker within its deadline (services/edge/media_client).
    if not client.available and not getattr(client, "expected", False):
        return None
    return client


def has_sdp(message: Message) -> bool:
    if not message.body:
        return False
    content_type = message.content_type
    return content_type is None or "application/sdp" in content_type.lower()


def in_dialog(request: Request, ctx: RouteContext, client: Any) -> Awaitable[None] | None:
    """In-dialog requests: offer, answer or delete, then forward along the route set."""
    method = request.method
    ctx.media.use_set(client.set_id)
    if method == "BYE":
        return _bye(ctx)
    if not has_sdp(request):
        return None
    if method in _OFFER_METHODS:
        return _then_forward(ctx, ctx.media.offer(client.flags))
    if method == "ACK":
        return _then_forward(ctx, ctx.media.answer(client.flags))
    return None


async def _bye(ctx: RouteContext) -> None:
    """Delete, then put the call's MOS/loss into its CDR (the dialog service's SetExtra,
    OpenSIPS 2.4's `$rtpstat` into `acc` extras) before the BYE ends the dialog."""
    stats = await ctx.media.delete()
    dialogs = ctx.services.get("dialog")
    if stats is not None and dialogs is not None and getattr(dialogs, "available", False):
        extra = {name: str(value) for name, value in stats.acc_extra().items()}
        # "": the dialog of this Call-ID whoever hangs up (the BYE's From tag is the
        # callee's when the callee hangs up; the dialog is keyed by the caller's).
        await dialogs.set_extra(ctx.request.call_id, "", extra)
    ctx.forward()


async def _then_forward(ctx: RouteContext, call: Awaitable[Any]) -> None:
    await call
    ctx.forward()


def initial(request: Request, ctx: RouteContext, client: Any,
            decided: Awaitable[None] | None) -> Awaitable[None] | None:
    """An initial INVITE: the offer once the routing decided to forward it."""
    if request.method != "INVITE" or not has_sdp(request):
        return decided
    ctx.media.use_set(client.set_id)

    async def offer_after() -> None:
        if decided is not None:
            await decided
        if ctx.targets and ctx.reply_status is None:
            await ctx.media.offer(client.flags)

    if decided is None and not ctx.targets:
        return None  # answered by the routing (401, 404, ...): nothing to anchor
    return offer_after()


def reply(response: Response, ctx: RouteContext) -> Awaitable[Any] | None:
    """18x/2xx with SDP to an anchored INVITE/UPDATE: answer (or, after a late offer,
    the 2xx's offer)."""
    if not 180 <= response.status < 300 or not has_sdp(response):
        return None
    request = ctx.request
    if request.method not in _OFFER_METHODS:
        return None
    client = policy(ctx)
    if client is None:
        return None
    media = ctx.media
    if media.engaged:
        return media.answer(client.flags, message=response)
    if request.method == "INVITE" and not has_sdp(request) and 200 <= response.status:
        media.use_set(client.set_id)
        return media.offer(client.flags, message=response)
    return None
