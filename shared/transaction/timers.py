"""Transaction timers of RFC 3261 §17 as data.

The transaction layer never sleeps or schedules anything itself: each transaction keeps the
deadline of each armed timer (absolute seconds on whatever clock the caller passes as `now`),
and the layer exposes the earliest deadline.  The IO adapter arms one real timer for it and
calls `handle_timer(now)` when it fires (aioquic style).

Durations follow RFC 3261 Table 4 (Appendix A), plus Timer L of RFC 6026 §8.7.  T1, T2 and
T4 are configurable so tests can run a whole INVITE timeout in milliseconds on a fake clock;
Timer C (§16.6 step 11, proxy INVITE branch guard, "greater than 3 minutes") is here too
because the proxy arms it through the same machinery.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Timer(enum.Enum):
    """Timer names of RFC 3261 Table 4 (plus Timer C of §16.6)."""

    A = "A"  # INVITE request retransmit, unreliable only (§17.1.1.2)
    B = "B"  # INVITE transaction timeout (§17.1.1.2)
    C = "C"  # proxy INVITE transaction timeout (§16.6 step 11, §16.8)
    D = "D"  # wait time for response retransmits (§17.1.1.2)
    E = "E"  # non-INVITE request retransmit (§17.1.2.2)
    F = "F"  # non-INVITE transaction timeout (§17.1.2.2)
    G = "G"  # INVITE final response retransmit (§17.2.1)
    H = "H"  # wait time for ACK receipt (§17.2.1)
    I = "I"  # wait time for ACK retransmits (§17.2.1)  # noqa: E741
    J = "J"  # wait time for non-INVITE request retransmits (§17.2.2)
    K = "K"  # wait time for response retransmits (§17.1.2.2)
    L = "L"  # RFC 6026 §8.7: wait time for accepted INVITE request retransmits

    # Members are singletons compared by identity: hash them by identity too (C level),
    # not by Enum's Python-level hash of the name - they key the hot timer and table dicts.
    __hash__ = object.__hash__


# The wait timers: a transaction that has sent or received its final response only waits
# out the retransmissions of the messages it already handled, and when the timer fires it
# sends nothing and reports nothing but Terminated.  RFC 3261 gives their durations as
# lower bounds of how long that state is kept - §17.1.1.2 Timer D "at least 32 seconds",
# §17.1.2.2 Timer K and §17.2.1 Timer I "T4" and §17.2.2 Timer J "64*T1" for the time the
# network may still deliver a retransmission, RFC 6026 §8.7 Timer L likewise - so firing
# one later only holds the state longer (a late retransmission is still absorbed).  The
# retransmission timers (A, E, G) and the timeouts (B, F, H, and the proxy's C), whose
# firing a peer sees, keep their exact deadlines.
WAIT_TIMERS = frozenset({Timer.D, Timer.I, Timer.J, Timer.K, Timer.L})


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1/T2/T4 (RFC 3261 §17.1.1.1, Table 4) and the proxy's Timer C, in seconds."""

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum duration a message remains in the network
    timer_c: float = 180.0  # §16.6 step 11: MUST be greater than 3 minutes on the public net
    # The wait timers (WAIT_TIMERS) end on the next multiple of wait_tick s after their
    # duration (0: exactly after it).  A worker then wakes up once per wait_tick for all
    # the transactions that ended in it, not once per 10 ms tick for the few of each:
    # measured under sipp at 300 calls/s, a wake-up every 10 ms just to forget transactions
    # cost ~3% of the worker's CPU (docs/perf.md, "Ninth round, INVITE: wake-ups per call").
    wait_tick: float = 1.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0 and self.timer_c > 0
                and self.wait_tick >= 0):
            raise ValueError(f"inconsistent transaction timers: {self}")

    def initial(self, timer: Timer, reliable: bool) -> float:
        """Initial duration of `timer`; 0 means 'fire at once' (reliable transports)."""
        t1, t4 = self.t1, self.t4
        if timer is Timer.A or timer is Timer.E or timer is Timer.G:
            return t1
        if timer is Timer.B or timer is Timer.F or timer is Timer.H or timer is Timer.L:
            return 64 * t1
        if timer is Timer.C:
            return self.timer_c
        if timer is Timer.D:
            # §17.1.1.2: at least 32 s for unreliable transports, zero for reliable ones.
            return 0.0 if reliable else max(32.0, 64 * t1)
        if timer is Timer.I or timer is Timer.K:
            return 0.0 if reliable else t4
        if timer is Timer.J:
            return 0.0 if reliable else 64 * t1
        raise ValueError(timer)  # pragma: no cover - the enum is closed

    def wait_deadline(self, deadline: float) -> float:
        """When a wait timer due at `deadline` fires: the next multiple of `wait_tick` at
        or after it (never earlier; see WAIT_TIMERS for why later is allowed)."""
        tick = self.wait_tick
        if tick <= 0:
            return deadline
        end = math.ceil(deadline / tick) * tick
        return end if end >= deadline else end + tick  # the division rounded down

    def backoff(self, timer: Timer, previous: float, *, capped: bool) -> float:
        """Next retransmit interval: doubled (§17.1.1.2 Timer A), or doubled and capped at T2
        (Timer E in Trying, Timer G, §17.1.2.2 / §17.2.1)."""
        doubled = previous * 2
        return min(doubled, self.t2) if capped else doubled
