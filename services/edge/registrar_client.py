"""The edge's client of the registrar service (gRPC `sipmesh.registrar.v1.Registrar`).

Where the registrars are: a fixed `host:port` list (`[edge] registrar`), or else every
passing instance of service `registrar` in discovery, read from the `grpc` entry of its
metadata and kept current by a watch task.  Calls go round-robin; Lookup and
GetCredentials are idempotent and move to the next registrar when one is unavailable,
Save is never retried (it may have taken effect).  Every call has a deadline.

Credentials (HA1 hashes) are cached for `credentials_ttl` seconds so a phone's periodic
REGISTER costs one Save; a failed verification against a cached entry fetches it again
(a password changed with `sipmesh user passwd` is seen at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc


@dataclass(frozen=True, slots=True)
class Credentials:
    ha1: str
    ha1_sha256: str

    def for_algorithm(self, algorithm: str) -> str | None:
        name = algorithm.upper().removesuffix("-SESS")
        if name == "MD5":
            return self.ha1
        if name == "SHA-256":
            return self.ha1_sha256
        return None


@dataclass(frozen=True, slots=True)
class LookupBranch:
    uri: str
    next_hop: str
    q: float
    federated: bool = False  # to another point of presence (federation-cachedb)


class RegistrarUnavailable(Exception):
    """No registrar could be reached."""


class RegistrarClient:
    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "registrar", timeout: float = 1.0,
                 credentials_ttl: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 register_auth: bool = True, algorithms: Sequence[str] = ("MD5",),
                 max_latency_us: int = 0, by_latency: bool = False) -> None:
        self.static = [a for a in addresses if a]
        self.registry = registry
        self.service = service
        self.timeout = timeout
        self.credentials_ttl = credentials_ttl
        self.clock = clock
        self.register_auth = register_auth  # challenge REGISTER (default routing reads it)
        self.algorithms = tuple(algorithms)  # offered in 401/407, preferred first
        self.max_latency_us = max_latency_us
        self.by_latency = by_latency
        self.log = structlog.get_logger("edge.registrar")
        self.targets: list[str] = list(self.static)
        self._stubs: dict[str, tuple[grpc.aio.Channel, Any]] = {}
        self._rr = itertools.count()
        self._cache: dict[tuple[str, str], tuple[Credentials | None, float]] = {}
        self._watcher: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """A registrar is known (configured, or registered in discovery)."""
        self._ensure_watch()
        return bool(self.targets)

    def _ensure_watch(self) -> None:
        if self._watcher is not None or self.static or self.registry is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watcher = loop.create_task(self._watch())

    async def start(self) -> None:
        """Reads discovery once (so the first request already knows the registrars)."""
        if self.static or self.registry is None:
            return
        with contextlib.suppress(Exception):
            self._set(await self.registry.healthy(self.service))
        self._ensure_watch()

    def _set(self, instances: Sequence[Any]) -> None:
        self.targets = sorted({i.meta["grpc"] for i in instances if i.meta.get("grpc")})

    async def _watch(self) -> None:
        from shared.discovery.port import watch

        while True:
            try:
                async for instances in watch(self.registry, self.service, wait=10.0):
                    self._set(instances)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # registry away: keep the last list, retry
                self.log.warning("registrar_watch_failed", error=repr(exc))
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()

    def _stub(self, target: str) -> Any:
        found = self._stubs.get(target)
        if found is None:
            # No deadline interceptor (grpc.aio interceptors cost ~40 us per call on this
            # hot path): every call below passes its own timeout instead.
            channel = grpc.aio.insecure_channel(
                target, options=[("grpc.keepalive_time_ms", 30_000)])
            found = (channel, pb_grpc.RegistrarStub(channel))
            self._stubs[target] = found
        return found[1]

    def _order(self) -> list[str]:
        targets = list(self.targets)
        if not targets:
            raise RegistrarUnavailable("no registrar known")
        start = next(self._rr) % len(targets)
        return targets[start:] + targets[:start]

    async def _call(self, name: str, request: Any, *, retry: bool) -> Any:
        last: Exception | None = None
        for target in self._order():
            try:
                return await getattr(self._stub(target), name)(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                last = exc
                if not retry or exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                                   grpc.StatusCode.DEADLINE_EXCEEDED):
                    break
        raise RegistrarUnavailable(str(last))

    # -- the three calls -----------------------------------------------------------------
    async def save(self, message: bytes, host: str, port: int, transport: str,
                   socket: str) -> tuple[int, str, list[tuple[str, str]]]:
        reply = await self._call("Save", pb.SaveRequest(
            message=message, source_host=host, source_port=port, transport=transport,
            socket=socket), retry=False)
        return reply.status, reply.reason, [(h.name, h.value) for h in reply.headers]

    async def lookup(self, aor: str, method: str, *, federated: bool = False
                     ) -> tuple[int, list[LookupBranch]]:
        """Bindings of `aor` for `method`; the latency options are the client's
        (`max_latency_us`, `by_latency`: OpenSIPS lookup flags yNNN and Y); `federated`
        (flag g) adds branches to the other points of presence holding the AOR."""
        reply = await self._call("Lookup", pb.LookupRequest(
            aor=aor, method=method, max_latency_us=self.max_latency_us,
            by_latency=self.by_latency, federated=federated), retry=True)
        return reply.status, [LookupBranch(b.uri, b.next_hop, b.q, b.federated)
                              for b in reply.branches]

    async def credentials(self, username: str, domain: str, *,
                          fresh: bool = False) -> Credentials | None:
        key = (username, domain.lower())
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and not fresh and cached[1] > now:
            return cached[0]
        reply = await self._call("GetCredentials", pb.CredentialsRequest(
            username=username, domain=domain.lower()), retry=True)
        creds = Credentials(reply.ha1, reply.ha1_sha256) if reply.found else None
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = (creds, now + self.credentials_ttl)
        return creds
