"""The cyclic garbage collector policy of a long-lived service process under load.

Used by every edge worker and by the registrar (whose location table holds several objects
per binding: with tens of thousands of bindings each full collection walks them all).

Why: a proxy under load keeps every call's transactions for tens of seconds (Timers D, J,
K, L, M), tens of thousands of calls at a time.  With CPython's default thresholds
(700, 10, 10) those long-lived objects reach the oldest generation, and a full collection
runs whenever a quarter as many objects again arrived there: every surviving object is
traversed four or five times over, in pauses that grow to a second with a few million
objects.  Measured on the in-process proxy core at 1,500 calls/s this cost more than the
SIP work itself (~250 us of collector time per call, median work ~300 us).

How: the proxy core breaks its own reference cycles when a response context ends (so
finished calls are freed by reference counting, see `ProxyCore._release`), which makes
frequent full collections pointless.  `tune_collector()` then (1) freezes what start-up
allocated (modules, config) so no collection ever scans it again, and (2) raises the
thresholds: a young collection every 10,000 net allocations, a middle one every ten of
those (pauses of a few milliseconds), a full one only after a thousand middle ones.
Cycles the proxy did not break (a routing script's) are still collected, only later.

The registrar: its bindings live for the registration's length (an hour by default), so
under a REGISTER load the table is what reaches the oldest generation; freezing start-up
and the same thresholds keep the young and middle collections small and the full ones
rare (`tests/bench/hotpath.py save --gc default|tuned` measures the collector's share).
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (10_000, 10, 1_000)


def tune_collector(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Freeze start-up objects and set the collector thresholds (call once per process)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
