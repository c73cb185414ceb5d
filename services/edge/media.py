"""`ctx.media`: rtpengine from the routing script, as OpenSIPS's rtpengine functions.

    async def request_route(request, ctx):
        if request.method == "INVITE" and not ctx.loose_routed:
            ctx.media.use_set(1)                          # rtpengine_use_set(1)
            result = await ctx.media.offer("replace-origin replace-session-connection "
                                           "ICE=remove RTP/AVP")
            if not result.ok: ...                         # the SDP is left as it was
        elif request.method == "BYE":
            stats = await ctx.media.delete()              # MOS, loss: see CallStats
        ctx.forward()

    def reply_route(response, ctx):                       # may return an awaitable
        if ctx.media.engaged and response.body:
            return ctx.media.answer(message=response)     # rewrites the 183/200's SDP

`offer`, `answer` and `delete` act on `message` (default: the request being routed):
the SDP in its body is replaced by rtpengine's (Content-Length follows).  The broker
(services/media) picks the rtpengine instance of the call and keeps it for the answer and
the delete; the instance that took the offer is remembered here and passed with the answer
of the same transaction.  Failures never raise: the result says `ok` False and why, and
the message keeps its SDP (OpenSIPS's functions return -1 the same way).

Once an offer succeeded for a dialog-creating INVITE, a final response >= 300 for it (a
failure, a CANCEL's 487, Timer C's 408) deletes the session by itself (OpenSIPS scripts
call `rtpengine_delete()` in their failure route for that); the delete of a BYE is the
script's.  `delete()` returns the call's statistics (`stats.mos_average`, `mos_min`,
`mos_max` and their `_at`, `packets_lost`, RTP/RTCP counters: OpenSIPS 2.4's `$rtpstat`),
also kept as `ctx.media.stats`; `ctx.media.acc_extra` is the same as the flat map a CDR's
extra fields take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from services.edge.media_client import MediaClient, MediaUnavailable

if TYPE_CHECKING:
    from services.edge.routing import RouteContext
    from shared.sip import Message

_log = structlog.get_logger("edge.media")
_tasks: set[asyncio.Task[Any]] = set()  # deletes in flight after a failure (not awaited)


@dataclass(frozen=True)
class MediaResult:
    ok: bool
    instance: str = ""
    error: str = ""
    warning: str = ""


@dataclass(frozen=True)
class CallStats:
    """OpenSIPS's `$rtpstat` values of a deleted call (None: not reported; MOS x10)."""

    mos_average: int | None = None
    mos_min: int | None = None
    mos_min_at: int | None = None
    mos_max: int | None = None
    mos_max_at: int | None = None
    jitter_average: int | None = None
    roundtrip_average: int | None = None
    packetloss_average: int | None = None
    packets_lost: int | None = None
    rtp_packets: int = 0
    rtp_bytes: int = 0
    rtp_errors: int = 0
    rtcp_packets: int = 0
    rtcp_bytes: int = 0
    rtcp_errors: int = 0
    by_tag: dict[str, dict[str, int | None]] = field(default_factory=dict)
    instance: str = ""
    json: str = ""  # rtpengine's whole reply ($rtpquery)

    def acc_extra(self, prefix: str = "") -> dict[str, int]:
        """Flat name -> value for a CDR's extra fields (values not reported left out)."""
        out: dict[str, int] = {}
        for name in ("mos_average", "mos_min", "mos_min_at", "mos_max", "mos_max_at",
                     "jitter_average", "roundtrip_average", "packetloss_average",
                     "packets_lost", "rtp_packets", "rtp_bytes", "rtp_errors",
                     "rtcp_packets", "rtcp_bytes", "rtcp_errors"):
            value = getattr(self, name)
            if value is not None:
                out[prefix + name] = value
        return out


_MOS = ("mos_average", "mos_min", "mos_min_at", "mos_max", "mos_max_at")


def _mos(msg: Any) -> dict[str, int | None]:
    return {name: getattr(msg, name) if msg.HasField(name) else None for name in _MOS}


def stats_from_reply(reply: Any) -> CallStats:
    s = reply.stats
    opt = {name: getattr(s, name) if s.HasField(name) else None
           for name in ("jitter_average", "roundtrip_average", "packetloss_average",
                        "packets_lost")}
    return CallStats(**_mos(s.mos), **opt, rtp_packets=s.rtp_packets, rtp_bytes=s.rtp_bytes,
                     rtp_errors=s.rtp_errors, rtcp_packets=s.rtcp_packets,
                     rtcp_bytes=s.rtcp_bytes, rtcp_errors=s.rtcp_errors,
                     by_tag={tag: _mos(v) for tag, v in s.by_tag.items()},
                     instance=reply.instance, json=reply.json)


def _flags(flags: str | Sequence[str]) -> str:
    return flags if isinstance(flags, str) else " ".join(flags)


class MediaSession:
    """The rtpengine side of one transaction's routing (see the module docstring)."""

    def __init__(self, ctx: RouteContext, client: MediaClient | None) -> None:
        self.ctx = ctx
        self.client = client
        self.set_id = 0
        self.instance = ""  # the rtpengine instance that took this call's offer
        self.engaged = False  # an offer succeeded in this transaction
        self.stats: CallStats | None = None
        self.last_error = ""
        self._final_hooked = False

    @property
    def acc_extra(self) -> dict[str, int]:
        return self.stats.acc_extra() if self.stats is not None else {}

    def use_set(self, set_id: int) -> None:
        """OpenSIPS `rtpengine_use_set(id)`: the set of the following commands."""
        self.set_id = int(set_id)

    def _request(self, message: Message, flags: str | Sequence[str], *,
                 sdp: bool) -> Any:
        from shared.sip import Request

        reply = not isinstance(message, Request)
        vias = []
        try:
            vias = [v.branch or "" for v in message.vias]
        except Exception:  # a malformed Via: the via-branch flag then fails in the broker
            vias = []
        return MediaClient.request(
            call_id=message.call_id, from_tag=message.from_tag or "",
            to_tag=message.to_tag or "", reply=reply, sdp=message.body if sdp else b"",
            flags=_flags(flags), set_id=self.set_id, instance=self.instance,
            received_from=self.ctx.source.host if not reply else "", via_branches=vias)

    async def _sdp_call(self, name: str, flags: str | Sequence[str],
                        message: Message | None) -> MediaResult:
        msg = message if message is not None else self.ctx.request
        if self.client is None:
            return self._fail("no media broker configured")
        if not msg.body or "sdp" not in (msg.content_type or "application/sdp").lower():
            return self._fail("no SDP body")
        try:
            reply = await self.client.call(name, self._request(msg, flags, sdp=True))
        except MediaUnavailable as exc:
            return self._fail(f"media broker unavailable: {exc}")
        if not reply.ok:
            return self._fail(reply.error, reply.instance, reply.warning)
        msg.body = reply.sdp
        self.instance = reply.instance or self.instance
        return MediaResult(True, reply.instance, "", reply.warning)

    def _fail(self, error: str, instance: str = "", warning: str = "") -> MediaResult:
        self.last_error = error
        _log.warning("media_failed", error=error, call_id=self.ctx.request.call_id)
        return MediaResult(False, instance, error, warning)

    async def offer(self, flags: str | Sequence[str] = "", *, message: Message | None = None
                    ) -> MediaResult:
        """`rtpengine_offer(flags)`: the SDP offer of `message` (default: the request)."""
        result = await self._sdp_call("Offer", flags, message)
        request = self.ctx.request
        if result.ok and (message is None or message is request):
            self.engaged = True
            if request.method == "INVITE" and request.to_tag is None:
                if not self._final_hooked:  # a failed call deletes its session
                    self._final_hooked = True
                    self.ctx.add_on_final(self._on_final)
        return result

    async def answer(self, flags: str | Sequence[str] = "", *, message: Message | None = None
                     ) -> MediaResult:
        """`rtpengine_answer(flags)`: the SDP answer in `message` (a 18x/2xx in the reply
        route, or the ACK answering an offer made in a 2xx)."""
        return await self._sdp_call("Answer", flags, message)

    async def delete(self, flags: str | Sequence[str] = "", *, message: Message | None = None
                     ) -> CallStats | None:
        """`rtpengine_delete(flags)`: ends the call's media session; its statistics, or
        None when rtpengine could not be asked (see `last_error`)."""
        msg = message if message is not None else self.ctx.request
        if self.client is None:
            self._fail("no media broker configured")
            return None
        try:
            reply = await self.client.call("Delete", self._request(msg, flags, sdp=False))
        except MediaUnavailable as exc:
            self._fail(f"media broker unavailable: {exc}")
            return None
        if not reply.ok:
            self._fail(reply.error, reply.instance, reply.warning)
            return None
        self.stats = stats_from_reply(reply)
        return self.stats

    async def query(self, flags: str | Sequence[str] = "", *,
                    message: Message | None = None) -> CallStats | None:
        """The statistics of the call so far (OpenSIPS `$rtpquery`/`$rtpstat` outside a
        delete); None when not available."""
        msg = message if message is not None else self.ctx.request
        if self.client is None:
            return None
        try:
            reply = await self.client.call("Query", self._request(msg, flags, sdp=False))
        except MediaUnavailable:
            return None
        return stats_from_reply(reply) if reply.ok else None

    def _on_final(self, status: int) -> None:
        """The INVITE got its final response: a failure leaves no session behind."""
        if status < 300:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.delete())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
