"""`ctx.record(...)`: SIPREC recording of a call from routing (OpenSIPS 2.4
`siprec_start_recording`), through the siprec service (services/siprec).

    async def request_route(request, ctx):
        if request.method == "INVITE" and request.to_tag is None:
            await ctx.media.offer("replace-origin replace-session-connection")  # required
            ctx.record(srs="sip:srs1@10.0.0.5:5090,sip:srs2@10.0.0.6:5090",
                       group="sales", headers=[("X-Tenant", "acme")])
        ...

The call is marked in its INVITE's transaction; when the INVITE's 2xx has gone upstream
(after `ctx.media.answer`, so rtpengine knows both legs) the edge asks the siprec service
(`siprec_start`, found in discovery as `siprec` or at `[edge] siprec`) to record it on
the call's rtpengine instance, in the background: the call never waits for, nor fails
because of, the recorder.  `caller`/`callee` default to the From/To URIs (and display
names).  With `[edge] siprec_srs` (which needs `media_anchor = true`) the default routing
records every call and calls `siprec_stop` for every BYE it relays; a routing script
calls `ctx.stop_recording()` on its BYEs.  A BYE a service sends through the edge's Uac
API (a dialog timeout, `dlg_end_dlg`) ends the call's recording too.  A call without
rtpengine media cannot be recorded: the siprec service refuses it and raises
E_SIPREC_FAILED, never a silent success.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from services.edge.routing import RouteContext

# The Call-IDs of the recorder's own sessions with an SRS (services/siprec/recorder.py):
# here, where the default routing asks for every BYE, so that no import runs per BYE.
RECORDING_SUFFIX = "-siprec"
LOOKUP_TTL = 2.0  # s a discovery answer about the siprec service is reused
RETRY_WINDOW = 5.0  # s a request no recorder could take is tried again (a restart)
RETRY_PAUSE = 0.2  # s between those tries


class _Unreached(RuntimeError):
    """No recorder could be reached (none known, refused, reset): nothing was done."""


@dataclass(frozen=True)
class RecordRequest:
    srs: str
    group: str = ""
    caller: str = ""
    callee: str = ""
    caller_name: str = ""
    callee_name: str = ""
    headers: tuple[tuple[str, str], ...] = ()


class RecordingClient:
    """The edge's client of the siprec service (JSON-RPC over HTTP, its MI)."""

    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "siprec", default_srs: str = "", token: str = "",
                 timeout: float = 45.0) -> None:
        self.token = token
        self.static = [a for a in addresses if a]
        self.registry = registry
        self.service = service
        self.default_srs = default_srs  # [edge] siprec_srs: the default routing records all
        self.timeout = timeout
        self.edge_uac = ""  # this worker's Uac API: the SRS leg leaves from here
        self.edge_sip = ""  # its SIP URI (the recorder's Contact: the SRS talks to us)
        self.log = structlog.get_logger("edge.siprec")
        self.started = 0
        self.failed = 0
        self.stop_failed = 0
        self._known: list[str] = list(self.static)
        self._looked_at = -LOOKUP_TTL
        self._clients: dict[str, Any] = {}
        self._lookup = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()  # starts/stops under way (spawn)

    async def urls(self) -> list[str]:
        if self.static:
            return [u if u.startswith("http") else f"http://{u}/mi" for u in self.static]
        if self.registry is None:
            return []
        async with self._lookup:  # calls at once wait for one lookup, not for none
            now = asyncio.get_running_loop().time()
            if now - self._looked_at >= LOOKUP_TTL:  # one lookup per TTL, not per BYE
                self._looked_at = now
                with contextlib.suppress(Exception):
                    found = await self.registry.healthy(self.service)
                    self._known = sorted({i.meta["mi_url"] for i in found
                                          if i.meta.get("mi_url")})
        return list(self._known)

    @property
    def known(self) -> bool:
        """A siprec service was seen (cheap: no lookup)."""
        return bool(self._known) or (self.registry is not None and not self.static)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """`method` on the first recorder that has the call (404: the next one). When
        none could be reached (one restarting: its replacement may not be in the
        answer of discovery this edge holds, or a kept connection was closed under the
        request), discovery is asked again and the call tried again, within
        RETRY_WINDOW s: the recorder only answers after a request reached it, so a
        request that reached none is safe to send again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_WINDOW
        while True:
            try:
                return await self._call_once(method, params)
            except _Unreached:
                if loop.time() >= deadline:
                    raise
                self._looked_at = -LOOKUP_TTL  # ask discovery again next time
                await asyncio.sleep(RETRY_PAUSE)  # the replacement's registration

    async def _call_once(self, method: str, params: dict[str, Any]) -> Any:
        from shared.rpc.client import JsonRpcClient, RpcError

        last: Exception | None = None
        unreached = True
        for url in await self.urls():
            client = self._clients.get(url)
            if client is None:  # one HTTP session per recorder, kept (no connect per call)
                client = self._clients[url] = JsonRpcClient(
                    url, token=self.token or None, timeout=self.timeout)
            try:
                return await client.call(method, params)
            except RpcError as exc:
                if exc.code == 404:  # not this recorder's recording: ask the next one
                    last, unreached = exc, False
                    continue
                if exc.code == 503:  # stopping: it took nothing; another one will
                    last = exc
                    continue
                raise RuntimeError(f"siprec {method}: {exc}") from None  # it answered
            except Exception as exc:
                last = exc
        if unreached:
            raise _Unreached(f"no siprec service answered: {last}")
        raise RuntimeError(f"no siprec service answered: {last}")

    async def close(self, grace: float = 2.0) -> None:
        """Closes the recorders' sessions, first letting the starts and stops under way
        finish, for at most `grace` s: a stopping edge must not take the siprec_stop of a
        BYE it relayed with it (the SRS would go on recording a call that ended)."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:  # a recorder that does not answer keeps us no longer
                task.cancel()
        clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.close()

    def spawn(self, coro: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, params: dict[str, Any]) -> None:
        try:
            result = await self.call("siprec_start", params)
        except Exception as exc:
            self.failed += 1
            self.log.warning("siprec_start_failed", call_id=params.get("callid"),
                             error=str(exc))
            return
        self.started += 1
        self.log.info("siprec_start", call_id=params.get("callid"), result=result)

    async def update(self, params: dict[str, Any]) -> None:
        if not await self.urls():
            return
        with contextlib.suppress(Exception):
            await self.call("siprec_update", params)

    async def stop(self, call_id: str, reason: str = "bye") -> None:
        if not await self.urls():
            return  # no siprec service in the mesh: nothing can be recorded
        try:
            await self.call("siprec_stop", {"callid": call_id, "reason": reason})
        except Exception as exc:
            # No recorder took it within RETRY_WINDOW (all down, restarting): the one that
            # holds the recording ends it at its next check (call-gone), not at the BYE.
            self.stop_failed += 1
            self.log.warning("siprec_stop_failed", call_id=call_id, error=str(exc))


def record(ctx: RouteContext, request: RecordRequest) -> None:
    """Mark the INVITE's call for recording; it starts once its 2xx went upstream."""
    client: RecordingClient | None = ctx.services.get("siprec")
    invite = ctx.request
    if invite.method != "INVITE" or invite.to_tag is not None:
        raise ValueError("ctx.record() is for an initial INVITE")
    if client is None:
        raise ValueError("no siprec service configured for this edge")
    params: dict[str, Any] = {
        "callid": invite.call_id, "from_tag": invite.from_tag or "", "srs": request.srs,
        "group": request.group, "headers": [list(h) for h in request.headers],
    }
    try:
        frm, to = invite.from_addr, invite.to_addr
        params["caller"] = request.caller or str(frm.uri)
        params["callee"] = request.callee or str(to.uri)
        params["caller_name"] = request.caller_name or frm.display_name or ""
        params["callee_name"] = request.callee_name or to.display_name or ""
    except Exception:  # a From/To the proxy could route but not parse as name-addr
        params["caller"], params["callee"] = request.caller, request.callee

    def on_final(status: int) -> None:
        if not 200 <= status < 300:
            return
        media = ctx._media  # the instance that took the offer, if any
        params["instance"] = media.instance if media is not None and media.engaged else ""
        params["set_id"] = media.set_id if media is not None else 0
        params["edge"] = client.edge_uac
        params["edge_sip"] = client.edge_sip
        client.spawn(client.start(params))

    ctx.add_on_final(on_final)


def call_ended(ctx: RouteContext) -> None:
    """A BYE of a call: end its recording, if it has one (in the background)."""
    client: RecordingClient | None = ctx.services.get("siprec")
    if client is not None and client.known:
        client.spawn(client.stop(ctx.request.call_id))


def offer_direction(body: bytes) -> str | None:
    """The direction an SDP offer asks for its (first) audio stream (RFC 3264 §6.1, §8.4
    hold): its media-level attribute, else the session-level one, else sendrecv; the
    RFC 2543 hold (c=0.0.0.0) as sendonly.  None for a body that is not SDP."""
    text = body.decode("utf-8", "replace")
    if not text.lstrip().startswith("v="):
        return None
    session: str | None = None
    media: str | None = None
    in_media = zero = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("m="):
            if in_media:
                break  # the first stream decides
            in_media = True
        elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            if in_media:
                media = line[2:]
            else:
                session = line[2:]
        elif line.startswith("c=") and line.split()[-1:] == ["0.0.0.0"]:
            zero = True
    direction = media or session or "sendrecv"
    if zero and direction == "sendrecv":
        direction = "sendonly"
    return direction


def call_updated(ctx: RouteContext) -> None:
    """A re-INVITE of a call: once accepted (2xx), the recorder hears its offer's direction
    and re-INVITEs the SRS if the hold state changed (nothing if it is not recorded)."""
    client: RecordingClient | None = ctx.services.get("siprec")
    request = ctx.request
    if client is None or not client.known or request.method != "INVITE":
        return
    direction = offer_direction(request.body)
    if direction is None:
        return  # no offer in the re-INVITE (it comes in the 2xx): hold is not known here
    params = {"callid": request.call_id, "from_tag": request.from_tag or "",
              "direction": direction}

    def on_final(status: int) -> None:
        if 200 <= status < 300:
            client.spawn(client.update(params))

    ctx.add_on_final(on_final)


def is_srs_bye(request: Any, ctx: RouteContext) -> bool:
    """A BYE from an SRS in a recording session of ours (its Call-ID is the recorder's,
    its Request-URI our Contact `sip:src@EDGE`)."""
    if request.method != "BYE" or ctx.services.get("siprec") is None:
        return False
    return request.call_id.endswith(RECORDING_SUFFIX) and ctx.is_myself(request.parsed_uri)


async def srs_bye(ctx: RouteContext) -> None:
    """The SRS ends the recording session (RFC 7866 §7.1.2): the recorder is told (it
    unsubscribes the media, E_SIPREC_STOP) and the BYE answered; the call goes on."""
    client: RecordingClient = ctx.services["siprec"]
    try:
        await client.call("siprec_srs_bye", {"rs_callid": ctx.request.call_id})
    except RuntimeError as exc:
        if "not found" in str(exc).lower():
            ctx.reply(481, "Call/Transaction Does Not Exist")
            return
        client.log.warning("siprec_srs_bye_failed", call_id=ctx.request.call_id,
                           error=str(exc))
    ctx.reply(200)
