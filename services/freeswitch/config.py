"""The `[freeswitch]` section (file via `$SIPMESH_CONFIG`, or `SIPMESH_FREESWITCH_<FIELD>`).

Boxes come from `boxes` (fs:// URLs, services/freeswitch/boxes.py) and from the store's
table (`store`, table `table`, OpenSIPS freeswitch_scripting's columns plus `grp` and
`sip_uri`); MI `fs_add` / `fs_remove` edit the table, `fs_reload` reads it again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from services.freeswitch.balancing import POLICIES
from services.freeswitch.boxes import BoxSpec, BoxUrlError, parse_fs_url


def default_store() -> str:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return str(base / "sipmesh" / "freeswitch.sqlite")


@dataclass(frozen=True)
class FreeswitchConfig:
    boxes: tuple[str, ...] = ()  # fs://[user]:password@host[:port][?...] (boxes.py)
    events: tuple[str, ...] = ()  # subscribed on every box, besides each box's own
    store: str = ""  # SQLite file (default under $XDG_STATE_HOME) or postgresql:// DSN
    table: str = "freeswitch"
    use_store: bool = True  # false: config boxes only, fs_add/fs_remove refused
    # OpenSIPS freeswitch modparams (seconds here): event_heartbeat_interval is what the
    # boxes' own event-heartbeat-interval is set to (FreeSWITCH's default: 20 s); a box
    # silent for heartbeat_timeout (0: 2.5 x the interval) is stale and redialled.
    heartbeat_interval: float = 20.0
    heartbeat_timeout: float = 0.0
    connect_timeout: float = 5.0  # esl_connect_timeout
    command_timeout: float = 5.0  # esl_cmd_timeout
    job_timeout: float = 60.0  # how long a bgapi result is waited for
    backoff_initial: float = 0.5  # redial delays: doubling from here...
    backoff_max: float = 10.0  # ...up to here
    # Dispatching calls (the edge's ctx.freeswitch.select): policy `weight` (dispatcher)
    # or `load` (load_balancer), and the dispatcher's max_freeswitch_weight.
    policy: str = "weight"
    max_weight: float = 100.0
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    grpc_advertise: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 0
    http_advertise: str = ""  # host registered in discovery (default: http_host or 127.0.0.1)
    http_token: str = ""  # bearer token of MI (required when http_host is not loopback)
    # Graceful drain on SIGTERM: after leaving discovery, keep serving for drain_delay s
    # (clients see it gone and move away), then stop taking RPCs and give those in flight
    # drain_grace s (the MI/HTTP requests in flight as well), then close and exit.
    drain_delay: float = 0.5
    drain_grace: float = 2.0
    # Rolling restart (services/freeswitch/handover.py): a bridge started while another
    # runs keeps its events until that one hands over; if none comes, it takes over once
    # the other has been gone from discovery this long (its events then at least once).
    handover_timeout: float = 10.0
    log_level: str = "info"
    uvloop: bool = True

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"[freeswitch] policy must be one of {', '.join(POLICIES)}")
        for name in ("heartbeat_interval", "connect_timeout", "command_timeout",
                     "job_timeout", "backoff_initial", "backoff_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"[freeswitch] {name} must be positive")
        if self.heartbeat_timeout < 0:
            raise ValueError("[freeswitch] heartbeat_timeout must not be negative")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("[freeswitch] backoff_max is below backoff_initial")
        self.box_specs()

    @property
    def stale_after(self) -> float:
        return self.heartbeat_timeout or 2.5 * self.heartbeat_interval

    @property
    def store_location(self) -> str:
        return self.store or default_store()

    def box_specs(self) -> list[BoxSpec]:
        specs: list[BoxSpec] = []
        seen: set[str] = set()
        for url in self.boxes:
            try:
                spec = parse_fs_url(url, source="config")
            except BoxUrlError as exc:
                raise ValueError(f"[freeswitch] boxes: {exc}") from None
            if spec.id in seen:
                raise ValueError(f"[freeswitch] boxes: {spec.id} is listed twice")
            seen.add(spec.id)
            specs.append(spec)
        return specs
