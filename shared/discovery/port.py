"""The discovery port: what a process needs to announce itself and find others.

An :class:`Instance` is one running process of a service. Registration carries a TTL: the
instance stays *passing* while it heartbeats at least once per TTL and turns *critical*
when it stops (Consul's TTL check). ``healthy`` returns passing instances only; ``instances``
returns every registered one with its health, which is what ``sipmesh status`` shows.

``wait_instances`` is a blocking query in Consul's style: it returns at once when the
registry's change index differs from ``index``, else when something changes or ``wait``
seconds pass. :func:`watch` turns that into an async iterator of snapshots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

PASSING = "passing"
CRITICAL = "critical"


@dataclasses.dataclass(frozen=True)
class Instance:
    """One registered process of a service."""

    service: str
    id: str
    address: str
    port: int
    meta: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()
    status: str = PASSING

    @property
    def passing(self) -> bool:
        return self.status == PASSING

    def to_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "id": self.id,
            "address": self.address,
            "port": self.port,
            "meta": dict(self.meta),
            "tags": list(self.tags),
            "status": self.status,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Instance:
        meta: Any = data.get("meta") or {}
        tags: Any = data.get("tags") or ()
        return cls(
            service=str(data["service"]),
            id=str(data["id"]),
            address=str(data["address"]),
            port=int(str(data["port"])),
            meta={str(k): str(v) for k, v in dict(meta).items()},
            tags=tuple(str(t) for t in tags),
            status=str(data.get("status", PASSING)),
        )


class RegistryError(RuntimeError):
    """The registry could not be reached or refused the request."""


class ServiceRegistry(Protocol):
    """Registry port implemented by the memory, embedded-HTTP and Consul backends."""

    async def register(self, instance: Instance, ttl: float) -> None:
        """Adds (or replaces) ``instance``; it is passing right after registration."""

    async def deregister(self, instance_id: str) -> None:
        """Removes the instance; unknown ids are ignored."""

    async def heartbeat(self, instance_id: str) -> None:
        """Marks the instance passing for another TTL. Raises RegistryError if unknown."""

    async def healthy(self, service: str) -> list[Instance]:
        """Passing instances of ``service``, sorted by id."""

    async def instances(self, service: str | None = None) -> list[Instance]:
        """Every registered instance (of ``service``, or of all), with its status."""

    async def wait_instances(
        self, service: str, index: int, wait: float
    ) -> tuple[int, list[Instance]]:
        """Blocking query on the passing instances of ``service`` (see module docstring)."""

    async def close(self) -> None:
        """Releases connections."""


async def watch(
    registry: ServiceRegistry, service: str, wait: float = 30.0
) -> AsyncIterator[list[Instance]]:
    """Yields the passing instances of ``service`` now and after every change."""
    index = 0
    last: list[Instance] | None = None
    while True:
        index, current = await registry.wait_instances(service, index, wait)
        if current != last:
            last = current
            yield current
