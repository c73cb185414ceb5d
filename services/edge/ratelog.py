"""Rate-limited warnings: a flood of bad input must not become a flood of log lines.

Every warning the edge logs about its input (malformed messages, refused connections,
failed accepts, socket errors) goes through `RateLimitedLog`: a token bucket per event
name lets `burst` lines through at once and `rate` per second after that; the lines held
back are counted and reported by the next line of that event that passes
(`suppressed=N`).  Under a fuzzer or a connection flood the log grows by a few lines per
second per event, whatever the attacker sends.  The clock is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Log = Callable[..., None]


class RateLimitedLog:
    __slots__ = ("_buckets", "burst", "clock", "log", "rate")

    def __init__(self, log: Log, clock: Callable[[], float], *, rate: float = 5.0,
                 burst: int = 20) -> None:
        self.log = log
        self.clock = clock
        self.rate = rate
        self.burst = burst
        # event -> [tokens, last refill time, suppressed count]
        self._buckets: dict[str, list[float]] = {}

    def __call__(self, event: str, **kw: Any) -> bool:
        """Log `event` unless its bucket is empty; True when the line was written."""
        now = self.clock()
        bucket = self._buckets.get(event)
        if bucket is None:
            if len(self._buckets) > 1024:
                self._buckets.clear()  # bounded: event names are ours, but be safe
            bucket = self._buckets[event] = [float(self.burst), now, 0.0]
        tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            bucket[2] += 1
            return False
        bucket[0] = tokens - 1.0
        if bucket[2]:
            kw["suppressed"] = int(bucket[2])
            bucket[2] = 0
        self.log(event, **kw)
        return True
