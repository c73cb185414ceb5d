"""The `[presence]` section (file via `$SIPMESH_CONFIG`, or `SIPMESH_PRESENCE_<FIELD>`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.presence.store import default_db


@dataclass(frozen=True)
class PresenceConfig:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    grpc_advertise: str = ""  # host the edges dial (default: grpc_host)
    http_host: str = "127.0.0.1"
    http_port: int = 0
    http_advertise: str = ""
    http_token: str = ""  # bearer token of MI (required when http_host is not loopback)
    # Graceful drain on SIGTERM: after leaving discovery, keep serving for drain_delay s
    # (clients see it gone and move away), then stop taking RPCs and give those in flight
    # drain_grace s (the MI/HTTP requests in flight as well), then close and exit.
    drain_delay: float = 0.5
    drain_grace: float = 2.0
    # Publications and subscriptions (SQLite file or postgresql:// DSN); default a SQLite
    # file under $XDG_STATE_HOME/sipmesh; "none" keeps them in memory only.
    db_url: str = ""
    table: str = "presence"
    min_expires: int = 10  # below: 423 Interval Too Brief (PUBLISH and SUBSCRIBE)
    max_expires_publish: int = 3600  # OpenSIPS max_expires_publish
    max_expires_subscribe: int = 3600  # OpenSIPS max_expires_subscribe
    default_expires: int = 3600  # RFC 3856 §6.4 / RFC 3903 when Expires is absent
    # Who may watch whom: allow (everyone), domain (same domain), list (only the watchers
    # named in `allowed`: "presentity=watcher1|watcher2" entries, user@domain).
    policy: str = "allow"
    allowed: tuple[str, ...] = ()
    # OpenSIPS 2.4's non-federated cluster (`sipmesh up --nodes N` sets it): the nodes share
    # the store (one PostgreSQL, or one SQLite file on one host) and a subscription's
    # NOTIFYs come from the node where its sharing tag is active ([presence.cluster]
    # sharing_tags); `sharing_tag` is the tag of subscriptions routing gave none.
    cluster: bool = False
    sharing_tag: str = "presence"
    # "shared-db" (above) or "federation" (OpenSIPS 2.4 cluster_federation_mode=1: each node
    # its own store and watchers, publications broadcast, on-demand queries).
    cluster_mode: str = "shared-db"
    edge_service: str = "edge"  # where the edges' Uac API is found (NOTIFYs)
    # s to wait for a NOTIFY's final response: RFC 3261 Timer F (64*T1), after which a
    # NOTIFY counts as timed out and ends its subscription (RFC 6665 §4.2.2).
    uac_timeout: float = 32.0
    timer_interval: float = 1.0  # s between expiry runs (OpenSIPS clean_period)
    log_level: str = "info"
    uvloop: bool = True

    def validate(self) -> None:
        if self.cluster_mode not in ("shared-db", "federation"):
            raise ValueError("[presence] cluster_mode must be shared-db or federation")
        if self.policy not in ("allow", "domain", "list"):
            raise ValueError("[presence] policy must be allow, domain or list")
        if not 0 < self.min_expires <= min(self.max_expires_publish,
                                           self.max_expires_subscribe):
            raise ValueError("[presence] min_expires must be positive and below the maxima")
        if self.timer_interval <= 0 or self.uac_timeout <= 0:
            raise ValueError("[presence] timer_interval and uac_timeout must be positive")
        for entry in self.allowed:
            if "=" not in entry:
                raise ValueError(f"[presence] allowed entry {entry!r}: presentity=w1|w2")

    def allowed_map(self) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for entry in self.allowed:
            who, _, watchers = entry.partition("=")
            out[who.strip().lower()] = frozenset(
                w.strip().lower() for w in watchers.split("|") if w.strip())
        return out

    @property
    def location(self) -> str:
        return self.db_url or default_db()
