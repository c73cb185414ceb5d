"""``python -m gateway``: the MI gateway as a process (started by ``sipmesh up``)."""

from __future__ import annotations

import sys

import structlog

from gateway.app import serve
from gateway.config import GatewayConfig
from shared.config import EXIT_CONFIG, ConfigError, load_section
from shared.discovery import DiscoveryConfig
from shared.events.config import EventsConfig
from shared.service import configure_logging, run_service
from shared.service.entry import exit_if_version
from shared.service.parent import die_with_parent_from_env


def main() -> int:
    exit_if_version("gateway")  # `--version`: this service's own version, nothing started
    die_with_parent_from_env()  # started by `sipmesh up`: end with it, even on its SIGKILL
    try:
        cfg = load_section(GatewayConfig, "gateway")
        discovery = load_section(DiscoveryConfig, "discovery")
        events = load_section(EventsConfig, "events")
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging("gateway", level=cfg.log_level, json=cfg.log_json)
    try:
        run_service(lambda: serve(cfg, discovery, events=events), name="gateway")
    except (RuntimeError, OSError) as exc:
        structlog.get_logger("gateway").error("gateway_failed", error=str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
