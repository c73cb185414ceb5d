"""Real cluster nodes (``python -m examples.cluster_demo``) on loopback for the cluster tests.

A :class:`Node` is one process: started with its node id, seeds and short timers, its
``ready`` line parsed for the replication address and MI URL, its MI called over HTTP.
``kill9`` is SIGKILL; ``restart`` starts it again on the same replication port. Tests wait
on conditions with :func:`wait_until` (poll with a deadline), never on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.state import private_state
from tests.support.waiting import eventually_sync

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret"
# Short timers: ping every 0.2 s, timeout 0.3 s, 3 retries -> Down within ~1.4 s (a busy
# CI box may delay one pong past 0.3 s; four in a row would be needed to flap a link).
TIMERS = {
    "PING_INTERVAL": "0.2", "PING_TIMEOUT": "0.3", "PING_RETRIES": "3", "NODE_TIMEOUT": "1",
    "SEED_FALLBACK_INTERVAL": "0.5", "SYNC_TIMEOUT": "2",
}
DOWN_WITHIN = 0.2 + 0.3 * 4 + 1.0  # ping_interval + timeout * (retries + 1) + slack
START_TIMEOUT = 60.0  # seconds for a node to print its ready line
READY = re.compile(r"cluster-demo ready node=(\d+) repl=(\S+) mi=(\S+) pid=(\d+)")


def _pump(out: Any, lines: queue.Queue[str]) -> None:
    for line in out:
        lines.put(line)


def wait_until(cond: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """:func:`tests.support.waiting.eventually_sync`, a node still starting (or gone)
    counting as "not yet"."""
    return eventually_sync(cond, timeout, what, interval=0.05,
                           ignore=(OSError, KeyError, ValueError))


class Node:
    def __init__(self, node_id: int, workdir: Path, *, seeds: list[Node] | None = None,
                 seed: bool = False, secret: str = SECRET, members: str = "1-5",
                 extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.node_id = node_id
        self.workdir = workdir
        self.seed = seed
        self.seeds = seeds or []
        self.secret = secret
        self.members = members
        self.extra = extra or []
        self.env = env or {}
        self.listen = "127.0.0.1:0"
        self.repl = ""
        self.mi_url = ""
        self.pid = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Node:
        env = dict(os.environ)
        env.update({f"SIPMESH_DEMO_CLUSTER_{k}": v for k, v in TIMERS.items()})
        env.update({"SIPMESH_DEMO_CLUSTER_SECRET": self.secret,
                    "SIPMESH_DEMO_CLUSTER_MEMBERS": self.members,
                    "SIPMESH_LOG_LEVEL": "info"})
        private_state(env, self.workdir / f"node{self.node_id}-state")  # never ~/.local
        env.update(self.env)
        env.pop("SIPMESH_CONFIG", None)
        cmd = [sys.executable, "-m", "examples.cluster_demo", "--node-id", str(self.node_id),
               "--listen", self.listen, *self.extra]
        if self.seeds:
            cmd += ["--seeds", ",".join(f"{s.node_id}@{s.repl}" for s in self.seeds)]
        if self.seed:
            cmd.append("--seed")
        log = (self.workdir / f"node{self.node_id}.log").open("a")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        out = self.proc.stdout
        assert out is not None
        threading.Thread(target=lambda: _pump(out, lines), daemon=True).start()
        try:
            # Generous: importing grpc and protobuf took over 20 s at a load average of 14
            # on this shared 2-core box; the tests measure the cluster, not start-up.
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            self.kill9()
            raise AssertionError(f"node {self.node_id} did not start") from None
        m = READY.search(line)
        assert m, line
        self.repl, self.mi_url, self.pid = m.group(2), m.group(3), int(m.group(4))
        self.listen = self.repl  # a restart binds the same replication port
        return self

    def mi(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        req = urllib.request.Request(self.mi_url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
        if "error" in answer:
            raise ValueError(answer["error"])
        return answer["result"]

    # -- views -------------------------------------------------------------------------
    def nodes(self) -> dict[int, dict[str, Any]]:
        return {n["node_id"]: n for n in self.mi("clusterer_list")["Clusters"][0]["Nodes"]}

    def link(self, other: int) -> str:
        return str(self.nodes().get(other, {}).get("link_state", "absent"))

    def all_up(self, others: list[int]) -> bool:
        nodes = self.nodes()
        return all(nodes.get(o, {}).get("link_state") == "Up" for o in others)

    def synced(self) -> bool:
        caps = self.mi("clusterer_list_cap")["Clusters"][0]["Capabilities"]
        return all(c["state"] == "Ok" for c in caps)

    def sync_progress(self) -> dict[str, Any]:
        return dict(self.mi("clusterer_list_sync")["Clusters"][0]["Capabilities"][0])

    def count(self) -> dict[str, Any]:
        return dict(self.mi("kv_count"))

    def active(self, tag: str = "vip") -> bool:
        return any(t["Tag"] == tag and t["State"] == "active"
                   for t in self.mi("clusterer_list_shtags"))

    def stat(self, name: str) -> int:
        return int(self.mi("get_statistics", {"statistics": [name]}).get(name, 0))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.mi("demo_events") if e["event"] == name]

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self, seeds: list[Node] | None = None) -> Node:
        self.kill9()
        if seeds is not None:
            self.seeds = seeds
        return self.start()
