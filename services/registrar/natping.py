"""NAT pinging of bindings with SIP OPTIONS, latency and dead-contact removal, sans-IO
(OpenSIPS nathelper: natping_interval, ping_nated_only, sipping, max_pings_lost,
sipping_latency_flag, usrloc latency_event_min_us[_delta]).

`NatPinger.due(bindings, now, mine)` runs once per `interval`: it first counts every ping
still unanswered after `timeout` as lost, then builds one OPTIONS per binding to ping --
natted ones only (a `received` address) unless `nated_only` is off, and only those
`mine(aor)` says this node owns.  In a cluster each AOR is owned by exactly one node, by
way of a fixed number of hash partitions (`PARTITIONS`): the AOR is in partition
`crc32(aor) % PARTITIONS`, and partition `p` belongs to the node of index `p % count`
over the synced nodes (`ClusterNode.my_index`, as OpenSIPS 2.4 shared_pinging; for a
count dividing 64 that is `crc32(aor) % count` as before).  Every partition has exactly one
owner, so every binding is pinged by exactly one node; with more nodes than partitions
the extra nodes own none.  `full-sharing-cachedb` keeps the bindings to ping per partition
in Redis (cachedb.py), so a node reads only its partitions (`owned_partitions`), never
the whole table.

The OPTIONS goes to the edge the binding registered through (its `socket`) with a Route
set `<edge;lr>, <received;lr>`, so the edge sends it from the address the NAT pinhole was
opened towards, to the public address of the phone; the reply comes back along the Vias.
A binding with a Path (RFC 3327) is pinged along it instead: `<edge;lr>` then the Path
values, as a call to it would go (the outbound proxy keeps the phone's flow).

A binding registered over TCP gets a CRLF keep-alive instead (RFC 5626 §3.5.1; the issue's
"CRLF keep-alives for TCP"): the same OPTIONS goes to the edge with
`X-SipMesh-Keepalive: HOST:PORT` (the binding's received, else Contact, address); the edge
sends a double CRLF on its connection to that address and answers 200 on the single-CRLF
pong, 408 without one, so latency and loss are measured the same way.

`reply(call_id, status, now)` turns an answer into a latency in microseconds (stored on
the binding) and tells whether `E_UL_LATENCY_UPDATE` is due: with neither threshold set,
on every reply; else when the latency exceeds `min_us` or moved by more than
`min_delta_us` since the previous ping (either one).  Answers the edge itself makes for a
dead phone (408, 503) are not life signs.  A binding that misses `max_lost` pings in a row
is reported by `dead()` for removal.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.registrar.location import Binding

NOT_ALIVE = frozenset({408, 503})


@dataclass(frozen=True)
class PingConfig:
    interval: float = 0.0  # natping_interval; 0 = off
    timeout: float = 3.0  # ping_threshold
    max_lost: int = 3  # max_pings_lost
    nated_only: bool = True
    min_us: int = 0  # latency_event_min_us
    min_delta_us: int = 0  # latency_event_min_us_delta
    from_uri: str = "sip:pinger@sipmesh.invalid"


@dataclass(frozen=True, slots=True)
class Ping:
    call_id: str
    aor: str
    key: str
    edge_host: str
    edge_port: int
    data: bytes


@dataclass(slots=True)
class _Outstanding:
    aor: str
    key: str
    sent: float


@dataclass(slots=True)
class Answer:
    aor: str
    key: str
    latency_us: int
    raise_event: bool


PARTITIONS = 64  # every node must agree: the Redis ping index is laid out by it


def partition_of(aor: str, partitions: int = PARTITIONS) -> int:
    """The hash partition of `aor` (stable on every node: crc32, not hash())."""
    return zlib.crc32(aor.encode()) % max(partitions, 1)


def owner_index(aor: str, count: int, partitions: int = PARTITIONS) -> int:
    """Which of `count` nodes pings `aor`: the owner of its partition."""
    return partition_of(aor, partitions) % max(count, 1)


def owned_partitions(index: int, count: int, partitions: int = PARTITIONS) -> list[int]:
    """The partitions node `index` of `count` pings (none while it is not synced)."""
    if index < 0 or count <= 0:
        return []
    return list(range(index, partitions, count))


def edge_of(socket: str) -> tuple[str, int] | None:
    """`udp:127.0.0.1:5060` -> ("127.0.0.1", 5060)."""
    _, _, rest = socket.partition(":")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def crlf_target(b: Binding) -> str | None:
    """HOST:PORT of the TCP connection a keep-alive goes on: `received`, else the Contact."""
    from shared.sip import SipParseError
    from shared.sip.uri import parse_uri

    try:
        uri = parse_uri(b.received or b.uri)
    except SipParseError:
        return None
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    return f"{host}:{uri.port or 5060}"


@dataclass
class NatPinger:
    config: PingConfig
    via_host: str = "127.0.0.1"
    via_port: int = 0
    outstanding: dict[str, _Outstanding] = field(default_factory=dict)
    lost: dict[tuple[str, str], int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=lambda: {"sent": 0, "answered": 0,
                                                           "lost": 0})

    def __post_init__(self) -> None:
        self._seq = itertools.count(1)
        self._tag = os.urandom(4).hex()

    def wanted(self, b: Binding) -> bool:
        return bool(b.received) or not self.config.nated_only

    def due(self, bindings: Iterable[Binding], now: float,
            mine: Callable[[str], bool]) -> list[Ping]:
        self._expire(now)
        pings = []
        for b in bindings:
            if not self.wanted(b) or not b.alive(now) or not mine(b.aor):
                continue
            ping = self._ping(b)
            if ping is None:
                continue
            self.outstanding[ping.call_id] = _Outstanding(b.aor, b.key, now)
            pings.append(ping)
        self.stats["sent"] += len(pings)
        return pings

    def _expire(self, now: float) -> None:
        for call_id, out in list(self.outstanding.items()):
            if now - out.sent >= self.config.timeout:
                del self.outstanding[call_id]
                key = (out.aor, out.key)
                self.lost[key] = self.lost.get(key, 0) + 1
                self.stats["lost"] += 1

    def dead(self) -> list[tuple[str, str]]:
        """Bindings that missed `max_lost` pings in a row (and forgets them)."""
        gone = [k for k, n in self.lost.items() if n >= self.config.max_lost]
        for k in gone:
            del self.lost[k]
        return gone

    def _ping(self, b: Binding) -> Ping | None:
        edge = edge_of(b.socket)
        if edge is None:
            return None
        n = next(self._seq)
        call_id = f"np-{self._tag}-{n}"
        host = f"[{edge[0]}]" if ":" in edge[0] else edge[0]
        routes = [f"<sip:{host}:{edge[1]};lr>"]
        if b.path:
            # RFC 3327: the phone is reached through its Path (an outbound proxy keeps
            # its flow); `received` is that proxy's address, not the phone's.
            routes.extend(b.path)
        elif b.received:
            routes.append(f"<{b.received};lr>")
        keepalive = ""
        if b.socket.startswith("tcp:") and not b.path:
            target = crlf_target(b)
            if target is None:
                return None
            keepalive = f"X-SipMesh-Keepalive: {target}\r\n"
        text = (
            f"OPTIONS {b.uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.via_host}:{self.via_port};branch=z9hG4bK-np{self._tag}{n}"
            ";rport\r\n"
            f"Route: {', '.join(routes)}\r\n"
            f"From: <{self.config.from_uri}>;tag={self._tag}\r\n"
            f"To: <{b.uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            f"{keepalive}Max-Forwards: 10\r\nContent-Length: 0\r\n\r\n")
        return Ping(call_id, b.aor, b.key, edge[0], edge[1], text.encode())

    def reply(self, call_id: str, status: int, now: float, previous_us: int) -> Answer | None:
        """A final answer to one of our pings; None when it is unknown, late or not a
        life sign."""
        if status < 200:
            return None
        out = self.outstanding.pop(call_id, None)
        if out is None or status in NOT_ALIVE:
            return None
        self.lost.pop((out.aor, out.key), None)
        self.stats["answered"] += 1
        latency = max(int((now - out.sent) * 1_000_000), 1)
        return Answer(out.aor, out.key, latency, self.latency_event(previous_us, latency))

    def latency_event(self, previous_us: int, latency_us: int) -> bool:
        lo, delta = self.config.min_us, self.config.min_delta_us
        if not lo and not delta:
            return True
        return bool((lo and latency_us > lo) or (delta and abs(latency_us - previous_us) > delta))
