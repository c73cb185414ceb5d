"""Dialog tracking at the edge: what the proxy core tells the dialog service, and the
routing API around it (`ctx.dialog`, `ctx.acc`).

`DialogTracker` is called by the proxy core at three points (services/edge/core.py):

* `forwarded(ctx, targets)` -- a request was routed and is being forwarded. A
  dialog-forming INVITE (no To tag) that is record-routed becomes a `Create` event with
  what routing set (timeout, profiles, sharing tag, CDR extras); record-routing is
  required, as in OpenSIPS (in-dialog requests must come back through the mesh), so
  setting any `ctx.dialog` option record-routes the INVITE. An in-dialog ACK, BYE,
  re-INVITE or other request becomes an `InDialog` event.
* `relayed(ctx, response, branch_dest)` -- a reply goes upstream for a tracked INVITE:
  a `Reply` event (status, To tag; for a 2xx the callee's Contact, the Record-Route values
  and where it came from).
* a reply the proxy made itself for an INVITE whose profile place routing reserved
  (`set_profile_limited`) and then answered without forwarding gives the place back.

Each event is built from fields the parser already has and queued on the dialog stream
(`DialogClient.emit`): nothing here waits.

Routing API (an async `request_route` may await the two queries):

    ctx.dialog.set_timeout(3600)              # lifetime from the answer, then BYE both ways
    ctx.dialog.set_profile("caller", "alice") # profile with a value; ("calls") without
    n = await ctx.dialog.profile_size("caller", "alice")
    ok = await ctx.dialog.set_profile_limited("caller", "alice", 2)  # atomic check + add
    ctx.dialog.set_sharing_tag("vip1")        # owner: where the tag is active
    ctx.dialog.disable()                      # do not track this INVITE
    ctx.acc.extra["account"] = "1001"         # extra CDR field
    ctx.acc.disable()                         # track, but no CDR
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from contracts.generated.sipmesh.dialog.v1 import dialog_pb2 as pb

if TYPE_CHECKING:
    from services.edge.addresses import Destination, Interface
    from services.edge.dialog_client import DialogClient
    from services.edge.routing import RouteContext, Target
    from shared.sip import Response

_IN_DIALOG = frozenset({"ACK", "BYE", "INVITE", "UPDATE", "PRACK", "INFO", "REFER",
                        "NOTIFY", "OPTIONS", "MESSAGE"})


class RouteDialog:
    """`ctx.dialog`: what routing decides about the dialog an INVITE creates."""

    __slots__ = ("_ctx", "disabled", "profiles", "reserved", "sharing_tag", "timeout",
                 "tracked")

    def __init__(self, ctx: RouteContext) -> None:
        self._ctx = ctx
        self.timeout: int | None = None
        self.profiles: list[tuple[str, str | None]] = []
        self.sharing_tag = ""
        self.disabled = False
        self.tracked = False  # the Create event went out
        self.reserved = False  # a profile place was taken (set_profile_limited)

    def _use(self) -> None:
        self.disabled = False
        self._ctx.record_route()  # tracked dialogs must stay on the edge

    def create(self) -> None:
        """Track this INVITE's dialog (the default for record-routed INVITEs)."""
        self._use()

    def disable(self) -> None:
        """Do not track this INVITE's dialog."""
        self.disabled = True

    def set_timeout(self, seconds: float) -> None:
        """Dialog lifetime from the answer (OpenSIPS $DLG_timeout); at the end the owning
        dialog node sends BYE both ways and writes the CDR. 0 = no lifetime."""
        if seconds < 0:
            raise ValueError("a dialog timeout cannot be negative")
        self.timeout = int(seconds + 0.999)  # whole seconds, never shorter than asked
        self._use()

    def set_profile(self, name: str, value: str | None = None) -> None:
        """Put the dialog in a profile (with a value, or without: `value=None`)."""
        if not name:
            raise ValueError("a profile needs a name")
        link = (name, None if value is None else str(value))
        if link not in self.profiles:
            self.profiles.append(link)
        self._use()

    def set_sharing_tag(self, tag: str) -> None:
        """The dialog is owned by the dialog node where `tag` is active ([dialog.cluster]
        sharing_tags)."""
        self.sharing_tag = tag
        self._use()

    async def profile_size(self, name: str, value: str | None = None) -> int:
        """Dialogs in the profile now (raises DialogUnavailable without a dialog service)."""
        client = self._client()
        reply = await client.query(pb.Query(size=pb.ProfileQuery(
            name=name, value=value or "", has_value=value is not None)))
        return int(reply.size)

    async def set_profile_limited(self, name: str, value: str | None, limit: int) -> bool:
        """Put the dialog in the profile only if it holds fewer than `limit` dialogs, as one
        step on the dialog node (two INVITEs asking at once cannot both take the last
        place). False: the profile is full (answer 486/403). Raises DialogUnavailable."""
        client = self._client()
        request = self._ctx.request
        reply = await client.query(pb.Query(reserve=pb.Reserve(
            callid=request.call_id, from_tag=request.from_tag or "",
            profile=pb.Profile(name=name, value=value or "", has_value=value is not None),
            limit=limit)))
        if not reply.ok:
            return False
        self.reserved = True
        self.set_profile(name, value)
        return True

    def _client(self) -> DialogClient:
        client = self._ctx.services.get("dialog")
        if client is None:
            from services.edge.dialog_client import DialogUnavailable

            raise DialogUnavailable("no dialog service configured")
        return client  # type: ignore[no-any-return]


class AccOptions:
    """`ctx.acc`: the CDR of the dialog being created."""

    __slots__ = ("disabled", "extra")

    def __init__(self) -> None:
        self.extra: dict[str, str] = {}
        self.disabled = False

    def disable(self) -> None:
        self.disabled = True


def _where(transport: str, host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{transport}:{host}:{port}"


class DialogTracker:
    """Turns what the proxy core forwards and relays into dialog events (module doc)."""

    def __init__(self, client: DialogClient, *, enabled: bool = True) -> None:
        self.client = client
        self.enabled = enabled
        self.edge_uac = ""
        self.edge_addrs: list[str] = []

    def set_interfaces(self, interfaces: Sequence[Interface]) -> None:
        self.edge_addrs = sorted({f"{i.host.lower()}:{i.port}" for i in interfaces})

    @property
    def active(self) -> bool:
        return self.enabled and self.client.available

    def forwarded(self, ctx: RouteContext, targets: Sequence[Target]) -> None:
        # `active`; the proxy core makes the same test before calling (`ProxyCore._tracking`)
        if not (self.enabled and self.client.available):
            return
        request = ctx.request
        method = request.method
        to_tag = request.to_tag
        if to_tag is None:
            if method != "INVITE" or not ctx.rr:
                return
            d: RouteDialog | None = ctx.dialog_options
            if d is not None and d.disabled:
                return
            if d is None:
                d = ctx.dialog
            d.tracked = True
            acc = ctx.acc_options
            source = ctx.source
            itf = source.interface
            first = targets[0] if targets else None
            # Filled in place: a sub-message built apart and passed to DialogEvent(...) is
            # copied (measured: 6.0 us per Create that way, 3.3 us in place).
            event = pb.DialogEvent(time_ms=int(time.time() * 1000))
            create = event.create
            create.callid = request.call_id
            create.from_tag = request.from_tag or ""
            create.from_hdr = request.get("From") or ""
            create.to_hdr = request.get("To") or ""
            create.ruri = request.uri
            create.cseq = request.cseq.number
            create.contact = _contact_uri(request.get("Contact") or "")
            create.source = _where(itf.transport, source.host, source.port)
            create.socket = _where(itf.transport, itf.host, itf.port)
            if first is not None:
                create.destination = first.next_hop or first.uri
            create.edge_addrs.extend(self.edge_addrs)
            create.edge_uac = self.edge_uac
            if d.timeout is not None:
                create.timeout = d.timeout
                create.timeout_set = True
            if d.sharing_tag:
                create.sharing_tag = d.sharing_tag
            for name, value in d.profiles:
                create.profiles.add(name=name, value=value or "", has_value=value is not None)
            if acc is not None:
                create.no_cdr = acc.disabled
                if acc.extra:
                    create.extra.update({str(k): str(v) for k, v in acc.extra.items()})
            self.client.emit(event)
            return
        if method in _IN_DIALOG:
            event = pb.DialogEvent(time_ms=int(time.time() * 1000))
            q = event.request
            q.callid = request.call_id
            q.from_tag = request.from_tag or ""
            q.to_tag = to_tag
            q.method = method
            q.cseq = request.cseq.number
            self.client.emit(event)

    def relayed(self, ctx: RouteContext, response: Response,
                dest: Destination | None = None) -> None:
        d = ctx.dialog_options
        if d is None or not (d.tracked or d.reserved):
            return
        status = response.status
        if status <= 100 or (not d.tracked and status < 200):
            return
        request = ctx.request
        event = pb.DialogEvent(time_ms=int(time.time() * 1000))
        reply = event.reply
        reply.callid = request.call_id
        reply.from_tag = request.from_tag or ""
        reply.to_tag = response.to_tag or ""
        reply.status = status
        reply.reason = response.reason
        if 200 <= status < 300:
            reply.contact = _contact_uri(response.get("Contact") or "")
            reply.record_route.extend(response.get_all("Record-Route"))
            if dest is not None:
                reply.source = _where(dest.transport, dest.host, dest.port)
        self.client.emit(event)


def _contact_uri(value: str) -> str:
    """The URI of the first Contact value (`<sip:a@h:5060>;expires=1` -> `sip:a@h:5060`)."""
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        return value[start + 1:end] if end > 0 else ""
    return value.split(",", 1)[0].split(";", 1)[0].strip()


__all__ = ["AccOptions", "DialogTracker", "RouteDialog"]
