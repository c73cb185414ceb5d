"""Small operator views of a running edge worker: ``list_tcp_conns`` and the SIP
transaction time histogram.

``list_tcp_conns`` answers as OpenSIPS 3 does (``{"Connections": [{"ID", "Type", "State",
"Remote", "Local", "Lifetime"}]}``; ``State`` 0 is OpenSIPS's ``S_CONN_OK``, ``Lifetime``
the local time the connection is closed if it stays silent, ``[edge] tcp_idle_timeout``
after its last message). Through the gateway every edge worker answers (a connection
belongs to the worker that accepted or opened it) and the lists are joined.

``sipmesh_edge_transaction_seconds{method,class}``: for each request the edge handles
statefully, from its arrival to its final response leaving (forwarded and answered, or
answered by the edge itself: a statelessly answered request is not a transaction);
``class`` is the final status class (``2xx`` ... ``6xx``), ``method`` one of the RFC 3261
/ 3265 / 3428 / 3515 / 3903 / 6086 methods, else ``other``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram

if TYPE_CHECKING:
    from services.edge.app import EdgeApp
    from shared.service.runtime import ServiceRuntime

METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
                     "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           32.0, 180.0)


def tcp_connections(app: EdgeApp) -> dict[str, Any]:
    pool = app.tcp
    now_mono = pool.now()
    now_wall = time.time()
    idle = pool.limits.idle_timeout
    out = []
    for conn in sorted(pool.by_id.values(), key=lambda c: c.id):
        local = ""
        if conn.transport is not None:
            sock = conn.transport.get_extra_info("sockname")
            if sock:
                local = f"{sock[0]}:{sock[1]}"
        closes = now_wall + (conn.last_activity + idle - now_mono)
        out.append({"ID": conn.id, "Type": conn.interface.transport, "State": 0,
                    "Remote": f"{conn.peer[0]}:{conn.peer[1]}", "Local": local,
                    "Lifetime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(closes))})
    return {"Connections": out}


def attach_operator_views(runtime: ServiceRuntime, app: EdgeApp) -> None:
    histogram = Histogram(
        "sipmesh_edge_transaction_seconds",
        "SIP transaction time at the edge: request in to final response out",
        ["method", "class"], buckets=BUCKETS, registry=runtime.metrics)

    children: dict[tuple[str, int], Any] = {}  # labels() costs more than observe()

    def observe(method: str, status: int, started: float) -> None:
        loop = app._loop
        if loop is None:
            return
        key = (method, status // 100)
        child = children.get(key)
        if child is None:
            child = histogram.labels(method if method in METHODS else "other",
                                     f"{status // 100}xx")
            if len(children) < 256:  # bounded: made-up methods share "other"
                children[key] = child
        child.observe(max(0.0, loop.time() - started))

    app.on_transaction = observe

    @runtime.command("list_tcp_conns", fanout=True, doc="the TCP connections of this edge")
    async def list_tcp_conns() -> Any:
        return tcp_connections(app)
