"""A fake Consul agent (HTTP API v1) written from Consul's HTTP API documentation.

No Consul server can be installed on this machine, so the Consul backend is tested against
this aiohttp app. It implements only the endpoints SipMesh calls, each as documented:

* ``PUT /v1/agent/service/register`` -- keys are decoded case-insensitively (Consul does);
  a ``Check`` or ``Checks`` entry with ``TTL`` creates a check whose ID is ``service:<id>``
  (``service:<id>:<n>``, 1-based, when several) and that **starts critical** unless a
  ``Status`` is given; re-registering a service keeps the status and output its checks
  had (as Consul does since 0.5.1). ``DeregisterCriticalServiceAfter`` removes a service
  whose check has stayed critical that long.
* ``PUT /v1/agent/service/deregister/:id``; ``GET /v1/agent/service/:id`` (404 when
  unknown); ``PUT /v1/agent/check/{pass,warn,fail}/:id`` (404 for an unknown check); TTL
  checks turn critical when not updated within the TTL. An ``HTTP`` check is run by the
  fake as by the agent: a GET every ``Interval`` (``Timeout``, default 10 s), 2xx passing,
  429 warning, anything else critical; it starts critical too.
* ``GET /v1/health/service/:name`` (``?passing`` keeps entries whose checks all pass) and
  ``GET /v1/catalog/services``, both with ``X-Consul-Index`` and blocking queries:
  ``?index=N&wait=D`` waits while the index is still N, up to D (default 5m).
* KV: ``GET/PUT/DELETE /v1/kv/:key`` with base64 ``Value``, ``?recurse``, ``?cas`` (0 means
  create only), ``?acquire=``/``?release=`` answering ``false`` when another session holds
  the key; ``LockIndex`` counts acquisitions.
* Sessions: ``PUT /v1/session/create`` (``TTL``, ``Behavior`` release|delete, ``LockDelay``),
  ``destroy``, ``renew`` and ``GET /v1/session/info``; an expired or destroyed session
  releases (or deletes, with ``behavior=delete``) the keys it holds.

Lock-delay is recorded but not enforced; Consul's TTL grace (it may wait up to 2x TTL) is
not modelled: expiry is at exactly the TTL, which is what a client must assume anyway.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

NODE = "fake-consul-node"
DC = "dc1"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | int | float) -> float:
    """Go duration strings as Consul accepts them ("10s", "1m", "500ms"); bare ints are s."""
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(text.strip())
    if not m:
        if text.strip().isdigit():
            return float(text)
        raise ValueError(f"bad duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _lower_keys(obj: Any) -> Any:
    """Consul decodes request bodies case-insensitively; normalise one level of keys."""
    if isinstance(obj, dict):
        return {str(k).lower(): v for k, v in obj.items()}
    return obj


@dataclasses.dataclass
class _Check:
    check_id: str
    name: str
    service_id: str
    ttl: float | None
    status: str
    deadline: float
    deregister_after: float | None
    critical_since: float | None
    output: str = ""
    http: str | None = None
    interval: float = 10.0
    timeout: float = 10.0


@dataclasses.dataclass
class _Service:
    id: str
    name: str
    address: str
    port: int
    tags: list[str]
    meta: dict[str, str]


@dataclasses.dataclass
class _Key:
    value: bytes
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0
    session: str | None = None
    # Consul's lock-delay: after the holding session is invalidated (not on a release),
    # the lock cannot be acquired again until this clock time.
    lock_delay_until: float = 0.0


@dataclasses.dataclass
class _Session:
    id: str
    name: str
    ttl: float | None
    behavior: str
    lock_delay: float
    deadline: float | None
    create_index: int


class FakeConsul:
    """The fake agent's state and its aiohttp application."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.index = 1
        self.services: dict[str, _Service] = {}
        self.checks: dict[str, _Check] = {}
        self.kv: dict[str, _Key] = {}
        self.sessions: dict[str, _Session] = {}
        self.requests: list[tuple[str, str]] = []
        self._changed = asyncio.Event()
        self.app = web.Application(middlewares=[self._record])
        r = self.app.router
        r.add_put("/v1/agent/service/register", self.service_register)
        r.add_put("/v1/agent/service/deregister/{id}", self.service_deregister)
        r.add_put("/v1/agent/check/{state:pass|warn|fail}/{id:.+}", self.check_update)
        r.add_get("/v1/agent/services", self.agent_services)
        r.add_get("/v1/agent/service/{id}", self.agent_service)
        r.add_get("/v1/health/service/{name}", self.health_service)
        r.add_get("/v1/catalog/services", self.catalog_services)
        r.add_get("/v1/kv/{key:.*}", self.kv_get)
        r.add_put("/v1/kv/{key:.*}", self.kv_put)
        r.add_delete("/v1/kv/{key:.*}", self.kv_delete)
        r.add_put("/v1/session/create", self.session_create)
        r.add_put("/v1/session/destroy/{id}", self.session_destroy)
        r.add_put("/v1/session/renew/{id}", self.session_renew)
        r.add_get("/v1/session/info/{id}", self.session_info)
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._http_checks: dict[str, asyncio.Task[None]] = {}
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._reaper = asyncio.create_task(self._reap_forever())
        return f"{host}:{self.port}"

    async def stop(self) -> None:
        for task in self._http_checks.values():
            task.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        # Blocking queries still waiting answer now, as when an agent shuts down: aiohttp
        # does not cancel a handler whose client went away, and the runner's cleanup would
        # sit out each one's ``wait`` (seconds) before it returned.
        self._changed.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.tick()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.tick()
        response: web.StreamResponse = await handler(request)
        return response

    def _bump(self) -> None:
        self.index += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def tick(self) -> None:
        """Applies TTL expiry of checks and sessions at the current clock."""
        now = self.clock()
        changed = False
        for check in list(self.checks.values()):
            if check.ttl is not None and check.status != "critical" and now >= check.deadline:
                check.status, check.critical_since = "critical", now
                check.output = "TTL expired"
                changed = True
            if (
                check.status == "critical"
                and check.deregister_after is not None
                and check.critical_since is not None
                and now - check.critical_since >= check.deregister_after
            ):
                self._drop_service(check.service_id)
                changed = True
        for session in list(self.sessions.values()):
            if session.deadline is not None and now >= session.deadline:
                self._invalidate(session.id)
                changed = True
        if changed:
            self._bump()

    def _headers(self) -> dict[str, str]:
        return {
            "X-Consul-Index": str(self.index),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
        }

    def _json(self, body: Any, status: int = 200) -> web.Response:
        return web.Response(
            text=json.dumps(body), status=status, content_type="application/json",
            headers=self._headers(),
        )

    async def _block(self, request: web.Request) -> None:
        """Consul blocking query: wait while ?index equals the current index."""
        q = request.query
        if "index" not in q:
            return
        try:
            index = int(q["index"])
            wait = min(parse_duration(q.get("wait", "5m")), 600.0)
        except ValueError:
            return
        if index > 0 and index >= self.index:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
            self.tick()

    # -- agent services and checks -------------------------------------------------------
    async def service_register(self, request: web.Request) -> web.Response:
        try:
            body = _lower_keys(json.loads(await request.text()))
            name = str(body["name"])
        except (ValueError, KeyError, TypeError):
            return web.Response(text="Request decode failed", status=400)
        sid = str(body.get("id") or name)
        svc = _Service(
            id=sid, name=name, address=str(body.get("address") or ""),
            port=int(body.get("port") or 0), tags=list(body.get("tags") or []),
            meta={str(k): str(v) for k, v in (body.get("meta") or {}).items()},
        )
        checks = list(body.get("checks") or [])
        if body.get("check"):
            checks.insert(0, body["check"])
        if body.get("ttl"):  # the deprecated top-level form
            checks.insert(0, {"ttl": body["ttl"]})
        # Consul restores a re-registered check's status and output (hashicorp/consul#868,
        # #4904: no flap to critical), so a service re-registering its metadata keeps the
        # health its agent check last saw.
        previous = {c.check_id: c for c in self.checks.values() if c.service_id == sid}
        self._drop_service(sid)
        self.services[sid] = svc
        now = self.clock()
        for n, raw in enumerate(checks, start=1):
            c = _lower_keys(raw)
            cid = str(c.get("checkid") or c.get("id") or (
                f"service:{sid}" if len(checks) == 1 else f"service:{sid}:{n}"))
            try:
                ttl = parse_duration(c["ttl"]) if c.get("ttl") else None
                dereg = c.get("deregistercriticalserviceafter")
                interval = parse_duration(c.get("interval") or "10s")
                timeout = parse_duration(c.get("timeout") or "10s")
            except ValueError:
                return web.Response(text="Invalid check duration", status=400)
            status = str(c.get("status") or "critical")  # documented: checks start critical
            output, critical_since = "", now if status == "critical" else None
            prev = previous.get(cid)
            if prev is not None:
                status, output, critical_since = prev.status, prev.output, prev.critical_since
            check = self.checks[cid] = _Check(
                check_id=cid, name=str(c.get("name") or f"Service '{name}' check"),
                service_id=sid, ttl=ttl, status=status,
                deadline=now + (ttl or 0.0),
                deregister_after=parse_duration(dereg) if dereg else None,
                critical_since=critical_since, output=output,
                http=str(c["http"]) if c.get("http") else None,
                interval=interval, timeout=timeout,
            )
            if check.http:
                self._http_checks[cid] = asyncio.create_task(self._run_http_check(check))
        self._bump()
        return web.Response(text="", headers=self._headers())

    def _drop_service(self, sid: str) -> bool:
        if self.services.pop(sid, None) is None:
            return False
        for cid in [c.check_id for c in self.checks.values() if c.service_id == sid]:
            del self.checks[cid]
            task = self._http_checks.pop(cid, None)
            if task is not None:
                task.cancel()
        return True

    async def _run_http_check(self, check: _Check) -> None:
        """The agent's HTTP check loop: GET, then set the status from the answer."""
        import aiohttp

        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(check.http or "", timeout=aiohttp.ClientTimeout(
                            total=check.timeout)) as resp:
                        code = resp.status
                    status = ("passing" if 200 <= code < 300
                              else "warning" if code == 429 else "critical")
                    output = f"HTTP GET {check.http}: {code}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, output = "critical", f"HTTP GET {check.http}: {exc!r}"
                check.output = output
                if status != check.status:
                    check.status = status
                    check.critical_since = self.clock() if status == "critical" else None
                    self._bump()
                await asyncio.sleep(check.interval)

    async def service_deregister(self, request: web.Request) -> web.Response:
        if not self._drop_service(request.match_info["id"]):
            return web.Response(text="Unknown service ID", status=404)
        self._bump()
        return web.Response(text="", headers=self._headers())

    async def check_update(self, request: web.Request) -> web.Response:
        check = self.checks.get(request.match_info["id"])
        if check is None:
            return web.Response(text="Unknown check ID", status=404)
        status = {"pass": "passing", "warn": "warning", "fail": "critical"}[
            request.match_info["state"]]
        now = self.clock()
        check.output = request.query.get("note", "")
        if check.ttl is not None:
            check.deadline = now + check.ttl
        if status != check.status:
            check.status = status
            check.critical_since = now if status == "critical" else None
            self._bump()
        return web.Response(text="", headers=self._headers())

    def _service_json(self, svc: _Service) -> dict[str, Any]:
        return {
            "ID": svc.id, "Service": svc.name, "Tags": svc.tags, "Address": svc.address,
            "Port": svc.port, "Meta": svc.meta, "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False, "Datacenter": DC,
        }

    async def agent_service(self, request: web.Request) -> web.Response:
        svc = self.services.get(request.match_info["id"])
        if svc is None:
            return web.Response(text="unknown service ID", status=404)
        return self._json(self._service_json(svc))

    async def agent_services(self, request: web.Request) -> web.Response:
        return self._json({sid: self._service_json(s) for sid, s in self.services.items()})

    async def health_service(self, request: web.Request) -> web.Response:
        await self._block(request)
        name = request.match_info["name"]
        passing_only = "passing" in request.query and request.query["passing"] not in ("0", "false")
        tags = request.query.getall("tag", [])
        entries = []
        for svc in sorted(self.services.values(), key=lambda s: s.id):
            if svc.name != name or any(t not in svc.tags for t in tags):
                continue
            checks = [c for c in self.checks.values() if c.service_id == svc.id]
            if passing_only and any(c.status != "passing" for c in checks):
                continue
            entries.append({
                "Node": {"ID": "", "Node": NODE, "Address": "127.0.0.1", "Datacenter": DC,
                         "Meta": {}},
                "Service": self._service_json(svc),
                "Checks": [
                    {"Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status",
                     "Status": "passing", "ServiceID": "", "ServiceName": "", "Output": ""},
                ] + [
                    {"Node": NODE, "CheckID": c.check_id, "Name": c.name, "Status": c.status,
                     "ServiceID": svc.id, "ServiceName": svc.name, "Output": c.output,
                     "Type": "ttl" if c.ttl is not None else ""}
                    for c in checks
                ],
            })
        return self._json(entries)

    async def catalog_services(self, request: web.Request) -> web.Response:
        await self._block(request)
        out: dict[str, list[str]] = {"consul": []}
        for svc in self.services.values():
            out.setdefault(svc.name, [])
            out[svc.name] = sorted(set(out[svc.name]) | set(svc.tags))
        return self._json(out)

    # -- KV ------------------------------------------------------------------------------
    def _kv_json(self, key: str, entry: _Key) -> dict[str, Any]:
        return {
            "Key": key, "Flags": entry.flags, "CreateIndex": entry.create_index,
            "ModifyIndex": entry.modify_index, "LockIndex": entry.lock_index,
            "Value": base64.b64encode(entry.value).decode() if entry.value else None,
            **({"Session": entry.session} if entry.session else {}),
        }

    async def kv_get(self, request: web.Request) -> web.Response:
        await self._block(request)
        key = request.match_info["key"]
        if "recurse" in request.query:
            found = [self._kv_json(k, v) for k, v in sorted(self.kv.items()) if k.startswith(key)]
        else:
            found = [self._kv_json(key, self.kv[key])] if key in self.kv else []
        if not found:
            return web.Response(status=404, headers=self._headers())
        return self._json(found)

    async def kv_put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        q = request.query
        value = await request.read()
        entry = self.kv.get(key)
        try:
            flags = int(q.get("flags", entry.flags if entry else 0))
            cas = int(q["cas"]) if "cas" in q else None
        except ValueError:
            return web.Response(text="invalid cas or flags", status=400)
        if cas is not None:
            # cas=0: only create; else the key's ModifyIndex must match.
            if (cas == 0 and entry is not None) or (
                cas != 0 and (entry is None or entry.modify_index != cas)):
                return self._json(False)
        if "acquire" in q:
            sid = q["acquire"]
            if sid not in self.sessions:
                return web.Response(text=f"invalid session {sid!r}", status=500)
            if entry is not None and entry.session not in (None, sid):
                return self._json(False)
            if entry is not None and entry.session is None and (
                    self.clock() < entry.lock_delay_until):
                return self._json(False)
            self._bump()
            if entry is None:
                entry = self.kv[key] = _Key(value, flags, self.index, self.index)
            else:
                entry.value, entry.flags, entry.modify_index = value, flags, self.index
            if entry.session != sid:
                entry.lock_index += 1
            entry.session = sid
            return self._json(True)
        if "release" in q:
            sid = q["release"]
            if entry is None or entry.session != sid:
                return self._json(False)
            self._bump()
            entry.value, entry.flags, entry.modify_index, entry.session = (
                value, flags, self.index, None)
            return self._json(True)
        self._bump()
        if entry is None:
            self.kv[key] = _Key(value, flags, self.index, self.index)
        else:
            entry.value, entry.flags, entry.modify_index = value, flags, self.index
        return self._json(True)

    async def kv_delete(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        q = request.query
        if "cas" in q:
            entry = self.kv.get(key)
            if entry is None or str(entry.modify_index) != q["cas"]:
                return self._json(False)
        doomed = [k for k in self.kv if k.startswith(key)] if "recurse" in q else (
            [key] if key in self.kv else [])
        for k in doomed:
            del self.kv[k]
        self._bump()
        return self._json(True)

    # -- sessions ------------------------------------------------------------------------
    def _session_json(self, s: _Session) -> dict[str, Any]:
        return {
            "ID": s.id, "Name": s.name, "Node": NODE, "Behavior": s.behavior,
            "TTL": f"{s.ttl:g}s" if s.ttl else "", "LockDelay": int(s.lock_delay * 1e9),
            "CreateIndex": s.create_index, "ModifyIndex": s.create_index, "NodeChecks":
            ["serfHealth"],
        }

    async def session_create(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = _lower_keys(json.loads(text)) if text.strip() else {}
            ttl = parse_duration(body["ttl"]) if body.get("ttl") else None
            lock_delay = parse_duration(body.get("lockdelay", "15s"))
        except (ValueError, TypeError):
            return web.Response(text="Request decode failed", status=400)
        behavior = str(body.get("behavior") or "release")
        if behavior not in ("release", "delete"):
            return web.Response(text=f"Invalid Behavior setting '{behavior}'", status=400)
        if ttl is not None and not 10 <= ttl <= 86400:
            return web.Response(text="Invalid Session TTL", status=400)
        self._bump()
        sid = str(uuid.uuid4())
        self.sessions[sid] = _Session(
            id=sid, name=str(body.get("name") or ""), ttl=ttl, behavior=behavior,
            lock_delay=lock_delay, deadline=self.clock() + ttl if ttl else None,
            create_index=self.index,
        )
        return self._json({"ID": sid})

    def _invalidate(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        for key, entry in list(self.kv.items()):
            if entry.session == sid:
                if session.behavior == "delete":
                    del self.kv[key]
                else:
                    entry.session = None
                    entry.lock_delay_until = self.clock() + session.lock_delay

    async def session_destroy(self, request: web.Request) -> web.Response:
        self._invalidate(request.match_info["id"])
        self._bump()
        return self._json(True)

    async def session_renew(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.Response(text="Session id not found", status=404)
        if session.ttl:
            session.deadline = self.clock() + session.ttl
        return self._json([self._session_json(session)])

    async def session_info(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        return self._json([self._session_json(session)] if session else [])
