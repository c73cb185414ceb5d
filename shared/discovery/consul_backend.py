"""The Consul backend of the discovery port, on py-consul's asyncio client.

Registration is a Consul agent service with one check, either

* ``ttl`` (default): Consul starts TTL checks critical, so :meth:`ConsulRegistry.register`
  reports the first pass itself (the port promises "passing right after registration" on
  every backend); heartbeats are ``/v1/agent/check/pass/service:<id>``; or
* ``http``: the agent itself GETs the instance's ``health_url`` (``/health`` of the
  runtime) every ``http_interval``; the instance is critical until the first check passes,
  and a heartbeat only verifies that the agent still knows the service.

Reads are ``/v1/health/service/<name>`` (with ``?passing`` for :meth:`healthy`) and
blocking queries use ``X-Consul-Index``.

Instance metadata travels in Consul's service ``Meta`` (string values, Consul limits them
to 64 keys of 512 characters).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import consul
import consul.aio

from shared.discovery.port import CRITICAL, PASSING, Instance, RegistryError


def parse_addr(addr: str) -> tuple[str, str, int]:
    """Splits a ``CONSUL_HTTP_ADDR``-style address into (scheme, host, port)."""
    scheme = "http"
    if "://" in addr:
        scheme, addr = addr.split("://", 1)
    addr = addr.rstrip("/")
    host, _, port = addr.rpartition(":")
    if not host:
        return scheme, port or "127.0.0.1", 8500
    return scheme, host.strip("[]"), int(port)


class ConsulRegistry:
    """A :class:`~shared.discovery.port.ServiceRegistry` over a Consul agent."""

    def __init__(
        self, addr: str, token: str | None = None, *, check: str = "ttl",
        http_interval: float = 5.0,
    ) -> None:
        if check not in ("ttl", "http"):
            raise ValueError(f"consul check must be ttl or http, not {check!r}")
        self.addr = addr
        self._token = token
        self.check = check
        self.http_interval = http_interval
        self._client: consul.aio.Consul | None = None

    @property
    def description(self) -> str:
        """The backend as the services' start-up line shows it."""
        return f"consul({self.addr}, {self.check} check)"

    def _consul(self) -> consul.aio.Consul:
        # py-consul builds its aiohttp session in the constructor: create it in the loop.
        if self._client is None:
            scheme, host, port = parse_addr(self.addr)
            self._client = consul.aio.Consul(
                host=host, port=port, scheme=scheme, token=self._token, verify=False
            )
        return self._client

    @staticmethod
    def _check_id(instance_id: str) -> str:
        return f"service:{instance_id}"

    async def _guard(self, coro: Any) -> Any:
        try:
            return await coro
        except (consul.ConsulException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryError(f"consul at {self.addr}: {str(exc) or type(exc).__name__}") from exc

    async def register(self, instance: Instance, ttl: float) -> None:
        c = self._consul()
        # Consul's minimum for DeregisterCriticalServiceAfter is one minute: a process
        # killed without deregistering disappears from the catalog after that.
        if self.check == "http":
            url = instance.meta.get("health_url")
            if not url:
                raise RegistryError(f"{instance.id} has no health_url for an HTTP check")
            check = consul.Check.http(url, f"{self.http_interval:g}s", timeout="2s",
                                      deregister="1m")
        else:
            check = {**consul.Check.ttl(f"{max(ttl, 1.0):g}s"),
                     "DeregisterCriticalServiceAfter": "1m"}
        ok = await self._guard(c.agent.service.register(
            instance.service, service_id=instance.id, address=instance.address,
            port=instance.port, tags=list(instance.tags), meta=dict(instance.meta),
            check=check,
        ))
        if not ok:
            raise RegistryError(f"consul refused to register {instance.id}")
        if self.check == "ttl":
            await self.heartbeat(instance.id)

    async def deregister(self, instance_id: str) -> None:
        await self._guard(self._consul().agent.service.deregister(instance_id))

    async def heartbeat(self, instance_id: str) -> None:
        if self.check == "http":
            # The agent checks health itself; only make sure it still knows us.
            known = await self._guard(self._consul().agent.service_definition(instance_id))
            if not known:
                raise RegistryError(f"unknown instance {instance_id}")
            return
        ok = await self._guard(self._consul().agent.check.ttl_pass(self._check_id(instance_id)))
        if not ok:
            raise RegistryError(f"unknown instance {instance_id}")

    @staticmethod
    def _instance(entry: dict[str, Any]) -> Instance:
        svc = entry["Service"]
        statuses = [c.get("Status") for c in entry.get("Checks", [])]
        status = PASSING if all(s == "passing" for s in statuses) else CRITICAL
        return Instance(
            service=svc["Service"], id=svc["ID"],
            address=svc.get("Address") or entry.get("Node", {}).get("Address", ""),
            port=int(svc.get("Port") or 0), meta=dict(svc.get("Meta") or {}),
            tags=tuple(svc.get("Tags") or ()), status=status,
        )

    async def healthy(self, service: str) -> list[Instance]:
        _, entries = await self._guard(self._consul().health.service(service, passing=True))
        return sorted((self._instance(e) for e in entries or []), key=lambda i: i.id)

    async def instances(self, service: str | None = None) -> list[Instance]:
        c = self._consul()
        if service is None:
            _, names = await self._guard(c.catalog.services())
            services = sorted(n for n in (names or {}) if n != "consul")
        else:
            services = [service]
        found: list[Instance] = []
        for name in services:
            _, entries = await self._guard(c.health.service(name))
            found.extend(self._instance(e) for e in entries or [])
        return sorted(found, key=lambda i: (i.service, i.id))

    async def wait_instances(
        self, service: str, index: int, wait: float
    ) -> tuple[int, list[Instance]]:
        c = self._consul()
        kwargs: dict[str, Any] = {"passing": True}
        if index:
            kwargs.update(index=str(index), wait=f"{max(int(wait), 1)}s")
        idx, entries = await self._guard(c.health.service(service, **kwargs))
        found = sorted((self._instance(e) for e in entries or []), key=lambda i: i.id)
        return int(idx), found

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
