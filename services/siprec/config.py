"""The `[siprec]` section (file via `$SIPMESH_CONFIG`, or `SIPMESH_SIPREC_<FIELD>`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SiprecConfig:
    http_host: str = "127.0.0.1"
    http_port: int = 0
    http_advertise: str = ""  # host registered in discovery
    http_token: str = ""  # bearer token of MI (required when http_host is not loopback)
    # Graceful drain on SIGTERM: after leaving discovery, keep serving for drain_delay s
    # (clients see it gone and move away), then stop taking RPCs and give those in flight
    # drain_grace s (the MI/HTTP requests in flight as well), then close and exit.
    drain_delay: float = 0.5
    drain_grace: float = 2.0
    media: tuple[str, ...] = ()  # fixed media broker gRPC addresses (else discovery)
    media_service: str = "media"
    media_timeout: float = 6.0
    edge_service: str = "edge"  # whose Uac API sends the INVITE/BYE to the SRS
    # s to wait for the SRS's final answer; 0: the edge's INVITE transaction decides
    # (Timer B, 64 x T1): a shorter wait can leave the edge retransmitting to an SRS that
    # is given up on, and a late 2xx would open a session nobody ends.
    uac_timeout: float = 0.0
    skip_failover_codes: tuple[int, ...] = (486, 603)  # OpenSIPS skip_failover_codes
    user_agent: str = "SipMesh-SRC"
    # The recordings in progress: a SQLite file (default under $XDG_STATE_HOME/sipmesh),
    # a postgresql:// DSN (several recorders share it), or "none" (memory only: a
    # restart loses them, and a shutdown ends them).
    db_url: str = ""
    db_table: str = "siprec"
    check_interval: float = 30.0  # s between checks for recordings whose call is gone
    log_level: str = "info"

    def validate(self) -> None:
        if self.uac_timeout < 0 or self.media_timeout <= 0:
            raise ValueError("[siprec] uac_timeout must be >= 0 and media_timeout > 0")
        for code in self.skip_failover_codes:
            if not 300 <= int(code) <= 699:
                raise ValueError(f"[siprec] skip_failover_codes: {code} is not a failure")
