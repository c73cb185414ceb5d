"""The ``[gateway]`` configuration section."""

from __future__ import annotations

import dataclasses

DEFAULT_PORT = 8888


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and how it calls services.

    ``host``/``port`` is the bind; ``advertise`` the host other processes reach it at
    (registered in discovery; default: ``host``, or 127.0.0.1 for a wildcard bind).
    ``token`` is the bearer token clients must send; it is mandatory when ``host`` is not a
    loopback address (the gateway refuses to start otherwise). ``service_token`` is sent to
    services whose MI endpoint requires one. ``call_timeout`` bounds each call to a service.
    ``console`` serves the live web console at ``/`` (same token rule as the MI), polling
    the mesh every ``console_interval`` seconds while a page is open.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    advertise: str = ""
    path: str = "/mi"
    token: str = ""
    service_token: str = ""
    call_timeout: float = 3.0
    drain_timeout: float = 5.0
    # Graceful drain on SIGTERM: after leaving discovery keep answering drain_delay s (/ready
    # is 503 "draining", so a load balancer moves away), then give the MI requests in
    # flight drain_grace s.
    drain_delay: float = 0.5
    drain_grace: float = 2.0
    log_level: str = "info"
    log_json: bool = False
    console: bool = True
    console_interval: float = 1.0
