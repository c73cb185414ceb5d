"""Counters of the edge: OpenSIPS `core:` names (with `rcv_requests_<method>` per method)
plus per-method / per-code detail.

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
    "drop_replies", "err_requests", "err_replies", "bad_URIs_rcvd", "bad_msg_hdr",
)
# OpenSIPS's per-method core counters (`core:rcv_requests_invite`, ...): a fixed set, so
# garbage method names cannot grow the statistics without bound.
METHODS = (
    "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE", "PRACK",
    "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER",
)


class Value(Protocol):
    value: int


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class EdgeCounters:
    __slots__ = (
        "bad_URIs_rcvd", "bad_msg_hdr", "by_method", "drop_replies", "drop_requests",
        "err_replies", "err_requests", "fwd_replies", "fwd_requests", "keepalives",
        "rcv_replies", "rcv_requests", "replies_in", "replies_out", "requests_in",
        "retransmissions",
    )

    rcv_requests: Value
    rcv_replies: Value
    fwd_requests: Value
    fwd_replies: Value
    drop_requests: Value
    drop_replies: Value
    err_requests: Value
    err_replies: Value
    bad_URIs_rcvd: Value
    bad_msg_hdr: Value
    retransmissions: Value
    keepalives: Value

    def __init__(self, make: Callable[[str, str], Value] | None = None) -> None:
        """`make(group, name)` supplies counter objects (default: private ones)."""
        factory = make or (lambda _g, _n: _Value())
        for name in CORE_NAMES:
            setattr(self, name, factory("core", name))
        self.retransmissions = factory("tm", "retransmissions")
        # UDP keep-alives (a CRLF, an empty datagram: services/edge/keepalive.py).
        self.keepalives = factory("core", "rcv_keepalives")
        self.by_method: dict[str, Value] = {
            m: factory("core", f"rcv_requests_{m.lower()}") for m in METHODS}
        self.requests_in: Counter[str] = Counter()
        self.replies_in: Counter[int] = Counter()
        self.replies_out: Counter[int] = Counter()

    def request_in(self, method: str) -> None:
        self.requests_in[method] += 1
        counter = self.by_method.get(method)
        if counter is not None:
            counter.value += 1

    def reply_in(self, status: int) -> None:
        self.replies_in[status] += 1

    def reply_out(self, status: int) -> None:
        self.replies_out[status] += 1

    def core(self) -> dict[str, int]:
        """The OpenSIPS `core:` group as name -> value."""
        return {name: getattr(self, name).value for name in CORE_NAMES}
