"""The ``[discovery]`` configuration section and the factory that opens a backend."""

from __future__ import annotations

import dataclasses
import os

from shared.config import ConfigError
from shared.discovery.embedded import HttpRegistry
from shared.discovery.port import ServiceRegistry

DEFAULT_REGISTRY_PORT = 8710


@dataclasses.dataclass(frozen=True)
class DiscoveryConfig:
    """Where processes register. ``backend`` is ``embedded`` (the supervisor's registry at
    ``url``) or ``consul`` (the agent at ``consul_addr``, else ``$CONSUL_HTTP_ADDR``), with
    a ``ttl`` check (heartbeats) or an ``http`` check (the agent polls ``/health``)."""

    backend: str = "embedded"
    url: str = f"http://127.0.0.1:{DEFAULT_REGISTRY_PORT}"
    consul_addr: str = ""
    consul_token: str = ""
    consul_check: str = "ttl"
    ttl: float = 10.0


def open_registry(cfg: DiscoveryConfig) -> ServiceRegistry:
    """Builds the configured backend (no I/O happens until first use)."""
    if cfg.backend == "embedded":
        return HttpRegistry(cfg.url)
    if cfg.backend == "consul":
        # Imported here: py-consul pulls in requests and urllib3 (~0.1 s of CPU), which a
        # process on the embedded registry (every test mesh, `sipmesh up`) never uses.
        from shared.discovery.consul_backend import ConsulRegistry

        addr = cfg.consul_addr or os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
        return ConsulRegistry(addr, token=cfg.consul_token or None, check=cfg.consul_check,
                              http_interval=max(cfg.ttl / 3.0, 1.0))
    raise ConfigError(f"[discovery] backend must be embedded or consul, not {cfg.backend!r}")
