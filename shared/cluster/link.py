"""Link state machine of one neighbour (OpenSIPS 2.4 clusterer, research §1), sans-IO.

A link is what *this* node knows about its direct path to one neighbour. The node pings
every ``ping_interval``; a pong must come back within ``ping_timeout``; after
``ping_retries`` unanswered retries the link is Down and pinging pauses for
``node_timeout``. Any packet received from a node whose link is Down triggers an immediate
re-probe. The MI shows the three states OpenSIPS shows: ``Up``, ``Probe`` and ``Down``
(OpenSIPS' LS_RETRYING/LS_RESTARTED/LS_TEMP... are all ``Probe``).

The machine never reads a clock: every input carries ``now`` and :meth:`Link.poll` says
whether a ping is due. Transitions are the rows of :data:`TRANSITIONS`, each with the
OpenSIPS behaviour it mirrors; the methods only apply rows.
"""

from __future__ import annotations

import dataclasses
import enum


class LinkState(enum.Enum):
    UP = "Up"
    PROBE = "Probe"
    DOWN = "Down"


class LinkEvent(enum.Enum):
    PONG = "pong"                    # a pong for our last ping
    PING_TIMEOUT = "ping_timeout"    # ping_timeout elapsed without a pong, retries left
    RETRIES_EXHAUSTED = "exhausted"  # ping_timeout elapsed on the last retry
    NODE_TIMEOUT = "node_timeout"    # node_timeout elapsed while Down: restart pinging
    PACKET_WHILE_DOWN = "packet"     # anything received from the node while Down
    SEND_FAILED = "send_failed"      # the transport could not carry the ping
    RESET = "reset"                  # admin disable / enable: start over


S, E = LinkState, LinkEvent
# (state, event) -> (next state, why). Rows not listed leave the state unchanged.
TRANSITIONS: dict[tuple[LinkState, LinkEvent], tuple[LinkState, str]] = {
    (S.PROBE, E.PONG): (S.UP, "reply within ping_timeout: LS_UP"),
    (S.DOWN, E.PONG): (S.UP, "late reply after a restart of pinging: LS_UP"),
    (S.UP, E.PING_TIMEOUT): (S.PROBE, "no pong within ping_timeout: LS_RETRYING"),
    (S.UP, E.SEND_FAILED): (S.PROBE, "send failure: LS_RETRY_SEND_FAIL"),
    (S.UP, E.RETRIES_EXHAUSTED): (S.DOWN, "no_ping_retries = 0: LS_DOWN"),
    (S.PROBE, E.RETRIES_EXHAUSTED): (S.DOWN, "no_ping_retries exhausted: LS_DOWN"),
    (S.DOWN, E.NODE_TIMEOUT): (S.PROBE, "node_timeout elapsed: LS_RESTART_PINGING"),
    (S.DOWN, E.PACKET_WHILE_DOWN): (S.PROBE, "packet from a Down node: immediate re-probe"),
    (S.UP, E.RESET): (S.PROBE, "link restarted"),
    (S.DOWN, E.RESET): (S.PROBE, "link restarted"),
}


@dataclasses.dataclass(frozen=True)
class LinkTimers:
    ping_interval: float = 4.0
    ping_timeout: float = 1.0
    ping_retries: int = 3
    node_timeout: float = 60.0


@dataclasses.dataclass
class Link:
    """One neighbour's link; starts in Probe with a ping due at once."""

    timers: LinkTimers
    state: LinkState = LinkState.PROBE
    retries: int = 0
    seq: int = 0
    outstanding: int | None = None  # seq of the ping awaiting its pong
    sent_at: float = 0.0
    next_ping_at: float = 0.0
    changed_at: float = 0.0
    rtt: float | None = None
    was_up: bool = False  # Up since the last Down: a Probe then still counts as alive

    def _apply(self, event: LinkEvent, now: float) -> bool:
        row = TRANSITIONS.get((self.state, event))
        if row is None:
            return False
        if row[0] is not self.state:
            self.state = row[0]
            self.changed_at = now
            if self.state is LinkState.UP:
                self.was_up = True
            elif self.state is LinkState.DOWN or event is LinkEvent.RESET:
                self.was_up = False
            return True
        return False

    def poll(self, now: float) -> tuple[int | None, bool]:
        """Applies timeouts at ``now``; returns (seq of a ping to send now or None,
        whether the state changed)."""
        changed = False
        t = self.timers
        if self.outstanding is not None and now - self.sent_at >= t.ping_timeout:
            self.outstanding = None
            self.retries += 1
            if self.retries > t.ping_retries:
                changed = self._apply(LinkEvent.RETRIES_EXHAUSTED, now)
                self.retries = 0
                self.next_ping_at = now + t.node_timeout
            else:
                changed = self._apply(LinkEvent.PING_TIMEOUT, now)
                self.next_ping_at = now  # retry at once
        if self.state is LinkState.DOWN:
            if now < self.next_ping_at:
                return None, changed
            changed = self._apply(LinkEvent.NODE_TIMEOUT, now) or changed
        if self.outstanding is None and now >= self.next_ping_at:
            self.seq += 1
            self.outstanding = self.seq
            self.sent_at = now
            return self.seq, changed
        return None, changed

    def on_pong(self, seq: int, now: float) -> bool:
        """A pong arrived; stale sequence numbers are ignored."""
        if self.outstanding != seq:
            return False
        self.rtt = now - self.sent_at
        self.outstanding = None
        self.retries = 0
        self.next_ping_at = self.sent_at + self.timers.ping_interval
        return self._apply(LinkEvent.PONG, now)

    def on_packet(self, now: float) -> bool:
        """Any packet from the node: when Down, re-probe immediately."""
        if self.state is LinkState.DOWN:
            self.outstanding = None
            self.retries = 0
            self.next_ping_at = now
            return self._apply(LinkEvent.PACKET_WHILE_DOWN, now)
        return False

    def on_send_failed(self, now: float) -> bool:
        """The transport is gone (stream broke, connection refused): same as a lost ping,
        without waiting for ping_timeout."""
        if self.outstanding is not None:
            self.sent_at = now - self.timers.ping_timeout
        return self._apply(LinkEvent.SEND_FAILED, now)

    def probe_now(self, now: float) -> None:
        """A new transport to the node is open: ping at once rather than at the next
        interval, so a link that broke and reconnected is Up again one round trip later
        (a Down link keeps its node_timeout pause: it is not probed faster)."""
        if self.state is not LinkState.DOWN and self.outstanding is None:
            self.next_ping_at = min(self.next_ping_at, now)

    def reset(self, now: float) -> bool:
        self.outstanding = None
        self.retries = 0
        self.next_ping_at = now
        return self._apply(LinkEvent.RESET, now)

    def next_deadline(self) -> float:
        """When :meth:`poll` next has something to do."""
        if self.outstanding is not None:
            return self.sent_at + self.timers.ping_timeout
        return self.next_ping_at
