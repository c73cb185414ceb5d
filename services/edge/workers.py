"""The edge's multi-process supervisor (`[edge] workers > 1`).

`supervise` binds every `[edge].listen` socket once with SO_REUSEPORT to fix the ports,
starts that many worker processes (`python -m services.edge --private-port`, each one an
`EdgeApp` in its own runtime) sharing them, forwards SIGTERM/SIGINT and waits. A worker
gets SIGTERM when the supervisor dies, however it dies (`PR_SET_PDEATHSIG`, or a watch
of its parent pid where Linux's prctl is missing: `shared.service.parent`), so a
supervisor killed with SIGKILL leaves no worker holding the ports.  The workers
share what a client may carry from one to another: the nonce secret (a challenge from one
is answered to another), the Record-Route key, and the nonce-count table all of them map
(`services.edge.nonce_counts`), so a replayed digest is refused by every worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from services.edge.config import EdgeConfig
from services.edge.nonce_counts import NonceCountsError, SharedNonceCounts, create_segment
from services.edge.transports import bind_socket
from shared.service.parent import PARENT_PID_ENV
from shared.service.say import say

# Set by `supervise` for its workers: the shared nonce-count table and the worker's index.
NONCE_TABLE_ENV = "SIPMESH_EDGE_NONCE_TABLE"
WORKER_INDEX_ENV = "SIPMESH_EDGE_WORKER_INDEX"


def worker_nonce_counts(env: dict[str, str]) -> SharedNonceCounts | None:
    """The supervisor's shared nonce-count table, when this process is one of its workers."""
    path = env.get(NONCE_TABLE_ENV)
    if not path:
        return None
    return SharedNonceCounts(path, int(env.get(WORKER_INDEX_ENV, "0")))



def supervise(config: EdgeConfig, config_path: str | None, rr_key: Callable[[], bytes]) -> int:
    """workers > 1: fix the ports, start the workers, forward SIGTERM, wait.

    `config_path` is the TOML file the workers read again; `rr_key` resolves the Record-Route
    key they all share (`services.edge.app.rr_secret`)."""
    listen: list[str] = []
    probes = []
    for itf in config.interfaces():
        sock = bind_socket(itf, reuse_port=True)
        port = sock.getsockname()[1]
        probes.append(sock)  # held until the workers bound, so the port stays ours
        listen.append(f"{itf.transport}:{itf.host_in_uri}:{port}")
    env = dict(os.environ)
    env["SIPMESH_EDGE_WORKERS"] = "1"
    # One nonce secret for all workers: a challenge from one is answered to another.
    env["SIPMESH_EDGE_AUTH_SECRET"] = config.auth_secret or os.urandom(32).hex()
    # One Record-Route key for all workers, resolved before `auth_secret` is drawn above.
    env["SIPMESH_EDGE_RR_SECRET"] = rr_key().decode()
    # One nonce-count table for all workers (services/edge/nonce_counts.py), so a replay
    # sent to another worker is refused too.  Each worker issues nonces from its own slots.
    try:
        table = create_segment(int(time.time()), config.workers)
    except NonceCountsError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        for sock in probes:
            sock.close()
        return 2
    env[NONCE_TABLE_ENV] = table
    # A worker dies with this process (shared/service/parent.py), even when it is killed
    # with SIGKILL and cannot forward the stop: as `sipmesh up` arms its own children.
    env[PARENT_PID_ENV] = str(os.getpid())
    cmd = [sys.executable, "-m", "services.edge", "--private-port"]
    if config_path:
        cmd += ["--config", config_path]
    for item in listen:
        cmd += ["--listen", item]
    try:
        children = [subprocess.Popen(cmd, env={**env, WORKER_INDEX_ENV: str(index)},
                                     stdout=subprocess.PIPE, text=True)
                    for index in range(config.workers)]
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()  # the worker's "edge ready" line
            if line:
                say(line.strip())
    finally:
        # A ready worker has the table mapped: the name is no longer needed, and once the
        # workers are up nothing is left in /dev/shm however the edge ends later.
        os.unlink(table)
    for sock in probes:
        sock.close()

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    # Before the ready line: whoever read it may stop us at once, and a SIGTERM landing
    # before the handler would kill this process by default and orphan the workers.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    say(f"edge workers {config.workers} ready {' '.join(listen)}")
    rc = 0
    for child in children:
        rc = rc or abs(child.wait())
    return rc
