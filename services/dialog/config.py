"""The `[dialog]` section (file via `$SIPMESH_CONFIG`, or `SIPMESH_DIALOG_<FIELD>`).

Cluster membership is `[dialog.cluster]` (shared.cluster.ClusterConfig), read when
`cluster` is true (`sipmesh up --nodes N` sets it for every node).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.dialog.store import default_cdr_db, default_dialog_db
from services.dialog.table import TableConfig


@dataclass(frozen=True)
class DialogConfig:
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
    # OpenSIPS default_timeout: a dialog's lifetime from its answer, unless routing set one
    # (ctx.dialog.set_timeout); at the end the owner sends BYE both ways and writes the CDR.
    default_timeout: int = 43200
    early_timeout: int = 300  # an early dialog without a final reply for this long is dropped
    reserve_timeout: int = 32  # a profile place taken by routing waits this long for its INVITE
    # Restart persistence: the dialog table (SQLite file or postgresql:// DSN); default a
    # SQLite file per node under $XDG_STATE_HOME/sipmesh. "none" keeps dialogs in memory only
    # (a clustered node then gets them back from the cluster).
    db_url: str = ""
    dialog_table: str = "dialog"
    # CDRs (acc): SQLite file (default: $XDG_STATE_HOME/sipmesh/cdr.sqlite, shared by the
    # local nodes) or postgresql:// DSN; table name.
    cdr_url: str = ""
    cdr_table: str = "acc"
    cdr_delay: float = 0.0  # s the CDR waits after the call ended (late extras such as MOS)
    # Profiles known to MI before any dialog uses them (profile_get_size answers 0, not 404).
    profiles_with_value: tuple[str, ...] = ()
    profiles_no_value: tuple[str, ...] = ()
    cluster: bool = False  # replicate dialogs over [dialog.cluster] (dialog-dlg-repl)
    edge_service: str = "edge"  # where to find edges' Uac API when a dialog's own edge is gone
    uac_timeout: float = 5.0  # s to wait for a BYE's final response
    timer_interval: float = 0.1  # s between timer runs
    log_level: str = "info"
    uvloop: bool = True

    def validate(self) -> None:
        if self.default_timeout < 0 or self.early_timeout <= 0 or self.reserve_timeout <= 0:
            raise ValueError("[dialog] timeouts must be positive (default_timeout >= 0)")
        if self.cdr_delay < 0:
            raise ValueError("[dialog] cdr_delay must not be negative")
        if self.timer_interval <= 0:
            raise ValueError("[dialog] timer_interval must be positive")

    @property
    def table(self) -> TableConfig:
        return TableConfig(default_timeout=self.default_timeout,
                           early_timeout=self.early_timeout,
                           reserve_timeout=self.reserve_timeout,
                           cdr_delay_ms=int(self.cdr_delay * 1000))

    def dialog_location(self, node_id: int) -> str:
        return self.db_url or default_dialog_db(node_id)

    @property
    def cdr_location(self) -> str:
        return self.cdr_url or default_cdr_db()
