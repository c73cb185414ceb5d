"""Anycast on one machine: several edge processes on one address, the test steering packets.

Anycast routing cannot be had here, so the kernel is made to play it (research:
shared/research/wave2-testbed.md §4). Every edge node binds the anycast address (a
127.0.0.0/8 address, always local on Linux) with SO_REUSEPORT, so they form one reuseport
group; a classic-BPF program attached to the group (`SO_ATTACH_REUSEPORT_CBPF`) picks, per
datagram, the index of the socket that receives it. The program built here looks at the
last byte of the IPv4 source address: a test sends from 127.0.0.X, and X decides the node
(`AnycastGroup.steer`); every other source is spread at random over the live nodes (the
cBPF `rand` extension), which is what the load test wants.

How the group indexes work (net/core/sock_reuseport.c): a socket's index is its bind
order; when one closes (kill -9 included), the last socket moves into its slot. The
`AnycastGroup` holds index 0 itself (a control socket that binds first, so the program can
be attached before any edge runs and re-attached after a node dies), keeps the kernel's
slot table in step (`joined`, `left`) and re-attaches the program on every change. A
datagram the program cannot place lands on the control socket: `strays()` reports them
(a test asserts there are none).

Nothing needs root: a reuseport program needs no capability and 127.0.0.X needs no
address configuration. Never `connect()` a UDP socket of the group (a connected socket
bypasses the steering).

Usage (tests/integration/edge/test_edge_anycast.py):

    group = AnycastGroup("127.0.0.100", reserve_port())
    edges = start_anycast_edges(group, 3)         # nodes 1..3, clustered, listener ;anycast
    group.steer({21: 1, 41: 2})                   # 127.0.0.21 -> node 1, 127.0.0.41 -> node 2
    edges[0].kill9(); group.left(1)               # node 1 dies: its slot is compacted
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ports import reserve_port
from tests.support.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h

# classic BPF (linux/filter.h, linux/bpf_common.h)
_LD_B_ABS = 0x30  # BPF_LD | BPF_B | BPF_ABS
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_MOD_K = 0x94  # BPF_ALU | BPF_MOD | BPF_K
_ADD_K = 0x04  # BPF_ALU | BPF_ADD | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_A = 0x16  # BPF_RET | BPF_A
SKF_NET_OFF = -0x100000
SKF_AD_OFF = -0x1000
SKF_AD_RANDOM = 56
SRC_LAST_OCTET = SKF_NET_OFF + 15  # IPv4 header: source address at bytes 12..15


def steering_program(by_octet: Mapping[int, int], live_slots: int, first_slot: int = 1
                     ) -> list[tuple[int, int, int, int]]:
    """A reuseport cBPF program: source last octet in `by_octet` -> that group index;
    any other source -> a random index in [first_slot, first_slot + live_slots)."""
    prog: list[tuple[int, int, int, int]] = [(_LD_B_ABS, 0, 0, SRC_LAST_OCTET & 0xFFFFFFFF)]
    for octet, slot in sorted(by_octet.items()):
        prog.append((_JEQ_K, 0, 1, octet))
        prog.append((_RET_K, 0, 0, slot))
    prog += [
        (_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_RANDOM) & 0xFFFFFFFF),
        (_MOD_K, 0, 0, max(live_slots, 1)),
        (_ADD_K, 0, 0, first_slot),
        (_RET_A, 0, 0, 0),
    ]
    return prog


def attach(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    """setsockopt(SO_ATTACH_REUSEPORT_CBPF): the program of `sock`'s whole group."""
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


class AnycastGroup:
    """The reuseport group of one anycast address; index 0 is ours (control)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.control.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.control.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.control.bind((host, port))
        self.control.setblocking(False)
        self.slots: list[int] = [0]  # group index -> node id (0: the control socket)
        self.by_octet: dict[int, int] = {}  # source last octet -> node id
        self._apply()

    def joined(self, node: int) -> None:
        """`node` bound its socket (the next index)."""
        self.slots.append(node)
        self._apply()

    def left(self, node: int) -> None:
        """`node`'s socket closed: the kernel moved the last socket into its slot."""
        i = self.slots.index(node)
        last = self.slots.pop()
        if last != node:
            self.slots[i] = last
        self._apply()

    def steer(self, by_octet: Mapping[int, int]) -> None:
        """Datagrams from 127.0.0.<octet> go to that node (others: random)."""
        self.by_octet = dict(by_octet)
        self._apply()

    def _apply(self) -> None:
        where = {o: self.slots.index(n) for o, n in self.by_octet.items() if n in self.slots}
        attach(self.control, steering_program(where, len(self.slots) - 1))

    def strays(self) -> list[bytes]:
        """Datagrams no node received (they reached the control socket)."""
        out = []
        while True:
            try:
                out.append(self.control.recv(65535))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.control.close()


# -- edge nodes ---------------------------------------------------------------------------
@dataclass
class AnycastEdge:
    node_id: int
    proc: subprocess.Popen[str]
    http: str
    log: Path
    lines: list[str] = field(default_factory=list)

    def mi(self, method: str, params: Any = None) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": params if params is not None else {}})
        req = urllib.request.Request(f"{self.http}/mi", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())["result"]

    def stat(self, name: str) -> int:
        """Statistic `group:name` (get_statistics), e.g. tm:replicated_in."""
        return int(self.mi("get_statistics", {"statistics": [name]})[name])

    def links_up(self, others: list[int]) -> bool:
        if not others:
            return True
        nodes = self.mi("clusterer_list")["Clusters"][0]["Nodes"]
        states = {n["node_id"]: n["link_state"] for n in nodes}
        return all(states.get(o) == "Up" for o in others)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM, without waiting (:func:`stop_edges` stops several at once)."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def stop_edges(edges: Sequence[AnycastEdge]) -> None:
    """Stops the nodes together: each may spend up to 2 s flushing its buffered events to
    a gateway these meshes do not run (shared/service/runtime.py), so one by one, three
    nodes took ~6.5 s of a test's teardown instead of ~2."""
    for edge in edges:
        edge.terminate()
    for edge in edges:
        edge.stop()


# A link is Down ~2.5 s after its peer died (ping every 0.5 s, 1 s timeout, 2 retries);
# tighter timers made links flap while sipp and three edges shared two loaded cores.
CLUSTER_TIMERS = {"PING_INTERVAL": "0.5", "PING_TIMEOUT": "1.0", "PING_RETRIES": "2",
                  "NODE_TIMEOUT": "2", "SEED_FALLBACK_INTERVAL": "0.5"}


def start_anycast_edges(group: AnycastGroup, count: int, *,
                        env_extra: Mapping[str, str] | None = None,
                        profile: Path | None = None) -> list[AnycastEdge]:
    """`count` edge processes, nodes 1..count of one cluster, each listening on the
    group's address with `;anycast`; started one after the other so that node k holds
    group index k. Returns once every node sees every other one Up. `profile`: node 1
    runs under cProfile, its statistics written there when it stops (benchmarks)."""
    secret = os.urandom(8).hex()
    rr_secret = os.urandom(16).hex()
    cluster_ports = [reserve_port() for _ in range(count)]
    edges: list[AnycastEdge] = []
    try:
        for k in range(1, count + 1):
            env = dict(os.environ)
            env.pop("SIPMESH_CONFIG", None)
            env.update({
                "SIPMESH_EDGE_LISTEN": f"udp:{group.host}:{group.port};anycast",
                "SIPMESH_EDGE_RR_SECRET": rr_secret,
                "SIPMESH_EDGE_TM_REPLICATION_CLUSTER": "true",
                "SIPMESH_EDGE_CLUSTER_NODE_ID": str(k),
                "SIPMESH_EDGE_CLUSTER_LISTEN": f"127.0.0.1:{cluster_ports[k - 1]}",
                "SIPMESH_EDGE_CLUSTER_SECRET": secret,
                "SIPMESH_EDGE_CLUSTER_SEED": "true" if k == 1 else "false",
                "SIPMESH_EDGE_CLUSTER_SEEDS": ",".join(
                    f"{j}@127.0.0.1:{cluster_ports[j - 1]}" for j in range(1, count + 1)
                    if j != k),
                "PYTHONPATH": str(ROOT),
            })
            env.update({f"SIPMESH_EDGE_CLUSTER_{k2}": v for k2, v in CLUSTER_TIMERS.items()})
            env.update(env_extra or {})
            log = Path(tempfile.mkstemp(prefix=f"edge-anycast-{k}-", suffix=".log")[1])
            with log.open("wb") as err:
                python = [sys.executable]
                if profile is not None and k == 1:
                    python += ["-m", "cProfile", "-o", str(profile)]
                proc = subprocess.Popen([*python, "-m", "services.edge"], cwd=ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=err, text=True)
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            line = proc.stdout.readline() if ready else ""
            if "edge ready" not in line:
                proc.kill()
                raise RuntimeError(f"edge node {k} did not start: {line!r}\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            words = line.split()
            edge = AnycastEdge(k, proc, words[words.index("http") + 1], log, [line])
            edges.append(edge)
            group.joined(k)
        ids = [e.node_id for e in edges]
        for edge in edges:
            others = [i for i in ids if i != edge.node_id]
            eventually_sync(functools.partial(edge.links_up, others), 20,
                            f"node {edge.node_id} sees the others Up",
                            ignore=(OSError, KeyError, ValueError))
    except BaseException:
        stop_edges(edges)
        raise
    return edges


# -- SIP endpoints sending from chosen source addresses ------------------------------------
class Endpoint:
    """A test UA: a home socket 127.0.0.<home>:port (its Via/Contact address, where
    requests reach it) and one socket per node, 127.0.0.<octet>:port, to send from so
    that the datagram lands on that node (`AnycastGroup.steer` maps the octets)."""

    def __init__(self, home: int, octets: Mapping[int, int], port: int) -> None:
        self.port = port
        self.home = f"127.0.0.{home}"
        self.socks: dict[int, socket.socket] = {}
        for node, octet in {0: home, **octets}.items():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.0.{octet}", port))
            self.socks[node] = s

    def send(self, node: int, data: str | bytes, dest: tuple[str, int]) -> None:
        """Send `data` so that it reaches `node` (0: from the home address)."""
        self.socks[node].sendto(data.encode() if isinstance(data, str) else data, dest)

    def recv(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select(list(self.socks.values()), [], [], timeout)
        if not ready:
            return None
        return bytes(ready[0].recv(65535))

    def close(self) -> None:
        for s in self.socks.values():
            with contextlib.suppress(OSError):
                s.close()
