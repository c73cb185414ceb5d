"""The `[registrar]` section (file via `$SIPMESH_CONFIG`, or `SIPMESH_REGISTRAR_<FIELD>`).

Cluster membership is `[registrar.cluster]` (shared.cluster.ClusterConfig), read only when
`cluster_mode` is not `none`.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.registrar.location import LocationConfig
from services.registrar.subscribers import default_location

CLUSTER_MODES = ("none", "full-sharing", "federation-cachedb", "full-sharing-cachedb",
                 "sql-only")
CLUSTERED = ("full-sharing", "federation-cachedb", "full-sharing-cachedb")
RESTART_PERSISTENCY = ("", "none", "load-from-sql", "sync-from-cluster")
SQL_WRITE_MODES = ("", "none", "write-through", "write-back")


@dataclass(frozen=True)
class RegistrarConfig:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    grpc_advertise: str = ""  # host the edges dial (default: grpc_host, or 127.0.0.1)
    http_host: str = "127.0.0.1"
    http_port: int = 0
    http_advertise: str = ""  # host registered in discovery (default: http_host or 127.0.0.1)
    http_token: str = ""  # bearer token of MI (required when http_host is not loopback)
    store: str = ""  # subscribers: SQLite file (default under $XDG_STATE_HOME) or postgresql://
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 0
    max_contacts: int = 0
    timer_interval: float = 1.0  # expiry sweep (s)
    cluster_mode: str = "none"  # one of CLUSTER_MODES (OpenSIPS usrloc cluster_mode)
    # federation-cachedb / full-sharing-cachedb: the Redis holding the AOR directory or
    # every binding; keys under cachedb_prefix (several deployments can share one Redis).
    cachedb_url: str = "redis://127.0.0.1:6379/0"
    cachedb_prefix: str = "sipmesh:ul:"
    # federation-cachedb: a point of presence whose registrars stopped marking it alive
    # for this long gets no federated branch from the others (s).
    cachedb_home_ttl: float = 10.0
    # OpenSIPS restart_persistency / sql_write_mode; the SQL location table lives in
    # `db_url` (default: the subscribers' database).  restart_persistency "" = by mode
    # (`persistency`): load-from-sql in mode none, so a restarted registrar comes back with
    # every binding it acknowledged.  sql_write_mode "" = write-through with load-from-sql
    # (a 200 leaves once its binding is stored), else none.
    restart_persistency: str = ""
    sql_write_mode: str = ""
    write_interval: float = 60.0
    db_url: str = ""
    # The SQLite location table's PRAGMA synchronous (WAL): "normal" survives a killed
    # process (what the data-safety promise asks), "full" fsyncs every commit so the last
    # transactions survive an OS crash or power cut too, at an fsync per commit.
    sqlite_synchronous: str = "normal"
    # NAT pinging (nathelper): OPTIONS every natping_interval s (0 = off) to natted
    # bindings (all with ping_nated_only = false); max_pings_lost misses in a row remove a
    # binding; latency events per latency_event_min_us / latency_event_min_us_delta.
    natping_interval: float = 0.0
    ping_nated_only: bool = True
    ping_threshold: float = 3.0
    max_pings_lost: int = 3
    latency_event_min_us: int = 0
    latency_event_min_us_delta: int = 0
    natping_host: str = "127.0.0.1"
    table: str = "location"
    log_level: str = "info"
    uvloop: bool = True
    # Graceful drain on SIGTERM: after leaving discovery, keep serving for drain_delay s
    # (edges watching discovery move their new calls away), then stop taking RPCs and give
    # those in flight drain_grace s, then flush pending writes and exit.
    drain_delay: float = 0.5
    drain_grace: float = 2.0

    def validate(self) -> None:
        if self.cluster_mode not in CLUSTER_MODES:
            raise ValueError(f"[registrar] cluster_mode must be one of {', '.join(CLUSTER_MODES)}")
        if self.restart_persistency not in RESTART_PERSISTENCY:
            raise ValueError("[registrar] restart_persistency must be one of "
                             f"{', '.join(RESTART_PERSISTENCY)}")
        if self.sql_write_mode not in SQL_WRITE_MODES:
            raise ValueError("[registrar] sql_write_mode must be none, write-through or "
                             "write-back")
        if self.sqlite_synchronous not in ("normal", "full"):
            raise ValueError("[registrar] sqlite_synchronous must be normal or full")
        if self.persistency == "sync-from-cluster" and \
                self.cluster_mode not in ("full-sharing", "federation-cachedb"):
            raise ValueError("[registrar] sync-from-cluster needs cluster_mode full-sharing "
                             "or federation-cachedb")
        if self.cluster_mode in ("federation-cachedb", "full-sharing-cachedb") and \
                not self.cachedb_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("[registrar] cachedb_url must be a redis:// URL")
        if self.cachedb_home_ttl <= 0:
            raise ValueError("[registrar] cachedb_home_ttl must be positive")
        if self.min_expires < 0 or self.default_expires < 0 or self.max_expires < 0:
            raise ValueError("[registrar] expires values must not be negative")
        if self.max_expires and self.max_expires < self.min_expires:
            raise ValueError("[registrar] max_expires is below min_expires")

    @property
    def location(self) -> LocationConfig:
        return LocationConfig(self.default_expires, self.min_expires, self.max_expires,
                              self.max_contacts)

    @property
    def store_location(self) -> str:
        return self.store or default_location()

    @property
    def persistency(self) -> str:
        """restart_persistency, or the mode's default: `none` reloads its table from SQL,
        full-sharing and federation-cachedb sync from the cluster, and the modes whose
        table is shared (sql-only, full-sharing-cachedb) need nothing."""
        if self.restart_persistency:
            return self.restart_persistency
        return {"none": "load-from-sql", "full-sharing": "sync-from-cluster",
                "federation-cachedb": "sync-from-cluster"}.get(self.cluster_mode, "none")

    @property
    def write_mode(self) -> str:
        if self.sql_write_mode:
            return self.sql_write_mode
        return "write-through" if self.persistency == "load-from-sql" else "none"
