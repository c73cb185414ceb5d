"""The `[media]` section (file via `$SIPMESH_CONFIG`, or `SIPMESH_MEDIA_<FIELD>`).

OpenSIPS rtpengine module parameters keep their names where they exist: `rtpengine_sock`
(static sets, `"1 == udp:h:p=2 udp:h2:p2"`), `rtpengine_tout` (seconds to wait for one
transmission), `rtpengine_retr` (transmissions per request), `rtpengine_disable_tout`
(seconds an instance that did not answer stays disabled before it is pinged again),
`db_url` / `db_table` (the provisioned sets; default: an embedded SQLite file).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.media.sets import SetError, parse_set_definition
from services.media.store import default_location


@dataclass(frozen=True)
class MediaConfig:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    grpc_advertise: str = ""  # host the edges dial (default: grpc_host)
    http_host: str = "127.0.0.1"
    http_port: int = 0
    http_advertise: str = ""  # host registered in discovery (default: http_host or 127.0.0.1)
    http_token: str = ""  # bearer token of MI (required when http_host is not loopback)
    # Graceful drain on SIGTERM: after leaving discovery, keep serving for drain_delay s
    # (clients see it gone and move away), then stop taking RPCs and give those in flight
    # drain_grace s (the MI/HTTP requests in flight as well), then close and exit.
    drain_delay: float = 0.5
    drain_grace: float = 2.0
    rtpengine_sock: tuple[str, ...] = ()  # static sets, besides the database's
    db_url: str = ""  # SQLite file or postgresql:// DSN (default under $XDG_STATE_HOME)
    db_table: str = "rtpengine"
    rtpengine_tout: float = 1.0
    rtpengine_retr: int = 5
    rtpengine_disable_tout: float = 60.0
    ping_interval: float = 0.0  # > 0: ping enabled instances this often (s), not only on use
    recheck_tick: float = 1.0  # how often disabled instances are looked at (s)
    call_record_max_age: float = 86400.0  # an unfinished call's record is purged after (s)
    log_level: str = "info"
    uvloop: bool = True

    def validate(self) -> None:
        for text in self.rtpengine_sock:
            try:
                parse_set_definition(text)
            except SetError as exc:
                raise ValueError(f"[media] rtpengine_sock: {exc}") from None
        if self.rtpengine_tout <= 0 or self.rtpengine_retr < 1:
            raise ValueError("[media] rtpengine_tout must be > 0 and rtpengine_retr >= 1")
        if self.rtpengine_disable_tout < 0:
            raise ValueError("[media] rtpengine_disable_tout must not be negative")

    @property
    def store_location(self) -> str:
        return self.db_url or default_location()
