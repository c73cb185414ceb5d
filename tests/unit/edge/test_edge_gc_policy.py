"""The edge worker's collector thresholds (services/edge/gc_policy.py): every automatic
collection is a middle one (generation 1, the young generation with it), so an object
that survives is traversed once before the oldest generation."""

from __future__ import annotations

import gc
from typing import Any

from services.edge.gc_policy import THRESHOLDS


def test_every_automatic_collection_takes_the_middle_generation() -> None:
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    before = gc.get_threshold()
    gc.set_threshold(1_000, THRESHOLDS[1], THRESHOLDS[2])
    gc.callbacks.append(note)
    try:
        kept = [[n] for n in range(20_000)]  # survivors: ~20 automatic collections
    finally:
        gc.callbacks.remove(note)
        gc.set_threshold(*before)
    assert len(kept) == 20_000
    assert len(seen) >= 10
    assert 0 not in seen  # never a young collection alone (2: a full one, when due)
