"""The edge worker's collector policy: shared/service/gc_policy.py (the registrar's too),
with every automatic collection taking the middle generation along.

Under load an edge worker's surviving objects are its transactions' (Timers J, K, L, M: 5
to 32 s), so nearly every object that outlives a young collection also outlives the next
middle one.  With the shared thresholds (10,000, 10, 1,000) each of them is traversed
twice before it reaches the oldest generation: by a young collection, then by a middle one.
CPython (3.11, 3.12) collects the middle generation when its count, the young collections
since its last, exceeds its threshold: at -1 that is every time, so every automatic
collection is a middle one that takes the young generation with it and each survivor is
traversed once; a collection walks ~10,000 objects, as a young one did (a middle one
walked up to ten young batches).  The oldest threshold counts middle collections: 10,000
keeps a full collection as rare as before (10 x 1,000 young ones).
`tests/unit/edge/test_edge_gc_policy.py` checks that CPython still does this.
"""

from typing import Final

from shared.service.gc_policy import tune_collector

THRESHOLDS: Final = (10_000, -1, 10_000)

__all__ = ["THRESHOLDS", "tune_collector"]
