"""Counters of the edge: OpenSIPS `core:` names plus per-method / per-code detail.

Each named counter is an object with an integer `value` (the shared runtime's
`shared.service.Counter` when the edge runs in it, so MI `get_statistics core:` reads the
very same numbers); the hot path pays one attribute increment per message.  Per-method and
per-status detail live in `collections.Counter`s that the Prometheus collector reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

CORE_NAMES = (
    "rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies", "drop_requests",
    "drop_replies", "err_requests", "bad_URIs_rcvd", "bad_msg_hdr",
)


class Value(Protocol):
    value: int


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class EdgeCounters:
    __slots__ = (
        "bad_URIs_rcvd", "bad_msg_hdr", "drop_replies", "drop_requests", "err_requests",
        "fwd_replies", "fwd_requests", "rcv_replies", "rcv_requests", "replies_in",
        "replies_out", "requests_in", "retransmissions",
    )

    rcv_requests: Value
    rcv_replies: Value
    fwd_requests: Value
    fwd_replies: Value
    drop_requests: Value
    drop_replies: Value
    err_requests: Value
    bad_URIs_rcvd: Value
    bad_msg_hdr: Value
    retransmissions: Value

    def __init__(self, make: Callable[[str, str], Value] | None = None) -> None:
        """`make(group, name)` supplies counter objects (default: private ones)."""
        factory = make or (lambda _g, _n: _Value())
        for name in CORE_NAMES:
            setattr(self, name, factory("core", name))
        self.retransmissions = factory("tm", "retransmissions")
        self.requests_in: Counter[str] = Counter()
        self.replies_in: Counter[int] = Counter()
        self.replies_out: Counter[int] = Counter()

    def request_in(self, method: str) -> None:
        self.requests_in[method] += 1

    def reply_in(self, status: int) -> None:
        self.replies_in[status] += 1

    def reply_out(self, status: int) -> None:
        self.replies_out[status] += 1

    def core(self) -> dict[str, int]:
        """The OpenSIPS `core:` group as name -> value."""
        return {name: getattr(self, name).value for name in CORE_NAMES}
