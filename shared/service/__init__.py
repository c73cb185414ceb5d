"""The common service runtime (HTTP health/metrics/MI, discovery, graceful stop) every
service process runs in. See :mod:`.runtime` for what a service gets and the README's mesh
section for a ten-line example; the ``sipmesh up`` supervisor that starts the processes is
the application's (:mod:`sipmesh.supervisor`)."""

from shared.service.logsetup import configure_logging
from shared.service.runtime import (
    RuntimeConfig,
    ServiceRuntime,
    is_loopback,
    run_service,
    server_banner,
    uptime_answer,
)
from shared.stats.registry import StatCounter as Counter
from shared.stats.registry import StatsRegistry as Statistics

__all__ = [
    "Counter",
    "RuntimeConfig",
    "ServiceRuntime",
    "Statistics",
    "configure_logging",
    "is_loopback",
    "run_service",
    "server_banner",
    "uptime_answer",
]
