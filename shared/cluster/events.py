"""What :class:`~shared.cluster.state.ClusterState` asks its adapter to do or tells it
(sans-IO; h11's ``_events`` in spirit). The adapter drains them with ``next_event()``
after every call into the state, and acts: dial, close a stream, hand data to the
service's capability callbacks, publish an OpenSIPS event, log.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class CloseCode(enum.Enum):
    """Why a stream is ended (the adapter maps it to the gRPC status of its answer)."""

    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    INVALID_ARGUMENT = "invalid_argument"
    UNAVAILABLE = "unavailable"


# -- transport -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Dial:
    """Open a ``Link`` stream to ``url`` as connection ``conn`` (then pull its frames)."""

    conn: int
    node: int
    url: str


@dataclasses.dataclass(frozen=True)
class CloseConnection:
    conn: int
    code: CloseCode
    reason: str


@dataclasses.dataclass(frozen=True)
class FrameRefused:
    """A handshake or frame was refused (already counted in ``stats``); for the log."""

    conn: int
    node: int  # 0 when not known yet
    kind: str
    reason: str


# -- cluster state ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LinkStateChanged:
    node: int
    state: str  # "Up" / "Probe" / "Down"


@dataclasses.dataclass(frozen=True)
class NodeStateChanged:
    """A node became reachable (``up``) or was declared failed (OpenSIPS
    E_CLUSTERER_NODE_STATE_CHANGED)."""

    node: int
    up: bool


@dataclasses.dataclass(frozen=True)
class ShtagChanged:
    tag: str
    active: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class ShtagView:
    """External sharing-tag backend (Consul): the reachable enabled nodes' claims and
    whether this node may hold tags now."""

    view: Mapping[int, Mapping[str, int]]
    eligible: bool


@dataclasses.dataclass(frozen=True)
class YieldRequested:
    """Another node was forced active on ``tag``: an external backend releases it."""

    tag: str
    to_node: int


# -- capabilities ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class UpdatesReceived:
    """Apply these live updates of ``cap``, ``(src, payload)`` in order, now. Consecutive
    updates of one capability share one event (a frame carries thousands in a burst)."""

    cap: str
    updates: list[tuple[int, bytes]]


@dataclasses.dataclass(frozen=True)
class SyncChunkReceived:
    cap: str
    src: int
    records: list[bytes]


@dataclasses.dataclass(frozen=True)
class SyncDone:
    """The sync of ``cap`` ended: apply the buffered updates in order; it is synced."""

    cap: str
    replay: tuple[tuple[int, bytes], ...]
    records: int


@dataclasses.dataclass(frozen=True)
class SyncRequested:
    """``dst`` asks for the whole data of ``cap``: produce it and send it with
    ``send_sync_chunk`` ... ``send_sync_end`` (a donor)."""

    cap: str
    dst: int
    sync_id: int


@dataclasses.dataclass(frozen=True)
class SyncStarted:
    cap: str
    donor: int
    sync_id: int


@dataclasses.dataclass(frozen=True)
class ReplicationDone:
    """A tracked update (``replicate``) is settled: held by ``acked``; ``missing`` did not
    confirm it before the deadline (nodes declared failed meanwhile are in neither)."""

    ticket: int
    acked: frozenset[int]
    missing: frozenset[int]


@dataclasses.dataclass(frozen=True)
class AntiEntropyDue:
    """Compute the digest of ``cap`` and ``send_digest`` it to ``node``."""

    cap: str
    node: int


@dataclasses.dataclass(frozen=True)
class DigestReceived:
    """``src`` sent its digest of ``cap``: answer with ``send_repair``
    (antientropy.answer_digest)."""

    cap: str
    src: int
    buckets: bytes


@dataclasses.dataclass(frozen=True)
class RepairReceived:
    """Records of ``cap`` from ``src`` to apply (as sync records); when ``want`` (in the
    last one), ``send_repair`` our records of those buckets back."""

    cap: str
    src: int
    records: list[bytes]
    want: tuple[int, ...]
    last: bool


@dataclasses.dataclass(frozen=True)
class MiReceived:
    cmd: str
    params_json: str
    src: int


Event = (Dial | CloseConnection | FrameRefused | LinkStateChanged | NodeStateChanged
         | ShtagChanged | ShtagView | YieldRequested | UpdatesReceived | SyncChunkReceived
         | SyncDone | SyncRequested | SyncStarted | ReplicationDone | AntiEntropyDue
         | DigestReceived | RepairReceived | MiReceived)
