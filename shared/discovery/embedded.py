"""The embedded backend: a :class:`MemoryRegistry` served over loopback HTTP.

``sipmesh up`` runs :class:`RegistryServer` in the supervisor process; every child process
talks to it with :class:`HttpRegistry`, which implements the same port. The wire format is a
small JSON API (not Consul's):

* ``PUT    /v1/instances/{id}``            body ``{"instance": {...}, "ttl": seconds}``
* ``DELETE /v1/instances/{id}``
* ``PUT    /v1/instances/{id}/heartbeat``  404 when the id is unknown
* ``GET    /v1/instances?service=&passing=1&index=&wait=``  -> ``{"index": n, "instances": []}``

Blocking reads work as Consul's: with ``index`` equal to the current one the answer waits up
to ``wait`` seconds for a change.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import web

from shared.discovery.memory import MemoryRegistry
from shared.discovery.port import Instance, RegistryError

MAX_WAIT = 300.0


class RegistryServer:
    """HTTP front of a :class:`MemoryRegistry`; bind to loopback only."""

    def __init__(self, registry: MemoryRegistry | None = None) -> None:
        self.registry = registry or MemoryRegistry()
        self.app = web.Application()
        self.app.add_routes(
            [
                web.put("/v1/instances/{id}", self._register),
                web.delete("/v1/instances/{id}", self._deregister),
                web.put("/v1/instances/{id}/heartbeat", self._heartbeat),
                web.get("/v1/instances", self._list),
                web.get("/v1/health", self._health),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Starts serving; returns the base URL (the real port when ``port`` is 0)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._reaper = asyncio.create_task(self.registry.run_reaper())
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _bad(reason: str) -> web.Response:
        return web.json_response({"error": reason}, status=400)

    async def _register(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            instance = Instance.from_json(body["instance"])
            ttl = float(body["ttl"])
        except (ValueError, KeyError, TypeError):
            return self._bad("body must be {instance: {...}, ttl: seconds}")
        if instance.id != request.match_info["id"]:
            return self._bad("instance id does not match the URL")
        try:
            await self.registry.register(instance, ttl)
        except RegistryError as exc:
            return self._bad(str(exc))
        return web.json_response(True)

    async def _deregister(self, request: web.Request) -> web.Response:
        await self.registry.deregister(request.match_info["id"])
        return web.json_response(True)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        try:
            await self.registry.heartbeat(request.match_info["id"])
        except RegistryError:
            return web.json_response({"error": "unknown instance"}, status=404)
        return web.json_response(True)

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        service = q.get("service") or None
        passing = q.get("passing") in ("1", "true")
        try:
            index = int(q.get("index", "0"))
            wait = min(float(q.get("wait", "0")), MAX_WAIT)
        except ValueError:
            return self._bad("index and wait must be numbers")
        if service is not None and index:
            index, found = await self.registry.wait_instances(service, index, wait)
        else:
            index = self.registry.index
            found = await self.registry.instances(service)
        if passing:
            found = [i for i in found if i.passing]
        return web.json_response(
            {"index": index, "instances": [i.to_json() for i in found]},
            headers={"X-Registry-Index": str(index)},
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "passing"})


class HttpRegistry:
    """Client side of the embedded registry; a ServiceRegistry over loopback HTTP."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def description(self) -> str:
        """The backend as the services' start-up line shows it."""
        return f"embedded({self.base_url})"

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily so the session binds to the running loop (aiohttp requirement).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: Any = None,
        timeout: float | None = None, allow_404: bool = False,
    ) -> Any:
        url = self.base_url + path
        try:
            async with self._http().request(
                method, url, json=json, params=params,
                timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
            ) as resp:
                if resp.status == 404 and allow_404:
                    return None
                if resp.status != 200:
                    raise RegistryError(f"registry answered {resp.status} to {method} {path}")
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            raise RegistryError(f"registry at {self.base_url} unreachable: {why}") from exc

    async def register(self, instance: Instance, ttl: float) -> None:
        await self._call(
            "PUT", f"/v1/instances/{instance.id}", json={"instance": instance.to_json(), "ttl": ttl}
        )

    async def deregister(self, instance_id: str) -> None:
        await self._call("DELETE", f"/v1/instances/{instance_id}")

    async def heartbeat(self, instance_id: str) -> None:
        path = f"/v1/instances/{instance_id}/heartbeat"
        if await self._call("PUT", path, allow_404=True) is None:
            raise RegistryError(f"unknown instance {instance_id}")

    async def healthy(self, service: str) -> list[Instance]:
        data = await self._call("GET", "/v1/instances", params={"service": service, "passing": "1"})
        return [Instance.from_json(i) for i in data["instances"]]

    async def instances(self, service: str | None = None) -> list[Instance]:
        params = {"service": service} if service else {}
        data = await self._call("GET", "/v1/instances", params=params)
        return [Instance.from_json(i) for i in data["instances"]]

    async def wait_instances(
        self, service: str, index: int, wait: float
    ) -> tuple[int, list[Instance]]:
        params = {"service": service, "passing": "1", "index": str(index), "wait": str(wait)}
        # The client timeout must outlast the server-side wait.
        data = await self._call("GET", "/v1/instances", params=params, timeout=wait + 5.0)
        return int(data["index"]), [Instance.from_json(i) for i in data["instances"]]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
