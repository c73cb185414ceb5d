"""The common service runtime (HTTP health/metrics/MI, discovery, graceful stop) and the
``sipmesh up`` supervisor. See :mod:`.runtime` for what a service gets and the README's
mesh section for a ten-line example."""

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
