"""The web console's I/O: HTTP routes on the gateway, the poller, the live stream.

Routes, on the gateway's own HTTP server (next to ``/mi``):

* ``GET /`` -- the page (``static/index.html``), or the login form when a token is
  required and the request carries neither the bearer token nor the console's cookie;
* ``POST /console/login`` -- the form's token: a right one sets the cookie (an HMAC of
  the token, never the token itself; HttpOnly, SameSite=Strict) and goes back to ``/``;
* ``GET /console/static/<file>`` -- the page's script and style, shipped in the package
  (no CDN: the page works offline; a Content-Security-Policy of ``'self'`` keeps it so);
* ``GET /console/state`` -- the current view as JSON (what the stream sends);
* ``GET /console/events`` -- the live view as server-sent events: one ``data:`` line of
  JSON per poll, the current one at once on connecting.

Access follows the MI's rule: with no ``[gateway] token`` (only allowed on loopback) all
is open; with one, ``/``, the state and the stream need ``Authorization: Bearer <token>``
or the cookie the login form sets.

The poller runs only while a page is connected: each ``interval`` it asks the mesh through
the gateway's router (discovery, every process's statistics, ``clusterer_list`` and
``clusterer_list_shtags`` where a clustered service answers them) and hands the answers
to :class:`~gateway.console.model.ConsoleModel`; events come from the gateway's event
feed as they arrive. A slow page only misses views (its queue keeps the newest one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from gateway.console.model import ConsoleModel, InstanceInfo, Poll
from gateway.router import MeshRouter
from shared.discovery import RegistryError
from shared.events.envelope import Event
from shared.rpc import MiError, RpcError, RpcTransportError
from shared.rpc.jsonrpc import bearer_ok

COOKIE = "sipmesh_console"
STATISTICS = ["load:", "usrloc:registered_users", "registrar:accepted_regs",
              "dialog:active_dialogs"]
STATIC = {"console.js": "text/javascript", "console.css": "text/css",
          "favicon.svg": "image/svg+xml"}
# No CDN, no inline script: everything comes from this gateway.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
log = structlog.get_logger("gateway.console")


def _asset(name: str) -> bytes:
    return (resources.files("gateway.console") / "static" / name).read_bytes()


def session_value(token: str) -> str:
    """The cookie value for ``token``: proves the login without carrying the token."""
    return hmac.new(token.encode("utf-8"), b"sipmesh-console-v1", hashlib.sha256).hexdigest()


class Console:
    """Serves the console on the gateway's runtime (see the module docstring)."""

    def __init__(self, router: MeshRouter, *, token: str = "", interval: float = 1.0) -> None:
        self.router = router
        self.rt = router.rt
        self.token = token
        self.interval = interval
        self.model = ConsoleModel()
        self.view: dict[str, Any] | None = None
        self._watchers: set[asyncio.Queue[str]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pages = {name: _asset(name) for name in ("index.html", "login.html")}
        self._static = {name: _asset(name) for name in STATIC}
        app = self.rt.app
        app.router.add_get("/", self._index)
        app.router.add_post("/console/login", self._login)
        app.router.add_get("/console/static/{name}", self._asset)
        app.router.add_get("/console/state", self._state)
        app.router.add_get("/console/events", self._events)
        app.router.add_get("/favicon.ico", self._favicon)
        self.rt.on_start(self.start)
        self.rt.on_stop(self.stop)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever(), name="console-poller")

    async def stop(self) -> None:
        self._stopping.set()  # the open streams end, so the HTTP server can close
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_event(self, event: Event) -> None:
        """An event from the gateway's feed (:class:`~gateway.events.EventFeed`)."""
        self.model.on_event(event.name, event.params, now=time.time(),
                            service=event.service, node=event.node, raised=event.time)

    # -- access ----------------------------------------------------------------------------
    def _allowed(self, request: web.Request) -> bool:
        if not self.token or bearer_ok(request.headers, self.token):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), session_value(self.token).encode())

    def _html(self, body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type="text/html",
                            charset="utf-8", headers=self._headers())

    @staticmethod
    def _headers() -> dict[str, str]:
        return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

    def _login_page(self, error: str = "", status: int = 401) -> web.Response:
        body = self._pages["login.html"].replace(
            b"<!--error-->", error.encode() if error else b"")
        return self._html(body, status)

    # -- handlers --------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return self._login_page()
        return self._html(self._pages["index.html"])

    async def _login(self, request: web.Request) -> web.Response:
        if not self.token:
            raise web.HTTPSeeOther("/")
        form = await request.post()
        given = str(form.get("token", ""))
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                   self.token.encode("utf-8")):
            log.warning("console_login_refused", peer=request.remote)
            return self._login_page('<p class="error" id="login-error">Wrong token.</p>')
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, session_value(self.token), httponly=True,
                            samesite="Strict", path="/")
        raise response

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._static:
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=STATIC[name],
                            headers={"X-Content-Type-Options": "nosniff",
                                     "Cache-Control": "no-cache"})

    async def _favicon(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["favicon.svg"], content_type="image/svg+xml")

    async def _state(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            raise web.HTTPUnauthorized()
        # While a page is open the poller keeps the view fresh; otherwise poll now.
        view = self.view if self._watchers and self.view is not None \
            else await self._poll_once()
        return web.json_response(view, headers={"Cache-Control": "no-store"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if not self._allowed(request):
            raise web.HTTPUnauthorized()
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self._watchers.add(queue)
        self._wake.set()
        try:
            await response.write(b"retry: 1000\n\n")
            if self.view is not None:
                await response.write(self._frame(json.dumps(self.view)))
            while not self._stopping.is_set():
                try:
                    async with asyncio.timeout(15):
                        data = await self._next(queue)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if data is None:
                    break
                await response.write(self._frame(data))
        except (ConnectionResetError, RuntimeError):
            pass  # the page went away
        finally:
            self._watchers.discard(queue)
        return response

    async def _next(self, queue: asyncio.Queue[str]) -> str | None:
        """The next view for one stream, or None once the console stops."""
        getter = asyncio.ensure_future(queue.get())
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({getter, stopper},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (getter, stopper):
                task.cancel()
        return getter.result() if getter in done else None

    @staticmethod
    def _frame(data: str) -> bytes:
        return f"event: view\ndata: {data}\n\n".encode()

    # -- polling ---------------------------------------------------------------------------
    async def _poll_forever(self) -> None:
        while not self._stopping.is_set():
            if not self._watchers:
                self._wake.clear()
                await self._wake.wait()
                continue
            started = time.monotonic()
            try:
                await self._poll_once()
            except Exception:  # the console must never die of a bad answer
                log.exception("console_poll_failed")
            self._publish()
            spent = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(self.interval - spent, 0.05))

    def _publish(self) -> None:
        if self.view is None:
            return
        data = json.dumps(self.view)
        for queue in list(self._watchers):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()  # keep only the newest view
            queue.put_nowait(data)

    async def _poll_once(self) -> dict[str, Any]:
        try:
            instances = await self.router.registry.instances()
        except RegistryError as exc:
            log.warning("console_discovery_failed", error=str(exc))
            instances = []
        passing = [i for i in instances if i.passing]
        ps_ids = self.router.ps_ids(passing)
        stats: dict[int, Any] = {}
        try:
            for ps_id, answer in await self.router.per_process_statistics(STATISTICS):
                if isinstance(answer, dict):
                    stats[ps_id] = answer
        except MiError:
            pass
        clusters = shtags = None
        try:
            routed = await self.router.routed()
        except MiError:
            routed = set()
        if "clusterer_list" in routed:
            clusters = await self._quiet("clusterer_list")
        if "clusterer_list_shtags" in routed:
            shtags = await self._quiet("clusterer_list_shtags")
        own = self.rt._instance()
        infos = [InstanceInfo(i.service, i.id, i.address, i.port, i.passing, dict(i.meta))
                 for i in instances]
        if not any(i.id == own.id for i in instances):
            infos.append(InstanceInfo(own.service, own.id, own.address, own.port, True,
                                      dict(own.meta)))
        poll = Poll(instances=infos, ps_ids=ps_ids, stats=stats,
                    clusters=clusters if isinstance(clusters, dict) else None,
                    shtags=shtags if isinstance(shtags, list) else None)
        self.view = self.model.update(poll, time.time())
        return self.view

    async def _quiet(self, name: str) -> Any:
        try:
            return await self.router.call(name)
        except (MiError, RpcError, RpcTransportError) as exc:
            log.info("console_command_failed", command=name, error=str(exc))
            return None


__all__ = ["COOKIE", "Console", "session_value"]
