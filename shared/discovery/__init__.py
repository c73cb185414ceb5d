"""Service discovery: one port, three backends.

* :mod:`.port` -- the :class:`ServiceRegistry` protocol and :class:`Instance`;
* :mod:`.memory` -- in-process, TTL semantics on an injectable clock;
* :mod:`.embedded` -- that registry served over loopback HTTP by ``sipmesh up``, and its client;
* :mod:`.consul_backend` -- Consul via py-consul's asyncio client (TTL checks, blocking queries);
* :mod:`.testing.fake_consul` -- the fake Consul agent the Consul backend is tested against.
"""

from shared.discovery.config import DiscoveryConfig, open_registry
from shared.discovery.port import CRITICAL, PASSING, Instance, RegistryError, ServiceRegistry, watch

__all__ = [
    "CRITICAL",
    "PASSING",
    "DiscoveryConfig",
    "Instance",
    "RegistryError",
    "ServiceRegistry",
    "open_registry",
    "watch",
]
